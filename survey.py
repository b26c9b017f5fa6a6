"""The task survey: how hard each MetaWorld task is for one arm (vanilla by default), and so where masking has room
to act (paper section 6, "A narrow operating regime": an arm can only separate from another where there is headroom).

    python survey.py --runs-dir runs --out-dir reports/survey              # every ppo_vanilla run under runs/
    python survey.py --runs-dir results/survey_2026-11-25 --exp-name ppo_vanilla --out-dir results/survey_2026-11-25

reads the run folders of one exp_name (complete or not: a survey may stop runs part-way through their 1M-step
schedule) and writes survey.md and survey.csv: per task and seed, the training success curve (metrics.csv, the last
20 episodes) at 250k, 500k and 1M steps where the run got there, the first step at which it reached 0.5, under both
success definitions (any step, MetaWorld's protocol; and the episode's last step), the run's length and its
whole-run environment steps per second; and a class per task:

- easy: reaches 0.5 before HEADROOM[0] steps (the arms saturate early; the paper's reach and drawer-close)
- headroom: first reaches 0.5 between HEADROOM[0] and HEADROOM[1] steps, the regime in which the paper's
  button-press separated its arms (vanilla first reached 0.5 at 321k there)
- late: reaches 0.5 only after HEADROOM[1] steps
- not reached: never reached 0.5 in the steps it ran (hard, or stopped too early to tell: see its length)

A task's class is taken from its seeds' median first step to 0.5 (a seed that never reached it counts as its
length, so a task is "not reached" when most of its seeds are).
"""

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

import report

HEADROOM = (250_000, 700_000)  # first step to 0.5 success: the window the paper's button-press sat in
MILESTONES = (250_000, 500_000, 1_000_000)
BATCH = 2048  # steps per iteration in every arm's default; a milestone is "reached" within one iteration of it
DEFINITIONS = {"any": "success_rate", "last": "success_rate_last_step"}


def curve_at(run: report.Run, column: str, step: int) -> float | None:
    """The success curve at the last iteration that ended at or before `step`; None if the run stopped more than
    one iteration short of it (1M counts as reached by the 1M schedule's last iteration, 999,424)."""
    steps, values = run.steps, run.metrics.get(column)
    if values is None or not len(steps) or steps[-1] < step - BATCH:
        return None
    value = values[steps <= step][-1]
    return None if np.isnan(value) else float(value)


def first_reach(run: report.Run, column: str, level: float = 0.5) -> int | None:
    """The first step at which the success curve reached `level` (None if it never did in the steps it ran)."""
    values = run.metrics.get(column)
    if values is None:
        return None
    reached = np.flatnonzero(np.nan_to_num(values, nan=0.0) >= level)
    return int(run.steps[reached[0]]) if len(reached) else None


def steps_per_second(run: report.Run) -> float:
    """Whole-run environment steps per second: steps over the sum of the iterations' times (metrics.csv sps)."""
    sps = run.metrics["sps"]
    return float(run.steps[-1] / np.sum(BATCH / sps)) if len(sps) else float("nan")


def classify(first_steps: list, lengths: list) -> str:
    """easy / headroom / late / not reached, from the seeds' first steps to 0.5 (None: never, counted as the run's
    length) by their median."""
    if sum(s is None for s in first_steps) > len(first_steps) / 2:
        return "not reached"
    median = float(np.median([s if s is not None else n for s, n in zip(first_steps, lengths)]))
    if median < HEADROOM[0]:
        return "easy"
    return "headroom" if median <= HEADROOM[1] else "late"


def survey_rows(runs: list) -> list[dict]:
    """One row per run, tasks in name order, seeds in order."""
    rows = []
    for run in sorted(runs, key=lambda r: (r.env_id, r.seed)):
        row = {"task": run.env_id, "seed": run.seed, "steps": int(run.steps[-1]) if len(run.steps) else 0}
        for name, column in DEFINITIONS.items():
            for milestone in MILESTONES:
                row[f"{name}_at_{milestone // 1000}k"] = curve_at(run, column, milestone)
            row[f"{name}_first_0.5"] = first_reach(run, column)
        row["sps"] = steps_per_second(run)
        rows.append(row)
    return rows


