"""Curves on a common step grid: each run's metrics.csv column interpolated onto shared environment steps."""

import numpy as np

from reporting.runs import Run

GRID_POINTS = 200  # points of the common step grid the curves are interpolated onto


def step_grid(runs: list[Run], points: int = GRID_POINTS) -> np.ndarray:
    steps = [run.steps for run in runs if len(run.steps)]
    if not steps:
        return np.zeros(0)
    return np.linspace(min(s[0] for s in steps), max(s[-1] for s in steps), points)


def curve(run: Run, column: str) -> np.ndarray:
    """A metrics.csv column; success curves count points before the first episode as 0, as summary.json does."""
    values = run.metrics.get(column)
    if values is None:
        return np.full(len(run.steps), np.nan)
    return np.nan_to_num(values, nan=0.0) if column.startswith("success_rate") else values


def aligned(runs: list[Run], column: str, grid: np.ndarray) -> np.ndarray:
    """(runs, grid) matrix: each run's column linearly interpolated onto the grid between its first and last logged
    step (NaN outside: never extrapolated), skipping the column's missing values."""
    out = np.full((len(runs), len(grid)), np.nan)
    for i, run in enumerate(runs):
        steps, values = run.steps, curve(run, column)
        ok = ~np.isnan(values)
        if ok.sum() == 0:
            continue
        inside = (grid >= steps[ok][0]) & (grid <= steps[ok][-1])
        out[i, inside] = np.interp(grid[inside], steps[ok], values[ok])
    return out
