"""Per cell of a results folder: the unmasked policy entropy (metrics.csv policy_entropy, comparable across arms) and
the utility critic's rank agreement with the policy (rank_agreement, Spearman), at 150k and 300k steps and at the
end (mean of the last 10 iterations), over complete seeds: mean with a 95% percentile bootstrap interval across
seeds (scipy, 2000 resamples, seed 0), and the range. Runs are read, and cells formed, as report.py does.

    python results/entropy_rank.py results/handle-pull-v3_study_2026-11-25
"""
import sys
from pathlib import Path

import numpy as np
import scipy.stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import report  # noqa: E402


def interval(values):
    values = np.asarray(values, dtype=float)
    if len(values) < 2 or np.ptp(values) == 0:
        return f"{values.mean():.3f} (n = {len(values)})"
    ci = scipy.stats.bootstrap((values,), np.mean, n_resamples=2000, method="percentile", random_state=0).confidence_interval
    return f"{values.mean():.3f} [{ci.low:.3f}, {ci.high:.3f}] (range {values.min():.3f} to {values.max():.3f}, n = {len(values)})"


def column(run, name, step=None):
    """The value at the first logged iteration at or after step, or the mean over the last 10 iterations."""
    logged = ~np.isnan(run.metrics[name])
    values, steps = run.metrics[name][logged], run.steps[logged]
    return float(values[-10:].mean()) if step is None else float(values[np.argmax(steps >= step)])


def main(folder: Path):
    arms, _ = report.group_runs(report.find_runs(folder), report.SUCCESS_DEFINITIONS["any"])
    print("| cell | n | signal | at 150k | at 300k | end (last 10 iterations) |\n|---|---|---|---|---|---|")
    for (env_id, exp_name), arm in sorted(arms.items()):
        for name in ("policy_entropy", "rank_agreement"):
            if arm.complete and name in arm.complete[0].metrics:
                print(f"| {env_id}__{exp_name} | {arm.n} | {name} | "
                      + " | ".join(interval([column(r, name, step) for r in arm.complete])
                                   for step in (150_000, 300_000, None)) + " |")


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        print("usage: python results/entropy_rank.py RUNS_FOLDER (a folder of run folders, e.g. a study in results/)",
              file=sys.stderr)
        sys.exit(2)
    try:
        main(Path(sys.argv[1]))
    except report.ReportError as e:
        print(f"entropy_rank.py: error: {e}", file=sys.stderr)
        sys.exit(2)