def task_classes(rows: list[dict], definition: str = "any") -> dict:
    tasks = {}
    for row in rows:
        tasks.setdefault(row["task"], []).append(row)
    return {
        task: classify([r[f"{definition}_first_0.5"] for r in seeds], [r["steps"] for r in seeds])
        for task, seeds in tasks.items()
    }


def fmt(value, digits=2) -> str:
    if value is None:
        return ""
    return f"{value / 1000:.0f}k" if isinstance(value, int) else f"{value:.{digits}f}"


def write_survey(rows: list[dict], exp_name: str, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "survey.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    classes = {name: task_classes(rows, name) for name in DEFINITIONS}
    order = {"easy": 0, "headroom": 1, "late": 2, "not reached": 3}
    rows = sorted(
        rows, key=lambda r: (order[classes["any"][r["task"]]], r["any_first_0.5"] or 10**9, r["task"], r["seed"])
    )
    header = [
        "task",
        "seed",
        "class (any / last)",
        "steps run",
        "any@250k",
        "any@500k",
        "any@1M",
        "any: 0.5 at",
        "last@250k",
        "last@500k",
        "last@1M",
        "last: 0.5 at",
        "SPS",
    ]
    lines = []
    for r in rows:
        lines.append(
            [
                r["task"],
                r["seed"],
                f"{classes['any'][r['task']]} / {classes['last'][r['task']]}",
                fmt(r["steps"]),
                *(fmt(r[f"any_at_{m // 1000}k"]) for m in MILESTONES),
                fmt(r["any_first_0.5"]),
                *(fmt(r[f"last_at_{m // 1000}k"]) for m in MILESTONES),
                fmt(r["last_first_0.5"]),
                f"{r['sps']:,.0f}",
            ]
        )
    counts = {c: sum(1 for v in classes["any"].values() if v == c) for c in order}
    text = [
        f"# Task survey: {exp_name}, {len(classes['any'])} tasks, {len(rows)} runs",
        "",
        f"`python survey.py --exp-name {exp_name}` over the runs in this folder. Success is the training success "
        "curve (the last 20 episodes of the sampled policy) at the iteration that ends at or before 250k, 500k "
        "and 1M steps (blank: the run stopped before), and the first step at which it reached 0.5; `any`: "
        "success at any step of an episode (MetaWorld's protocol), `last`: at its last step.",
        "",
        f"Classes by the first step to 0.5: easy (before {HEADROOM[0] // 1000}k), headroom "
        f"({HEADROOM[0] // 1000}k-{HEADROOM[1] // 1000}k, the paper's button-press regime), late (after "
        f"{HEADROOM[1] // 1000}k), not reached (in the steps run). Any-step: "
        + ", ".join(f"{n} {c}" for c, n in counts.items())
        + ".",
        "",
        report.md_table(header, lines),
        "",
    ]
    path = out_dir / "survey.md"
    path.write_text("\n".join(text))
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-dir", default="runs", type=Path, help="folder holding the run folders")
    parser.add_argument("--exp-name", default="ppo_vanilla", help="the arm (exp_name) surveyed (default ppo_vanilla)")
    parser.add_argument(
        "--out-dir",
        default=Path(report.DEFAULT_OUT_DIR) / "survey",
        type=Path,
        help="where survey.md and survey.csv go (default reports/survey/)",
    )
    args = parser.parse_args(argv)
    try:
        runs = [run for run in report.find_runs(args.runs_dir) if run.exp_name == args.exp_name]
        if not runs:
            raise report.ReportError(f"{args.runs_dir}: no runs of exp_name {args.exp_name!r}")
        path = write_survey(survey_rows(runs), args.exp_name, args.out_dir)
    except report.ReportError as e:
        print(f"survey.py: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({len(runs)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
