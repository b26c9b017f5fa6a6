"""How numbers, intervals, tables and figure links are written in report.md."""

import math


def fmt(value, digits=3) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def fmt_pm(mean, std, digits=3) -> str:
    return "" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def fmt_steps(value) -> str:
    return "" if value is None or math.isnan(value) else f"{value / 1000:.0f}k"


def fmt_interval(point, low, high, metric: str = "") -> str:
    if metric == "steps_to_half":
        return f"{point / 1e3:.0f}k [{low / 1e3:.0f}k, {high / 1e3:.0f}k]"
    return f"{point:.3f} [{low:.3f}, {high:.3f}]"


def md_table(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def figure_link(path: str, alt: str) -> str:
    return f"![{alt}]({path})\n"
