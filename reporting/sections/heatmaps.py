"""The pruned-token heat maps section: for each masking arm, which bins were masked over training."""

from pathlib import Path

from reporting import figures
from reporting.markdown import figure_link


def heatmaps_section(arms: dict, out_dir: Path) -> list[str]:
    """A heat map per arm whose runs recorded mask counts; none: no section."""
    masked = [arm for arm in arms.values()
              if any(r.mask_counts is not None and len(r.mask_counts.steps) for r in arm.complete + arm.incomplete)]
    if not masked:
        return []
    lines = ["## Pruned-token heat maps\n",
             f"For each masking arm, per seed (rows; the first {figures.HEATMAP_RUNS}, complete seeds first) and action "
             "dimension (columns): the fraction of each iteration's rollout steps on which each bin was masked "
             "(`mask_counts.csv`).\n"]
    for arm in masked:
        lines.append(f"### {arm.env_id} / {arm.exp_name}\n")
        lines.append(figure_link(figures.figure_heatmap(arm, out_dir), f"{arm.exp_name} masked tokens"))
    return lines
