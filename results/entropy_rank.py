"""Per arm of a results folder: the unmasked policy entropy (metrics.csv policy_entropy, comparable across arms) and
the utility critic's rank agreement with the policy (rank_agreement, Spearman), at 150k and 300k steps and at the
end (mean of the last 10 iterations), over complete seeds: mean with a 95% percentile bootstrap interval across
seeds (scipy, 2000 resamples, seed 0), and the range.

    python results/entropy_rank.py results/handle-pull-v3_study_2026-11-25
"""
import csv
import gzip
import sys
from pathlib import Path

import numpy as np
import scipy.stats


def interval(values):
    values = np.asarray(values, dtype=float)
    if len(values) < 2 or np.ptp(values) == 0:
        return f"{values.mean():.3f} (n = {len(values)})"
    ci = scipy.stats.bootstrap((values,), np.mean, n_resamples=2000, method="percentile", random_state=0).confidence_interval
    return f"{values.mean():.3f} [{ci.low:.3f}, {ci.high:.3f}] (range {values.min():.3f} to {values.max():.3f}, n = {len(values)})"


def column(rows, name, step=None):
    """The value at the first logged iteration at or after step, or the mean over the last 10 iterations."""
    rows = [r for r in rows if r.get(name, "") != ""]
    if step is None:
        return float(np.mean([float(r[name]) for r in rows[-10:]]))
    return float(next(r for r in rows if int(r["global_step"]) >= step)[name])


def main(folder: Path):
    cells = {}
    for run in sorted(folder.glob("*__*__*")):
        if (run / "summary.json").exists():
            cells.setdefault(run.name.rsplit("__", 1)[0], []).append(
                list(csv.DictReader(gzip.open(run / "metrics.csv.gz", "rt"))))
    print("| cell | n | signal | at 150k | at 300k | end (last 10 iterations) |\n|---|---|---|---|---|---|")
    for cell, runs in cells.items():
        for name in ("policy_entropy", "rank_agreement"):
            if name in runs[0][0]:
                print(f"| {cell} | {len(runs)} | {name} | "
                      + " | ".join(interval([column(r, name, step) for r in runs]) for step in (150_000, 300_000, None))
                      + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
