"""The results report: the paper's tables and figures regenerated from run folders, with interval estimates.

    python report.py --runs-dir runs                          # writes reports/report.md and reports/figures/
    python report.py --runs-dir runs --success-definition last --out-dir /tmp/last
    python report.py --runs-dir results/A results/B        # one report over both folders' runs

reads every run folder `{runs_dir}/{env_id}__{exp_name}__{seed}/` of each --runs-dir (config.json, metrics.csv, summary.json once the
run completed, mask_counts.csv for the masking arms; each CSV plain or gzipped, `metrics.csv.gz`) and writes
`{out_dir}/report.md` with PNG figures in `{out_dir}/figures/`. The default out_dir, reports/, is git-ignored;
results/ holds curated, committed reports. An arm (a cell of a table) is one (env_id, exp_name) and one set of
settings; its seeds are aggregated. The paper's numbers come from `paper_reference.csv` (Tables 2, 3 and 4) and are
shown beside ours wherever the paper has them.

Conventions (also stated in the report):
- Only complete runs (summary.json present) enter means, tables, bands and statistics; incomplete runs are listed
  in their own table and drawn as dashed lines labelled "incomplete", never averaged in.
- Runs of one (env_id, exp_name) whose settings (config.json without seed, placement and metadata) differ from the
  majority's (ties: the longest total_timesteps), and runs that lack the chosen success definition's fields, are
  set apart: listed with the reason, in no cell.
- --success-definition picks the success curve and summary fields of every table, figure and statistic: any
  (MetaWorld's protocol: success at any step of the episode) or last (success at its last step).
- mean +- std is over seeds with the population std (ddof=0), which is what the paper's values imply
  (e.g. 0.990 +- 0.014 is {1, 1, 0.97}).
- Curves are interpolated onto a common grid of environment steps; a run contributes only between its first and
  last logged step (never extrapolated), and an arm's mean is drawn only where all its complete seeds have data.
- Besides each task's mean +- std success figure (the paper's Figure 2), a success IQM figure: the IQM over
  complete seeds at each grid point with a 95% stratified-bootstrap band (pointwise; no band for an arm with one
  complete seed), too narrow with fewer than about 5 seeds.
- A vocabulary section reads each arm across K (cells whose settings differ only in num_bins) against its K = 64
  cell: the drop in IQM, and whether a K costs one arm more than another (the difference of the drops).
- An action-heads section reads each arm with a structured head (ordinal, Poisson) against the same arm with the
  categorical head, at its K and at K = 64, and gives the share of the categorical head's loss at K it removes.
- A fine-tuning run (config.json records the recipe of its --init-from file, "pretrained") has its curves begin at
  step 0 at the pretrained policy's sampled success; a fine-tuning section reads each such cell against the same arm
  from scratch (its exp_name without grids.fine_tuned's `_ft-...` part): steps to reach that cell's final IQM.
- Interval estimates use rliable: interquartile mean with stratified-bootstrap 95% percentile intervals and the
  probability of improvement, BOOTSTRAP_REPS replications from a fixed seed. A pair of arms gets a separation
  verdict only with VERDICT_MIN_SEEDS complete seeds each, and none where both are at the ceiling or at the floor.

The code lives in the package reporting/ (its __init__ maps the modules); this file is the command.
"""

import argparse
import sys
from pathlib import Path

# What survey.py, results/entropy_rank.py and the tests use as report.NAME (__all__). The tunables
# (stats.BOOTSTRAP_REPS, figures.HEATMAP_RUNS, ...) are deliberately not here: a copy would not change what the package
# reads, so patching report.BOOTSTRAP_REPS fails (no such name) instead of silently doing nothing; patch reporting.stats.
from reporting.arms import Arm, SetApart, group_runs
from reporting.calibration import read_recipes, write_calibration
from reporting.curves import aligned, curve, step_grid
from reporting.document import write_report
from reporting.figures import figure_heatmap
from reporting.markdown import fmt_interval, md_table
from reporting.paper import load_reference, paper_exp_name
from reporting.runs import SUCCESS_DEFINITIONS, MaskCounts, ReportError, Run, SuccessDefinition, find_runs, load_run
from reporting.sections.finetune import from_scratch_name
from reporting.stats import (
    FEWER_IS_BETTER,
    METRICS,
    comparison_sentence,
    improvement_interval,
    interval_estimate,
    interval_estimates,
    iqm,
    iqm_band,
    iqm_per_point,
    probability_of_improvement,
    score_matrix,
)
from reporting.tables import masked_cell

__all__ = [
    "Arm",
    "SetApart",
    "group_runs",
    "aligned",
    "curve",
    "step_grid",
    "write_report",
    "figure_heatmap",
    "fmt_interval",
    "md_table",
    "load_reference",
    "paper_exp_name",
    "SUCCESS_DEFINITIONS",
    "MaskCounts",
    "ReportError",
    "Run",
    "SuccessDefinition",
    "find_runs",
    "load_run",
    "FEWER_IS_BETTER",
    "METRICS",
    "comparison_sentence",
    "improvement_interval",
    "interval_estimate",
    "interval_estimates",
    "iqm",
    "iqm_band",
    "iqm_per_point",
    "probability_of_improvement",
    "score_matrix",
    "masked_cell",
    "from_scratch_name",
    "read_recipes",
    "write_calibration",
    "DEFAULT_OUT_DIR",
    "main",
]

DEFAULT_OUT_DIR = Path("reports")  # git-ignored; results/ is for curated, committed reports


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs-dir",
        default=[Path("runs")],
        type=Path,
        nargs="+",
        help="folder(s) holding the run folders (several: one report over all of them, e.g. a Table 3 "
        "folder and the study whose K = 64 cells its vocabulary rows are read against)",
    )
    parser.add_argument(
        "--out-dir",
        default=DEFAULT_OUT_DIR,
        type=Path,
        help=f"where report.md and figures/ go (default {DEFAULT_OUT_DIR}/, git-ignored; results/ is "
        f"for curated, committed reports)",
    )
    parser.add_argument(
        "--success-definition",
        choices=list(SUCCESS_DEFINITIONS),
        default="any",
        help="which episodes count as successes in every table, figure and statistic: any (default, "
        "MetaWorld's protocol: info['success'] at any step) or last (at the episode's last step)",
    )
    parser.add_argument(
        "--calibration",
        type=Path,
        nargs="+",
        help="instead of runs: tabulate and plot the pretrain_bc.py recipes (*.json) in these folders "
        "(the fine-tuning issue's pretraining calibration) into OUT_DIR/calibration.md",
    )
    args = parser.parse_args(argv)
    try:
        for folder in (args.out_dir, args.out_dir / "figures"):
            if folder.exists() and not folder.is_dir():  # checked before any work: nothing half-written
                raise ReportError(f"--out-dir: {folder} is a file, not a directory")
        if args.calibration:
            recipes = read_recipes(args.calibration)
            path = write_calibration(
                recipes, args.calibration, args.out_dir, SUCCESS_DEFINITIONS[args.success_definition]
            )
            print(f"wrote {path} ({len(recipes)} recipes)")
            return 0
        runs = find_runs(*args.runs_dir)
        path = write_report(
            runs, args.runs_dir, args.out_dir, load_reference(), SUCCESS_DEFINITIONS[args.success_definition]
        )
    except ReportError as e:
        print(f"report.py: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({len(runs)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
