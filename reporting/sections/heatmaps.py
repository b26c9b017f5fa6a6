"""The pruned-token heat maps section: for each masking arm, which bins were masked over training."""

from pathlib import Path

from reporting import figures, store
from reporting.markdown import figure_link


def heatmaps_section(arms: dict, out_dir: Path) -> list[str]:
    """A heat map per arm whose runs recorded mask counts; none: no section."""
    masked = [
        arm
        for arm in arms.values()
        if any(r.mask_counts is not None and len(r.mask_counts.steps) for r in arm.complete + arm.incomplete)
    ]
    if not masked:
        return []
    lines = [
        "## Pruned-token heat maps\n",
        f"For each masking arm, per seed (rows; the first {figures.HEATMAP_RUNS}, complete seeds first) and action "
        "dimension (columns): the fraction of each iteration's rollout steps on which each bin was masked "
        "(`mask_counts.csv`).\n",
    ]
    every = max(
        run.mask_counts.every for arm in masked for run in arm.complete + arm.incomplete if run.mask_counts is not None
    )
    if every > 1:
        lines[-1] = lines[-1][:-1] + (
            f" Runs in the compact form of committed results (`{store.SERIES_FILE}`, pack_runs.py) keep the counts of "
            f"every {every}th iteration and the last: their maps show those iterations, one per time column, where "
            f"the full counts would average a few consecutive iterations per column.\n"
        )
    for arm in masked:
        lines.append(f"### {arm.env_id} / {arm.exp_name}\n")
        lines.append(figure_link(figures.figure_heatmap(arm, out_dir), f"{arm.exp_name} masked tokens"))
    return lines
