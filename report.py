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
"""

import argparse
import csv
import gzip
import itertools
import json
import math
import os
import re
import sys
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import EngFormatter  # noqa: E402

import grids  # noqa: E402  (which config.json keys are settings, and how to name their differences)

REFERENCE_CSV = Path(__file__).resolve().with_name("paper_reference.csv")
RUN_DIR_PATTERN = re.compile(r"^.+__.+__-?\d+$")
PAPER_TASK_ORDER = ["reach", "button-press", "drawer-close", "pick-place"]
GRID_POINTS = 200  # points of the common step grid the curves are interpolated onto
HEATMAP_COLUMNS = 100  # the heat maps average consecutive iterations into at most this many time columns
HEATMAP_RUNS = 5  # rows of a heat map: the first seeds (complete ones first); 10 seeds of noise-like random masks
                  # made a 2 MB figure
BOOTSTRAP_REPS = 2000
BOOTSTRAP_SEED = 0
CI_SIZE = 0.95
METRICS = {"final_success": "final success", "auc": "AUC", "steps_to_half": "steps to 0.5"}  # what statistics compare
# Fewer is better: P(X better than Y) is P(X < Y), X reached 0.5 sooner. A complete seed that never reached 0.5 counts
# as its run's length, a lower bound on its true value (so an arm with such seeds looks faster than it is).
FEWER_IS_BETTER = ("steps_to_half",)
SUCCESS_METRICS = ("final_success", "auc", "steps_to_half")  # summary.json fields that depend on the success definition
# Fewer complete seeds per arm: no separation verdict. Simulated pairs of identically distributed arms (normal scores,
# 200-400 pairs) come out separated on either measure 18-21% of the time at 3 seeds, about 10% at 5, 7% at 10; on
# both measures 11% at 3 and 3% at 5.
VERDICT_MIN_SEEDS = 5
CEILING, FLOOR = 0.95, 0.05  # both arms' every complete seed at or above / at or below: no separation verdict
DEFAULT_OUT_DIR = Path("reports")  # git-ignored; results/ is for curated, committed reports
PAPER_LABEL = "paper (MetaWorld -v2)"
SECTION_TITLES = {
    "2": "Table 2: final success, AUC and steps to 0.5 per task and arm",
    "3": "Table 3: button-press ablations of the utility mask",
    "4": "Table 4: button-press masking variants and loss-side shaping",
    "other": "Other runs (exp_names the paper does not have)",
}


class ReportError(Exception):
    """A problem with the inputs, reported as one line naming the file."""


@dataclass(frozen=True)
class SuccessDefinition:
    """Which episodes count as successes: picks the success curve (metrics.csv) and the summary.json fields."""

    name: str  # the --success-definition value
    suffix: str  # of the metrics.csv column and the summary.json fields: success_rate{suffix}, auc{suffix}, ...
    noun: str  # "success" in labels
    meaning: str

    @property
    def curve(self) -> str:
        return f"success_rate{self.suffix}"

    def field(self, metric: str) -> str:
        """The summary.json field of a metric under this definition (metrics that do not depend on it unchanged)."""
        return f"{metric}{self.suffix}" if metric in SUCCESS_METRICS else metric

    def required(self) -> list:
        """(file, field) pairs a run needs for this definition."""
        return [("metrics.csv", self.curve)] + [("summary.json", self.field(m)) for m in SUCCESS_METRICS]


SUCCESS_DEFINITIONS = {
    "any": SuccessDefinition("any", "", "success", "an episode succeeds if `info[\"success\"]` was 1 at any of its "
                                                   "steps, MetaWorld's protocol"),
    "last": SuccessDefinition("last", "_last_step", "last-step success",
                              "an episode succeeds if `info[\"success\"]` was 1 at its last step"),
}


# ---------------------------------------------------------------------------------------------------------------
# Reading run folders


@dataclass
class MaskCounts:
    steps: np.ndarray  # (T,) global step of each iteration
    fractions: np.ndarray  # (T, D, K) fraction of the rollout's steps on which each (dimension, bin) was masked


@dataclass
class Run:
    path: Path
    config: dict
    metrics: dict  # column name -> (T,) float array; success_rate NaN before the first episode
    summary: dict | None  # None: the run has not completed
    mask_counts: MaskCounts | None

    @property
    def env_id(self):
        return self.config["env_id"]

    @property
    def exp_name(self):
        return self.config["exp_name"]

    @property
    def seed(self):
        return self.config["seed"]

    @property
    def num_bins(self):
        return int(self.config["num_bins"])

    @property
    def complete(self):
        return self.summary is not None

    @property
    def steps(self):
        return self.metrics["global_step"]

    @property
    def total_steps(self) -> int:
        """Environment steps trained: summary.json's total_steps, or for a run without it the last logged step."""
        if self.summary is not None and self.summary.get("total_steps") is not None:
            return int(self.summary["total_steps"])
        return int(self.steps[-1]) if len(self.steps) else 0

    @property
    def settings(self) -> dict:
        """What the run computed, as seeds of one cell share it: config.json without seed, placement and metadata."""
        return grids.run_settings(self.config, ignore=("seed",))

    def score(self, field):
        """A summary.json number (None where absent or null, e.g. steps_to_half of a run that never reached 0.5)."""
        value = self.summary.get(field)
        return None if value is None else float(value)

    def lacks(self, success: SuccessDefinition) -> list:
        """The fields of a success definition that this run does not record ("metrics.csv success_rate_last_step")."""
        return [f"{file} {name}" for file, name in success.required()
                if (name not in self.metrics if file == "metrics.csv" else self.complete and name not in self.summary)]

    def masked_after_ramp(self):
        """The mean fraction of bins masked (metrics.csv mask_fraction) over the iterations at or after the mask
        ramp's end (config mask_warmup_end): the budget actually spent. None for a run that masks nothing by design
        (no mask_fraction) or has not reached the end of its ramp."""
        fractions, ramp_end = self.metrics.get("mask_fraction"), self.config.get("mask_warmup_end")
        if fractions is None or ramp_end is None:
            return None
        after = (self.steps >= ramp_end) & ~np.isnan(fractions)
        return float(fractions[after].mean()) if after.any() else None

    @property
    def entropy_is_unmasked(self) -> bool:
        """Whether metrics.csv policy_entropy is the unmasked policy's, comparable across arms. Masked runs written
        before the arms logged sampling_entropy beside it have the masked (sampling) distribution's there."""
        return "mask_fraction" not in self.metrics or "sampling_entropy" in self.metrics


def read_json(path: Path, required: tuple) -> dict:
    try:
        payload = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"{path}: not readable as JSON ({e})") from None
    if not isinstance(payload, dict):
        raise ReportError(f"{path}: expected a JSON object")
    missing = [key for key in required if key not in payload]
    if missing:
        raise ReportError(f"{path}: missing {', '.join(missing)}")
    return payload


def to_float(text: str) -> float:
    return math.nan if text.strip() == "" else float(text)


def run_file(folder: Path, name: str) -> Path | None:
    """A run folder's CSV, plain (folder/name) or gzipped (folder/name.gz, as results/ keeps them); None if
    neither exists."""
    plain, packed = folder / name, folder / f"{name}.gz"
    if plain.exists() and packed.exists():
        raise ReportError(f"{plain}: both it and {packed.name} exist; keep one")
    return plain if plain.exists() else packed if packed.exists() else None


def read_numeric_csv(path: Path, required: tuple, drop_partial_last_row: bool) -> dict:
    """A CSV file (plain, or gzipped if its name ends in .gz) of numbers as column -> array; empty cells and "nan"
    are NaN. A run still being written may end in a half-written row: drop_partial_last_row drops a last row with
    missing cells instead of failing."""
    try:
        with (gzip.open(path, "rt", newline="") if path.suffix == ".gz" else open(path, newline="")) as f:
            rows = list(csv.reader(f))
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, csv.Error) as e:
        raise ReportError(f"{path}: not readable as CSV ({e})") from None
    if not rows or not rows[0]:
        raise ReportError(f"{path}: empty file (no header)")
    header, body = rows[0], rows[1:]
    missing = [c for c in required if c not in header]
    if missing:
        raise ReportError(f"{path}: missing column(s) {', '.join(missing)}")
    if drop_partial_last_row and body and len(body[-1]) < len(header):
        body = body[:-1]
    values = np.full((len(body), len(header)), np.nan)
    for i, row in enumerate(body):
        if len(row) != len(header):
            raise ReportError(f"{path}: line {i + 2} has {len(row)} fields, the header has {len(header)}")
        try:
            values[i] = [to_float(cell) for cell in row]
        except ValueError:
            raise ReportError(f"{path}: line {i + 2} has a cell that is not a number") from None
    return {name: values[:, j] for j, name in enumerate(header)}


def read_mask_counts(path: Path, incomplete: bool) -> MaskCounts:
    table = read_numeric_csv(path, ("global_step", "masks"), incomplete)
    cells = [(name, re.fullmatch(r"d(\d+)_b(\d+)", name)) for name in table]
    cells = [(name, int(m[1]), int(m[2])) for name, m in cells if m]
    if not cells:
        raise ReportError(f"{path}: no d{{dim}}_b{{bin}} columns")
    dims, bins = 1 + max(c[1] for c in cells), 1 + max(c[2] for c in cells)
    counts = np.zeros((len(table["global_step"]), dims, bins))
    for name, d, b in cells:
        counts[:, d, b] = table[name]
    masks = table["masks"][:, None, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        fractions = np.where(masks > 0, counts / np.where(masks > 0, masks, 1), 0.0)
    return MaskCounts(table["global_step"], fractions)


def load_run(folder: Path) -> Run:
    config = read_json(folder / "config.json", ("env_id", "exp_name", "seed", "num_bins"))
    summary_path = folder / "summary.json"
    summary = read_json(summary_path, ("final_success", "auc")) if summary_path.exists() else None
    metrics_path = run_file(folder, "metrics.csv")
    if metrics_path is None:
        raise ReportError(f"{folder / 'metrics.csv'}: missing (every run folder needs config.json and metrics.csv)")
    metrics = read_numeric_csv(metrics_path, ("global_step", "success_rate", "policy_entropy"), summary is None)
    if summary is not None and len(metrics["global_step"]) == 0:
        raise ReportError(f"{metrics_path}: no rows, but summary.json says the run completed")
    start = pretrained_start(config, folder / "config.json")
    if start is not None:  # a fine-tuning run's curves begin at step 0, at the pretrained policy's success
        metrics = {name: np.concatenate([[start.get(name, math.nan)], values]) for name, values in metrics.items()}
    counts_path = run_file(folder, "mask_counts.csv")
    mask_counts = read_mask_counts(counts_path, summary is None) if counts_path else None
    return Run(folder, config, metrics, summary, mask_counts)


def pretrained_start(config: dict, path: Path) -> dict | None:
    """The step-0 point of a fine-tuning run's success curves (a run whose config.json records the --init-from file's
    recipe, "pretrained"): the pretrained policy's sampled success at any step and at the last step, measured by
    pretrain_bc.py on its own evaluation episodes (sampled: the paper's protocol, and how training episodes act).
    Other columns have no value there. None for a run trained from scratch."""
    recipe = config.get("pretrained")
    if not isinstance(recipe, dict):
        return None
    try:
        sampled = recipe["success"]["sampled"]
        return {"iteration": 0.0, "global_step": 0.0, "success_rate": float(sampled["any"]),
                "success_rate_last_step": float(sampled["last"])}
    except (KeyError, TypeError, ValueError):
        raise ReportError(f"{path}: its pretrained recipe has no sampled success") from None


def find_runs(*runs_dirs: Path) -> list[Run]:
    """Every run folder directly under each runs_dir: a folder with config.json, or one named like a run
    ({env_id}__{exp_name}__{seed}) that lacks it (an error). Other folders (figures/, ...) are skipped. One
    (env_id, exp_name, seed) in two folders is an error: a cell's seeds are counted once."""
    runs = []
    for runs_dir in runs_dirs:
        if not runs_dir.is_dir():
            raise ReportError(f"{runs_dir}: no such directory")
        found = []
        for folder in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
            if (folder / "config.json").exists():
                found.append(load_run(folder))
            elif RUN_DIR_PATTERN.match(folder.name):
                raise ReportError(f"{folder / 'config.json'}: missing (the folder is named like a run)")
        if not found:
            raise ReportError(f"{runs_dir}: no run folders ({{env_id}}__{{exp_name}}__{{seed}}/ with config.json)")
        runs += found
    seen = {}
    for run in runs:
        key = (run.env_id, run.exp_name, run.seed)
        if key in seen:
            raise ReportError(f"{run.path}: same env_id, exp_name and seed as {seen[key]}")
        seen[key] = run.path
    return runs


# ---------------------------------------------------------------------------------------------------------------
# Arms and their numbers


@dataclass(eq=False)
class Arm:
    """One cell: an (env_id, exp_name) and its settings. Its complete runs are aggregated, its incomplete runs shown
    apart; runs of the same (env_id, exp_name) with other settings are in no arm (set_apart counts them)."""

    env_id: str
    exp_name: str
    success: SuccessDefinition
    complete: list = field(default_factory=list)
    incomplete: list = field(default_factory=list)
    set_apart: int = 0

    @property
    def n(self):
        return len(self.complete)

    @property
    def task(self):
        return paper_task(self.env_id)

    def scores(self, metric) -> list:
        """The complete runs' summary.json values of a metric, under the report's success definition for the success
        metrics (None for a run that has no value)."""
        return [run.score(self.success.field(metric)) for run in self.complete]

    def num_bins(self) -> list:
        return sorted({run.num_bins for run in self.complete + self.incomplete})


@dataclass
class SetApart:
    """A run in no cell, and why."""

    run: Run
    reason: str


def paper_task(env_id: str) -> str:
    """The paper's task name of an env id: button-press-v3 -> button-press."""
    return re.sub(r"-v\d+$", "", env_id)


def task_sort_key(env_id: str):
    task = paper_task(env_id)
    return (PAPER_TASK_ORDER.index(task) if task in PAPER_TASK_ORDER else len(PAPER_TASK_ORDER), env_id)


def settings_key(run: Run) -> str:
    return json.dumps(run.settings, sort_keys=True)


def cell_settings(runs: list[Run]) -> dict:
    """The settings of a cell: those of most of its complete runs (of most of its runs while none is complete);
    ties go to the longest total_timesteps, then to the lowest seed."""
    pool = [run for run in runs if run.complete] or runs
    groups = {}
    for run in sorted(pool, key=lambda r: r.seed):
        groups.setdefault(settings_key(run), []).append(run)
    best = max(groups.values(), key=lambda group: (len(group), group[0].config.get("total_timesteps") or 0))
    return best[0].settings


def group_runs(runs: list[Run], success: SuccessDefinition) -> tuple[dict, list[SetApart]]:
    """(env_id, exp_name) -> its Arm, and the runs set apart: those lacking the success definition's fields, and
    those whose settings differ from their cell's."""
    arms, set_apart, candidates = {}, [], {}
    for run in sorted(runs, key=lambda r: (task_sort_key(r.env_id), r.exp_name, r.seed)):
        lacking = run.lacks(success)
        if lacking:
            set_apart.append(SetApart(run, f"lacks {', '.join(lacking)} (--success-definition {success.name})"))
        else:
            candidates.setdefault((run.env_id, run.exp_name), []).append(run)
    for (env_id, exp_name), cell_runs in candidates.items():
        arm = arms[(env_id, exp_name)] = Arm(env_id, exp_name, success)
        settings = cell_settings(cell_runs)
        for run in cell_runs:
            differences = grids.setting_differences(run.settings, settings)
            if differences:
                set_apart.append(SetApart(run, "settings differ from its cell's: "
                                          + grids.describe_differences(differences, "this run", "cell")))
            else:
                (arm.complete if run.complete else arm.incomplete).append(run)
    for entry in set_apart:
        arm = arms.get((entry.run.env_id, entry.run.exp_name))
        if arm is not None:
            arm.set_apart += 1
    return arms, set_apart


def mean_std(values) -> tuple:
    """Mean and population std (ddof=0) of the values that exist; (nan, nan) if none."""
    values = [v for v in values if v is not None]
    if not values:
        return math.nan, math.nan
    return float(np.mean(values)), float(np.std(values))


# ---------------------------------------------------------------------------------------------------------------
# The paper's numbers


def load_reference(path: Path = REFERENCE_CSV) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in ("final_mean", "final_std", "auc", "steps_to_half", "n"):
            row[key] = float(row[key]) if row[key] else None
    return rows


# Suffixes of exp_names that run a paper cell in another regime (grids.in_paper_regime): such a cell is read against
# the paper's row of the exp_name without it, and listed right after it
REGIME_SUFFIXES = ("_no-norm-obs",)


def paper_exp_name(exp_name: str) -> str:
    """The paper's exp_name of a cell: its own, less a regime suffix (ppo_vanilla_no-norm-obs -> ppo_vanilla)."""
    for suffix in REGIME_SUFFIXES:
        if exp_name.endswith(suffix):
            return exp_name[: -len(suffix)]
    return exp_name


def section_exp_names(reference: list[dict]) -> dict:
    """Table -> its exp_names in the paper's row order."""
    sections = {}
    for row in reference:
        names = sections.setdefault(row["table"], [])
        if row["exp_name"] not in names:
            names.append(row["exp_name"])
    return sections


# ---------------------------------------------------------------------------------------------------------------
# Formatting


def fmt(value, digits=3) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def fmt_pm(mean, std, digits=3) -> str:
    return "" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def fmt_steps(value) -> str:
    return "" if value is None or math.isnan(value) else f"{value / 1000:.0f}k"


def steps_to_half_cell(arm: Arm) -> str:
    reached = [v for v in arm.scores("steps_to_half") if v is not None]
    if not reached:
        return f"never (0/{arm.n})" if arm.n else ""
    mean, std = mean_std(reached)
    suffix = "" if len(reached) == arm.n else f" ({len(reached)}/{arm.n} reached)"
    return f"{fmt_steps(mean)} ± {fmt_steps(std)}{suffix}"


def n_cell(arm: Arm) -> str:
    return (f"{arm.n}" + (f" (+{len(arm.incomplete)} incomplete)" if arm.incomplete else "")
            + (f" (+{arm.set_apart} set apart)" if arm.set_apart else ""))


def total_steps_cell(arm: Arm) -> str:
    """The environment steps its complete runs trained (one value: a cell's runs share their settings)."""
    return ", ".join(f"{steps:,}" for steps in sorted({run.total_steps for run in arm.complete}))


def masked_cell(arm: Arm) -> str:
    """The mean over complete seeds of the fraction of bins masked after the ramp, with the budget; n/a for an arm
    that masks nothing by design or whose runs have not reached the ramp's end."""
    if not arm.complete:
        return ""
    if any("mask_fraction" not in run.metrics for run in arm.complete):
        return "n/a"
    fractions = [run.masked_after_ramp() for run in arm.complete]
    if None in fractions:
        return "n/a (ramp unfinished)"
    budget = arm.complete[0].config.get("mask_budget")
    return f"{np.mean(fractions):.3f}" + ("" if budget is None else f" (budget {budget:g})")


def md_table(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


# ---------------------------------------------------------------------------------------------------------------
# Curves on a common step grid


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


# ---------------------------------------------------------------------------------------------------------------
# Figures


FIXED_COLORS = {"ppo_vanilla": "tab:gray", "ppo_random_mask": "tab:blue", "ppo_utility_mask": "tab:red"}
OTHER_COLORS = ["tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan",
                "black", "gold", "navy", "lime", "teal", "maroon"]


def arm_colors(names: list) -> dict:
    """Colors of one figure's arms: the three main arms always the same, the others distinct within the figure."""
    others = iter(OTHER_COLORS * (1 + len(names) // len(OTHER_COLORS)))
    return {name: FIXED_COLORS.get(name) or next(others) for name in names}


def steps_axis(ax, ylabel: str):
    ax.xaxis.set_major_formatter(EngFormatter())
    ax.set_xlabel("environment steps")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def plot_band(ax, arms: list, column: str, include=lambda run: True):
    """Each arm's mean over its complete seeds with a +-std band, and its incomplete runs as dashed lines; only the
    runs `include` accepts."""
    colors = arm_colors([arm.exp_name for arm in arms])
    grid = step_grid([run for arm in arms for run in arm.complete + arm.incomplete if include(run)])
    for arm in arms:
        color = colors[arm.exp_name]
        complete = [run for run in arm.complete if include(run)]
        if complete:
            values = aligned(complete, column, grid)
            mean, std = values.mean(axis=0), values.std(axis=0)  # NaN where any seed lacks data
            ax.plot(grid, mean, color=color, lw=1.8, label=f"{arm.exp_name} (n={len(complete)})")
            ax.fill_between(grid, mean - std, mean + std, color=color, alpha=0.2, lw=0)
        for run in (run for run in arm.incomplete if include(run)):
            ax.plot(grid, aligned([run], column, grid)[0], color=color, lw=1, ls="--",
                    label=f"{arm.exp_name} seed {run.seed} (incomplete, not in mean)")


def save(fig, out_dir: Path, name: str, tight: bool = True) -> str:
    path = out_dir / "figures" / name
    fig.savefig(path, dpi=110, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return f"figures/{name}"


def legend(ax):
    """The legend outside the axes, on the right, so it never hides a curve."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)


def figure_success(arms, env_id, out_dir, prefix):
    success = arms[0].success
    fig, ax = plt.subplots(figsize=(7, 4.2))
    plot_band(ax, arms, success.curve)
    ax.set_ylim(-0.02, 1.02)
    steps_axis(ax, f"{success.noun} rate (last 20 training episodes)")
    ax.set_title(f"{env_id}: rollout {success.noun} vs steps (mean ± std over seeds)")
    legend(ax)
    return save(fig, out_dir, f"{prefix}_{slug(env_id)}_success.png")


def figure_success_iqm(arms, env_id, out_dir, prefix):
    """Each arm's success curve as the IQM over its complete seeds with a 95% stratified-bootstrap band (iqm_band);
    an arm with one complete seed is that run's curve without a band; incomplete runs are not drawn."""
    success = arms[0].success
    colors = arm_colors([arm.exp_name for arm in arms])  # the same colors as the mean ± std figure
    grid = step_grid([run for arm in arms for run in arm.complete])
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for arm in (arm for arm in arms if arm.complete):
        center, low, high = iqm_band(aligned(arm.complete, success.curve, grid))
        color = colors[arm.exp_name]
        ax.plot(grid, center, color=color, lw=1.8,
                label=f"{arm.exp_name} (n={arm.n}" + (", one seed: no band)" if arm.n < 2 else ")"))
        ax.fill_between(grid, low, high, color=color, alpha=0.2, lw=0)
    if not any(arm.complete for arm in arms):
        ax.text(0.5, 0.5, "no complete runs", transform=ax.transAxes, ha="center", va="center")
    ax.set_ylim(-0.02, 1.02)
    steps_axis(ax, f"{success.noun} rate (last 20 training episodes)")
    ax.set_title(f"{env_id}: {success.noun} rate, IQM over seeds with {CI_SIZE:.0%} bootstrap CI")
    legend(ax)
    return save(fig, out_dir, f"{prefix}_{slug(env_id)}_success_iqm.png")


def entropy_left_out(arms) -> list:
    """The runs whose policy_entropy is not the unmasked policy's (older masked runs): not in the entropy figure."""
    return [run for arm in arms for run in arm.complete + arm.incomplete if not run.entropy_is_unmasked]


def figure_entropy(arms, env_id, out_dir, prefix):
    """Paper Figure 4 with the unmasked policy's entropy of every arm (older masked runs, which logged the masked
    distribution's, left out: see entropy_left_out)."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    plot_band(ax, arms, "policy_entropy", include=lambda run: run.entropy_is_unmasked)
    for k in sorted({k for arm in arms for k in arm.num_bins()}):
        ax.axhline(4 * math.log(k), color="black", ls=":", lw=1.2)
        ax.annotate(f"maximum 4 ln {k} = {4 * math.log(k):.1f}", (1, 4 * math.log(k)), xycoords=("axes fraction", "data"),
                    xytext=(-4, 2), textcoords="offset points", ha="right", va="bottom", fontsize=8)
    left_out = sorted({run.exp_name for run in entropy_left_out(arms)})
    if left_out:
        ax.text(0.01, 0.02, f"left out (older runs logged the masked entropy): {', '.join(left_out)}",
                transform=ax.transAxes, fontsize=7, va="bottom")
    steps_axis(ax, "unmasked entropy (nats, 4 dims summed)")
    ax.set_ylim(0, 4 * math.log(max(k for arm in arms for k in arm.num_bins())) * 1.08)
    ax.set_title(f"{env_id}: unmasked policy entropy vs steps (mean ± std over seeds)")
    legend(ax)
    return save(fig, out_dir, f"{prefix}_{slug(env_id)}_entropy.png")


def figure_rank_agreement(arms, env_id, out_dir):
    fig, ax = plt.subplots(figsize=(7, 4.2))
    plot_band(ax, arms, "rank_agreement")
    ax.axhline(0.31, color="gray", ls=":", lw=1.2, label="paper: about 0.31")
    ax.axhline(0, color="black", lw=0.6)
    steps_axis(ax, "rank agreement (Spearman, critic vs policy)")
    ax.set_title(f"{env_id}: utility critic / policy rank agreement (mean ± std)")
    legend(ax)
    return save(fig, out_dir, f"rank_agreement_{slug(env_id)}.png")


def bar_panel(ax, arms, colors, metric, paper_values, scale=1.0):
    """Mean bars with std whiskers, each complete seed as a dot, the paper's value as a black diamond."""
    for i, arm in enumerate(arms):
        values = [v / scale for v in arm.scores(metric) if v is not None]
        mean, std = mean_std(values)
        if values:
            ax.bar(i, mean, yerr=std, color=colors[arm.exp_name], alpha=0.75, capsize=4)
            ax.scatter(np.full(len(values), i) + np.linspace(-0.15, 0.15, len(values)), values, color="black", s=12,
                       zorder=3, label="seeds" if i == 0 else None)
        if metric == "steps_to_half" and arm.n and len(values) < arm.n:
            ax.annotate(f"{len(values)}/{arm.n} reached", (i, 0), ha="center", va="bottom", fontsize=7)
        paper = paper_values.get(paper_exp_name(arm.exp_name))
        if paper is not None:
            ax.scatter([i], [paper / scale], marker="D", facecolor="none", edgecolor="black", s=40, zorder=4,
                       label=PAPER_LABEL if PAPER_LABEL not in ax.get_legend_handles_labels()[1] else None)
    ax.set_xticks(range(len(arms)), [arm.exp_name for arm in arms], rotation=30, ha="right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def paper_values(paper_rows: list[dict], key: str) -> dict:
    """exp_name -> the paper's value in its first row for that arm (Table 4's baseline row, not the seed-batch one)."""
    values = {}
    for row in paper_rows:
        if row[key] is not None:
            values.setdefault(row["exp_name"], row[key])
    return values


def figure_efficiency(arms, env_id, out_dir, prefix, paper_rows):
    colors = arm_colors([arm.exp_name for arm in arms])
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(8, 1.1 * len(arms) + 4), 4.4))
    bar_panel(left, arms, colors, "auc", paper_values(paper_rows, "auc"))
    left.set_ylabel(f"normalized AUC of the {arms[0].success.noun} curve")
    left.set_ylim(0, 1.05)
    bar_panel(right, arms, colors, "steps_to_half", paper_values(paper_rows, "steps_to_half"), scale=1000)
    right.set_ylabel(f"steps to 0.5 {arms[0].success.noun} (thousands)")
    right.set_ylim(bottom=0)
    handles, labels = left.get_legend_handles_labels()
    fig.suptitle(f"{env_id}: sample efficiency (bars: mean ± std over complete seeds)")
    fig.tight_layout()
    if handles:
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=8)
    return save(fig, out_dir, f"{prefix}_{slug(env_id)}_efficiency.png")


def figure_final_across_tasks(arms_by_env, out_dir, reference):
    """Figure 2 right: final success per task, one bar per arm, the paper's Table 2 values as diamonds."""
    envs = list(arms_by_env)
    names = list(dict.fromkeys(arm.exp_name for arms in arms_by_env.values() for arm in arms))
    colors = arm_colors(names)
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(7, (0.6 + 0.35 * len(names)) * len(envs) + 2), 4.2))
    paper = {(r["task"], r["exp_name"]): r["final_mean"] for r in reference if r["table"] == "2"}
    for j, name in enumerate(names):
        for i, env_id in enumerate(envs):
            arm = next((a for a in arms_by_env[env_id] if a.exp_name == name), None)
            if arm is None:
                continue
            x = i + (j - (len(names) - 1) / 2) * width
            mean, std = mean_std(arm.scores("final_success"))
            if arm.n:
                ax.bar(x, mean, width, yerr=std, color=colors[name], alpha=0.8, capsize=3,
                       label=name if name not in ax.get_legend_handles_labels()[1] else None)
            if (arm.task, name) in paper:
                ax.scatter([x], [paper[(arm.task, name)]], marker="D", facecolor="none", edgecolor="black", s=30,
                           zorder=4, label=PAPER_LABEL if PAPER_LABEL not in ax.get_legend_handles_labels()[1] else None)
    ax.set_xticks(range(len(envs)), envs)
    ax.set_ylim(0, 1.1)
    noun = next(arm.success.noun for arms in arms_by_env.values() for arm in arms)
    ax.set_ylabel(f"final {noun} (last 100 training episodes)")
    ax.set_title(f"Final rollout {noun} across tasks (mean ± std over complete seeds)")
    ax.grid(axis="y", alpha=0.3)
    legend(ax)
    return save(fig, out_dir, "table2_final_success_across_tasks.png")


def downsample(values: np.ndarray, columns: int) -> np.ndarray:
    """Average consecutive rows (iterations) into at most `columns` equal blocks."""
    blocks = np.array_split(np.arange(len(values)), min(columns, len(values)))
    return np.stack([values[block].mean(axis=0) for block in blocks])


def figure_heatmap(arm: Arm, out_dir: Path) -> str:
    """The pruned-token heat map: per run (rows) and action dimension (columns), how often each bin was masked in
    each iteration's rollout, over training."""
    runs = [r for r in arm.complete + arm.incomplete if r.mask_counts is not None and len(r.mask_counts.steps)]
    runs = runs[:HEATMAP_RUNS]
    dims = max(r.mask_counts.fractions.shape[1] for r in runs)
    width, height = 3.0 * dims + 1.4, 2.2 * len(runs) + 1.0
    fig, axes = plt.subplots(len(runs), dims, figsize=(width, height), squeeze=False)
    # a fixed layout: constrained/tight layout of this many image panels costs seconds per figure
    bottom, top = 0.6 / height, 1 - 0.6 / height
    fig.subplots_adjust(left=0.9 / width, right=1 - 1.3 / width, bottom=bottom, top=top, hspace=0.5, wspace=0.15)
    for row, run in zip(axes, runs):
        counts = run.mask_counts
        bins = counts.fractions.shape[2]
        for d, ax in enumerate(row):
            if d >= counts.fractions.shape[1]:
                ax.axis("off")
                continue
            image = ax.imshow(downsample(counts.fractions[:, d, :], HEATMAP_COLUMNS).T, aspect="auto",
                              origin="lower", vmin=0, vmax=1, cmap="magma", interpolation="nearest",
                              extent=(0, counts.steps[-1], -0.5, bins - 0.5))
            ax.xaxis.set_major_formatter(EngFormatter())
            ax.set_title(f"seed {run.seed}{'' if run.complete else ' (incomplete)'}, dim {d}", fontsize=9)
            if run is runs[-1]:
                ax.set_xlabel("environment steps", fontsize=8)
            if d == 0:
                ax.set_ylabel(f"bin (0: action -1, {bins - 1}: +1)", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.colorbar(image, cax=fig.add_axes((1 - 1.1 / width, bottom, 0.15 / width, top - bottom)),
                 label="fraction of rollout steps masked")
    fig.suptitle(f"{arm.env_id} / {arm.exp_name}: masked action tokens over training", y=1 - 0.15 / height)
    return save(fig, out_dir, f"heatmap_{slug(arm.env_id)}__{slug(arm.exp_name)}.png", tight=False)


# ---------------------------------------------------------------------------------------------------------------
# Interval estimates (rliable)


def score_matrix(arm: Arm, metric: str) -> np.ndarray:
    """(seeds, 1) matrix of a metric over the complete runs: rliable's (num_runs, num_tasks) for one task. Steps to
    0.5 of a seed that never reached it: the run's length (censored, see FEWER_IS_BETTER)."""
    if metric == "steps_to_half":
        values = [run.total_steps if v is None else v for run, v in zip(arm.complete, arm.scores(metric))]
    else:
        values = [v for v in arm.scores(metric) if v is not None]
    return np.array(values, dtype=np.float64)[:, None]


def improvement_label(metric: str) -> str:
    """How the probability of improvement reads for a metric: P(X > Y), or P(X < Y) where fewer is better."""
    return "P(X < Y)" if metric in FEWER_IS_BETTER else "P(X > Y)"


def interval_estimates(scores, func) -> tuple:
    """rliable's stratified-bootstrap percentile intervals of func(*scores), a 1-D array of k values: (point, low,
    high), each a (k,) array. rliable 1.2.0 draws its resamples from numpy's global generator (its random_state
    reaches arch, whose generator the stratified resampling never uses), so the global generator is seeded with
    BOOTSTRAP_SEED for the call and restored after it: the same scores give the same interval in any run and order."""
    from rliable import library

    state = np.random.get_state()
    np.random.seed(BOOTSTRAP_SEED)
    try:
        with warnings.catch_warnings():  # arch deprecates the RandomState that rliable passes it
            warnings.simplefilter("ignore", FutureWarning)
            point, interval = library.get_interval_estimates(
                {"key": scores}, func, reps=BOOTSTRAP_REPS, confidence_interval_size=CI_SIZE,
                random_state=np.random.RandomState(BOOTSTRAP_SEED))
    finally:
        np.random.set_state(state)
    low, high = interval["key"]
    return np.ravel(point["key"]), low, high


def interval_estimate(scores, func) -> tuple:
    """interval_estimates of a func with one value: (point, low, high) floats."""
    point, low, high = interval_estimates(scores, func)
    return float(point[0]), float(low[0]), float(high[0])


def iqm_per_point(scores: np.ndarray) -> np.ndarray:
    """(runs, tasks, points) -> (points,): the IQM over all runs and tasks at each point, i.e. rliable's
    sample-efficiency-curve func `lambda s: np.array([metrics.aggregate_iqm(s[..., i]) for i in range(points)])`
    (scipy's 25% trim_mean), vectorized: 2000 replications of 200 points take 0.1 s instead of 30 s."""
    values = np.sort(scores.reshape(-1, scores.shape[-1]), axis=0)
    cut = int(0.25 * len(values))
    return values[cut:len(values) - cut].mean(axis=0)


def iqm(scores: np.ndarray) -> np.ndarray:
    """rliable.metrics.aggregate_iqm of (runs, tasks) scores as a 1-element array, without scipy's per-call overhead,
    which dominates thousands of bootstrap replications (the tests check it equals rliable's)."""
    return iqm_per_point(scores[..., None])


def iqm_band(values: np.ndarray) -> tuple:
    """(seeds, points) curves of one arm -> (iqm, low, high), each (points,): the IQM over seeds at each point with
    its stratified-bootstrap percentile interval (interval_estimates over rliable's (runs, 1 task, points) layout;
    each point's seeds are resampled on their own, so the band is pointwise). NaN at points where any seed lacks
    data; low and high NaN throughout with fewer than 2 seeds (one seed has no interval)."""
    center, low, high = (np.full(values.shape[1], np.nan) for _ in range(3))
    full = ~np.isnan(values).any(axis=0)
    if not full.any():
        return center, low, high
    if len(values) < 2:
        center[full] = iqm_per_point(values[:, None, full])
        return center, low, high
    center[full], low[full], high[full] = interval_estimates(values[:, None, full], iqm_per_point)
    return center, low, high


def probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """rliable.metrics.probability_of_improvement for one task, P(X > Y) + P(X = Y) / 2 over all pairs of runs,
    vectorized instead of a Mann-Whitney U test per call (the tests check it equals rliable's)."""
    x, y = scores_x[:, 0][:, None], scores_y[:, 0][None, :]
    return float(np.mean((x > y) + 0.5 * (x == y)))


def iqm_interval(arm: Arm, metric: str) -> tuple:
    return interval_estimate(score_matrix(arm, metric), iqm)


def improvement_interval(x: Arm, y: Arm, metric: str) -> tuple:
    """P(X better than Y) over the seeds (ties count half) with its stratified-bootstrap interval: P(X > Y), or
    P(X < Y) where fewer is better."""
    sign = -1.0 if metric in FEWER_IS_BETTER else 1.0
    return interval_estimate((sign * score_matrix(x, metric), sign * score_matrix(y, metric)),
                             probability_of_improvement)


def fmt_interval(point, low, high, metric: str = "") -> str:
    if metric == "steps_to_half":
        return f"{point / 1e3:.0f}k [{low / 1e3:.0f}k, {high / 1e3:.0f}k]"
    return f"{point:.3f} [{low:.3f}, {high:.3f}]"


def comparison_sentence(metric: str, x_name: str, x_scores: np.ndarray, y_name: str, y_scores: np.ndarray,
                        iqm_x: tuple, iqm_y: tuple, poi: tuple) -> str:
    """In words: no separation verdict where both arms are at the ceiling or at the floor, or where either has fewer
    than VERDICT_MIN_SEEDS complete seeds; otherwise whether the IQM intervals separate and whether P(X > Y)'s
    interval excludes 0.5. poi is P(X better than Y) (improvement_interval); where fewer is better it reads P(X < Y)."""
    name, label = METRICS[metric], improvement_label(metric)
    x_scores, y_scores = np.ravel(x_scores), np.ravel(y_scores)
    both = np.concatenate([x_scores, y_scores])
    bounded = metric not in FEWER_IS_BETTER  # success rates have a ceiling and a floor; steps do not
    if bounded and both.min() >= CEILING:
        return f"{name}: both arms at the ceiling (every complete seed >= {CEILING}): no separation verdict."
    if bounded and both.max() <= FLOOR:
        return f"{name}: both arms at the floor (every complete seed <= {FLOOR}): no separation verdict."
    if min(len(x_scores), len(y_scores)) < VERDICT_MIN_SEEDS:
        return (f"{name}: no separation verdict below {VERDICT_MIN_SEEDS} complete seeds per arm "
                f"(n = {len(x_scores)}, {len(y_scores)}).")
    (px, lx, hx), (py, ly, hy), (_, low, high) = iqm_x, iqm_y, poi
    iqm_separate = hx < ly or hy < lx
    poi_separate = low > 0.5 or high < 0.5
    if not (iqm_separate or poi_separate):
        return f"{name}: the IQM intervals overlap and {label}'s interval contains 0.5: not separated."
    if poi_separate:
        ahead = x_name if low > 0.5 else y_name
    else:
        ahead = x_name if (px < py if metric in FEWER_IS_BETTER else px > py) else y_name
    iqm_text = "the IQM intervals do not overlap" if iqm_separate else "the IQM intervals overlap"
    poi_text = f"{label}'s interval excludes 0.5" if poi_separate else f"{label}'s interval contains 0.5"
    verdict = ("separated on both" if iqm_separate and poi_separate
               else f"separated on {label} only" if poi_separate else "separated on the IQM only")
    return f"{name}: {ahead} ahead; {iqm_text} and {poi_text}: {verdict}."


# ---------------------------------------------------------------------------------------------------------------
# The report


@dataclass
class Section:
    key: str  # "2", "3", "4" or "other"
    arms_by_env: dict  # env_id -> [Arm] in the table's row order


def build_sections(arms: dict, reference: list[dict]) -> list[Section]:
    names = section_exp_names(reference)
    known = {name for table in names.values() for name in table}
    envs = sorted({env for env, _ in arms}, key=task_sort_key)
    sections, shown = [], set()
    for key in ["2", "3", "4", "other"]:
        # other runs come with Table 2's arms on the same task, for comparison
        order = (names[key] if key in names
                 else sorted({exp for _, exp in arms if paper_exp_name(exp) not in known}) + names["2"])
        by_env = {}
        for env in envs:
            # each paper cell, then the same cell in another regime
            present = [arms[(env, name)] for exp in order for name in (exp, *(exp + s for s in REGIME_SUFFIXES))
                       if (env, name) in arms and (key != "other" or name == exp or paper_exp_name(name) == exp)]
            # a later table appears for a task only with an arm no earlier table showed (not Table 2's arms again)
            if any((env, arm.exp_name) not in shown for arm in present):
                by_env[env] = present
                shown.update((env, arm.exp_name) for arm in present)
        if by_env:
            sections.append(Section(key, by_env))
    return sections


def table_rows(section: Section, reference: list[dict]) -> list:
    """One row per (arm, paper row) in the paper's order; arms the paper lacks get a row with empty paper cells."""
    rows = []
    for env_id, arms in section.arms_by_env.items():
        for arm in arms:
            paper = [r for r in reference if r["table"] == section.key and r["task"] == arm.task
                     and r["exp_name"] == paper_exp_name(arm.exp_name)] or [None]
            for p in paper:
                mean, std = mean_std(arm.scores("final_success"))
                auc_mean, auc_std = mean_std(arm.scores("auc"))
                rows.append([
                    env_id, arm.exp_name, p["label"] if p else "", n_cell(arm), total_steps_cell(arm),
                    masked_cell(arm), fmt_pm(mean, std), fmt_pm(p["final_mean"], p["final_std"]) if p else "",
                    fmt_pm(auc_mean, auc_std), fmt(p["auc"]) if p else "",
                    steps_to_half_cell(arm), fmt_steps(p["steps_to_half"]) if p and p["steps_to_half"] else "",
                    ("" if p is None or p["n"] is None else f"{p['n']:.0f}") + (f"; {p['note']}" if p and p["note"] else ""),
                ])
    return rows


TABLE_HEADER = ["task", "exp_name", "paper row", "n", "steps", "masked after ramp", "final success", "paper final",
                "AUC", "paper AUC", "steps to 0.5", "paper steps", "paper n / note"]

CONVENTIONS = """\
How to read this report:
- An arm (a cell of a table) is one (env_id, exp_name) with one set of settings; n counts its complete runs (seeds).
  Only complete runs (with `summary.json`) enter means, tables, curve bands and statistics; incomplete runs are
  listed below and drawn dashed, labelled.
- A cell's settings are those of most of its complete runs (config.json without seed, runs_dir, cuda, threads and
  the metadata; ties: the longest total_timesteps). A run with other settings (a smoke run, a changed flag), or one
  that lacks the success definition's fields, is set apart: listed below with the reason, in no cell ("+k set
  apart" in n). **steps**: the environment steps the cell's complete runs trained (`summary.json` `total_steps`).
- **masked after ramp**: the budget actually spent: the mean over complete seeds of `metrics.csv` `mask_fraction` over
  the iterations at or after the ramp's end (`mask_warmup_end`), beside the configured `mask_budget`; n/a for an arm
  that masks nothing (no `mask_fraction`) or whose runs end before the ramp does. Boost masks no bin: 0.
- **final success**: `summary.json` `final_success` (success rate of the last 100 training episodes);
  **AUC**: mean of the success curve over iterations (normalized area, 0..1); **steps to 0.5**: first step at which
  the success curve reaches 0.5 (mean over the seeds that reached it; "k/n reached" otherwise). Under the last-step
  definition they are `final_success_last_step`, `auc_last_step` and `steps_to_half_last_step`.
- mean ± std is over seeds with the population std (ddof=0), the convention the paper's numbers imply.
- The paper's numbers (`paper_reference.csv`) are beside ours as published; the paper ran MetaWorld `-v2` tasks,
  these runs `-v3`. Curves: each run interpolated onto a common grid of {points} environment-step points between its
  first and last logged step (never extrapolated); an arm's mean ± std is drawn where all its complete seeds have data.
- The success IQM figure after each mean ± std success figure shows, at each grid point where all of an arm's
  complete seeds have data, the interquartile mean over them (25% trimmed mean; with 3 seeds it equals the mean)
  with a {ci} stratified-bootstrap percentile band (rliable, {reps} replications, seed {seed}; each point's seeds
  are resampled on their own, so the band is pointwise). Incomplete runs are not in it; an arm with one complete
  seed is that run's curve, without a band. A bootstrap cannot reach beyond the observed seeds: the band never
  leaves their range and has zero width where they agree, so with fewer than about 5 seeds it is too narrow (as
  for the statistics).
- Policy entropy figures show the unmasked policy's entropy (`policy_entropy`), comparable across arms; masked runs
  written before the arms logged it (a `mask_fraction` column without `sampling_entropy`) recorded the masked
  sampling distribution's there, and are left out of those figures (named under each).
- Statistics give a separation verdict for a pair of arms only when each has at least {min_seeds} complete seeds, and
  none where both are at the ceiling (every complete seed of both >= {ceiling}) or at the floor (all <= {floor}).
- A fine-tuning run (one that started from a `pretrain_bc.py` file, `--init-from`) has its success curves begin at
  step 0 at the pretrained policy's sampled success, from the file's recipe (config.json "pretrained").
"""


def incomplete_table(runs: list[Run], success: SuccessDefinition) -> str:
    rows = []
    for run in sorted(runs, key=lambda r: str(r.path)):
        steps = run.steps
        last = curve(run, success.curve)
        rows.append([f"`{run.path.name}`", run.env_id, run.exp_name, run.seed,
                     f"{int(steps[-1]):,}" if len(steps) else "0", f"{int(run.config.get('total_timesteps', 0)):,}",
                     fmt(last[-1]) if len(last) else ""])
    return md_table(["run folder", "env_id", "exp_name", "seed", "last logged step", "total_timesteps",
                     f"last {success.curve}"], rows)


def set_apart_table(entries: list[SetApart]) -> str:
    rows = [[f"`{e.run.path.name}`", e.run.env_id, e.run.exp_name, e.run.seed,
             "complete" if e.run.complete else "incomplete", f"{e.run.total_steps:,}", e.reason]
            for e in sorted(entries, key=lambda e: str(e.run.path))]
    return md_table(["run folder", "env_id", "exp_name", "seed", "state", "steps", "why"], rows)


def compared_pairs(sections: list[Section]) -> dict:
    """env_id -> the pairs of arms (each with at least 2 complete seeds) that share a table, each pair once."""
    pairs = {}
    for section in sections:
        for env_id, arms in section.arms_by_env.items():
            env_pairs = pairs.setdefault(env_id, [])
            for x, y in itertools.combinations([arm for arm in arms if arm.n >= 2], 2):
                if (x, y) not in env_pairs and (y, x) not in env_pairs:
                    env_pairs.append((x, y))
    return pairs


def statistics(arms: dict, sections: list[Section]) -> list[str]:
    """Per task: each arm's IQM with its 95% interval, then every pair of arms that share a table."""
    lines = []
    pairs = compared_pairs(sections)
    for env_id in sorted({env for env, _ in arms}, key=task_sort_key):
        in_tables = [arm for s in sections for arm in s.arms_by_env.get(env_id, [])]
        env_arms = list(dict.fromkeys(in_tables + [arm for (env, _), arm in arms.items() if env == env_id]))
        ready = [arm for arm in env_arms if arm.n >= 2]
        lines.append(f"### {env_id}\n")
        skipped = [arm.exp_name for arm in env_arms if arm.n < 2]
        if skipped:
            lines.append(f"Left out (fewer than 2 complete seeds): {', '.join(skipped)}.\n")
        if not ready:
            continue
        intervals = {(arm.exp_name, m): iqm_interval(arm, m) for arm in ready for m in METRICS}
        lines.append(md_table(["exp_name", "n"] + [f"IQM {name} [95% CI]" for name in METRICS.values()],
                              [[arm.exp_name, arm.n] + [fmt_interval(*intervals[(arm.exp_name, m)], m) for m in METRICS]
                               for arm in ready]))
        rows = []
        for x, y in pairs.get(env_id, []):
            cells, sentences = [x.exp_name, y.exp_name], []
            for metric in METRICS:
                poi = improvement_interval(x, y, metric)
                cells.append(fmt_interval(*poi))
                sentences.append(comparison_sentence(metric, x.exp_name, score_matrix(x, metric), y.exp_name,
                                                     score_matrix(y, metric), intervals[(x.exp_name, metric)],
                                                     intervals[(y.exp_name, metric)], poi))
            rows.append(cells + [" ".join(sentences)])
        if rows:
            lines.append(md_table(["X", "Y"] + [f"{improvement_label(m)}, {name} [95% CI]" for m, name in METRICS.items()]
                                  + ["in words"], rows))
    return lines


# ---------------------------------------------------------------------------------------------------------------
# The vocabulary: one arm across K (the paper's Table 3 varies K for the utility mask only; the controls, vanilla and
# random at the same K, say whether a drop is the vocabulary's or the mask's)

REFERENCE_K = 64  # the paper's default vocabulary; a family without it is read against its smallest K
VOCABULARY_METRICS = ("final_success", "auc")  # what the drops are measured on (steps to 0.5 is censored)


@dataclass
class Family:
    """The cells of one task whose settings differ only in num_bins (and exp_name): one arm across vocabularies."""

    env_id: str
    arms: list  # ascending K; each with at least 2 complete seeds

    @property
    def reference(self) -> Arm:
        """The cell at REFERENCE_K (else the smallest K); of several at that K, the one with the most seeds."""
        ks = [arm.num_bins()[0] for arm in self.arms]
        k = REFERENCE_K if REFERENCE_K in ks else min(ks)
        return max((arm for arm in self.arms if arm.num_bins()[0] == k), key=lambda arm: arm.n)

    def at(self, k: int) -> Arm | None:
        at_k = [arm for arm in self.arms if arm.num_bins()[0] == k and arm is not self.reference]
        return max(at_k, key=lambda arm: arm.n) if at_k else None


def family_key(arm: Arm) -> str:
    """What an arm computes apart from its vocabulary: its cell's settings without exp_name and num_bins (the arms'
    settings differ in their fields, so vanilla, random and each utility variant fall in different families)."""
    settings = {k: v for k, v in arm.complete[0].settings.items() if k not in ("exp_name", "num_bins")}
    return json.dumps(settings, sort_keys=True)


def vocabulary_families(arms: dict) -> list[Family]:
    """The families with at least two vocabularies, each K's cells with at least 2 complete seeds (for intervals)."""
    groups = {}
    for (env_id, _), arm in sorted(arms.items(), key=lambda item: (task_sort_key(item[0][0]), item[0][1])):
        if arm.n >= 2 and len(arm.num_bins()) == 1:
            groups.setdefault((env_id, family_key(arm)), []).append(arm)
    families = [Family(env_id, sorted(members, key=lambda arm: (arm.num_bins()[0], arm.exp_name)))
                for (env_id, _), members in groups.items()]
    return [family for family in families if len({arm.num_bins()[0] for arm in family.arms}) >= 2]


def iqm_difference(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return iqm(x) - iqm(y)


def drop_difference(x_ref: np.ndarray, x_k: np.ndarray, y_ref: np.ndarray, y_k: np.ndarray) -> np.ndarray:
    """How much more the vocabulary costs arm X than arm Y: (X's IQM at the reference K - at K) - (Y's likewise)."""
    return (iqm(x_ref) - iqm(x_k)) - (iqm(y_ref) - iqm(y_k))


def drop_sentence(name: str, k: int, x: str, y: str, cells: list, point: float, low: float, high: float) -> str:
    """In words: whether K costs family X more or less than family Y, with the seed rule of the other verdicts."""
    if min(len(c) for c in cells) < VERDICT_MIN_SEEDS:
        return f"{name}: no verdict below {VERDICT_MIN_SEEDS} complete seeds in each of the four cells."
    if low <= 0 <= high:
        return f"{name}: the interval contains 0: these runs cannot tell whether K = {k} costs {x} more than {y}."
    return f"{name}: K = {k} costs {x if low > 0 else y} more (the interval excludes 0)."


def vocabulary_section(arms: dict, sections: list[Section]) -> list[str]:
    """Per task and family: each K against the family's reference K (the drop, IQM difference and P(X > Y)); the
    families at each K against each other where no table compared them; and whether a K costs one family more than
    another (the difference of their drops)."""
    families = vocabulary_families(arms)
    if not families:
        return []
    compared = {frozenset((x.exp_name, y.exp_name)) for pairs in compared_pairs(sections).values() for x, y in pairs}
    names = {"final_success": "final success", "auc": "AUC"}
    lines = [
        "## Vocabulary: each arm across K\n",
        f"A family is the cells of one task whose settings differ only in the vocabulary (num_bins) and the name: one "
        f"arm across K, read against its cell at K = {REFERENCE_K} (else its smallest K). Drop = the IQM at the "
        f"reference K minus the IQM at K (positive: the larger vocabulary loses), with a {CI_SIZE:.0%} "
        f"stratified-bootstrap interval (each cell's seeds resampled on their own); P(X > Y) as in the statistics. "
        f"Only cells with at least 2 complete seeds; verdicts need {VERDICT_MIN_SEEDS} in every cell involved. "
        f"Whether a vocabulary costs one arm more than another is the difference of their drops, which is what "
        f"separates a mask's failure from the vocabulary's: a K that hurts the controls as much as the mask is the "
        f"vocabulary's.\n",
    ]
    for env_id in sorted({f.env_id for f in families}, key=task_sort_key):
        env_families = [f for f in families if f.env_id == env_id]
        lines.append(f"### {env_id}\n")
        rows = []
        for family in env_families:
            ref = family.reference
            for arm in family.arms:
                cells = [ref.exp_name, arm.num_bins()[0], arm.exp_name, arm.n]
                cells += [fmt_interval(*iqm_interval(arm, m)) for m in VOCABULARY_METRICS]
                if arm is ref:
                    rows.append(cells + ["reference"] + [""] * (2 * len(VOCABULARY_METRICS)))
                    continue
                sentences = []
                for metric in VOCABULARY_METRICS:
                    cells.append(fmt_interval(*interval_estimate((score_matrix(ref, metric), score_matrix(arm, metric)),
                                                                 iqm_difference)))
                for metric in VOCABULARY_METRICS:
                    poi = improvement_interval(arm, ref, metric)
                    cells.append(fmt_interval(*poi))
                    sentences.append(comparison_sentence(metric, arm.exp_name, score_matrix(arm, metric),
                                                         ref.exp_name, score_matrix(ref, metric),
                                                         iqm_interval(arm, metric), iqm_interval(ref, metric), poi))
                rows.append(cells + [" ".join(sentences)])
        lines.append(md_table(["family (reference cell)", "K", "cell", "n"]
                              + [f"IQM {names[m]} [95% CI]" for m in VOCABULARY_METRICS]
                              + [f"drop, {names[m]} [95% CI]" for m in VOCABULARY_METRICS]
                              + [f"P(X > reference), {names[m]} [95% CI]" for m in VOCABULARY_METRICS]
                              + ["in words"], rows))
        ks = sorted({arm.num_bins()[0] for f in env_families for arm in f.arms})
        same_k, drops = [], []
        for k in ks:
            for fx, fy in itertools.combinations([f for f in env_families if any(a.num_bins()[0] == k for a in f.arms)], 2):
                x = next(a for a in fx.arms if a.num_bins()[0] == k and (a is fx.reference or a is fx.at(k)))
                y = next(a for a in fy.arms if a.num_bins()[0] == k and (a is fy.reference or a is fy.at(k)))
                if frozenset((x.exp_name, y.exp_name)) not in compared:
                    cells, sentences = [k, x.exp_name, y.exp_name], []
                    for metric in VOCABULARY_METRICS:
                        poi = improvement_interval(x, y, metric)
                        cells.append(fmt_interval(*poi))
                        sentences.append(comparison_sentence(metric, x.exp_name, score_matrix(x, metric), y.exp_name,
                                                             score_matrix(y, metric), iqm_interval(x, metric),
                                                             iqm_interval(y, metric), poi))
                    same_k.append(cells + [" ".join(sentences)])
                xk, yk = fx.at(k), fy.at(k)
                if xk is None or yk is None:
                    continue
                ref_x, ref_y = fx.reference, fy.reference
                if ref_x.num_bins() != ref_y.num_bins():
                    continue
                cells, sentences = [k, xk.exp_name, yk.exp_name], []
                for metric in VOCABULARY_METRICS:
                    matrices = [score_matrix(a, metric) for a in (ref_x, xk, ref_y, yk)]
                    estimate = interval_estimate(tuple(matrices), drop_difference)
                    cells.append(fmt_interval(*estimate))
                    sentences.append(drop_sentence(names[metric], k, fx.reference.exp_name, fy.reference.exp_name,
                                                   matrices, *estimate))
                drops.append(cells + [" ".join(sentences)])
        if same_k:
            lines.append("At the same K, across families (pairs no table above compares):\n")
            lines.append(md_table(["K", "X", "Y"] + [f"P(X > Y), {names[m]} [95% CI]" for m in VOCABULARY_METRICS]
                                  + ["in words"], same_k))
        if drops:
            lines.append("Does the larger vocabulary cost X's family more than Y's? Drop of X minus drop of Y "
                         "(positive: X loses more):\n")
            lines.append(md_table(["K", "X", "Y"] + [f"drop X - drop Y, {names[m]} [95% CI]" for m in VOCABULARY_METRICS]
                                  + ["in words"], drops))
    return lines



# The action heads: section 5 explains the K = 256 drop by "fine, unordered discretization"; a head that knows the
# bins' order (ordinal, Poisson) tests it. Each arm with such a head is read against the same arm with the categorical
# head, at its own K and at the reference K, and by the share of the categorical head's loss at its K that it removes.

CATEGORICAL_HEAD = "categorical"


def action_head(arm: Arm) -> str:
    return arm.complete[0].settings["action_head"]  # runs recorded before the heads existed read as categorical


def head_family_key(arm: Arm) -> str:
    """What an arm computes apart from its vocabulary and its head: one arm (vanilla, random, a utility variant)
    across K and heads."""
    settings = {k: v for k, v in arm.complete[0].settings.items()
                if k not in ("exp_name", "num_bins", "action_head")}
    return json.dumps(settings, sort_keys=True)


def share_of_loss_removed(reference: np.ndarray, categorical_k: np.ndarray, head_k: np.ndarray) -> np.ndarray:
    """Of the categorical head's loss at K (its IQM at the reference K minus at K), the share the head gets back:
    (head's IQM at K - categorical's at K) / that loss; 1 = as good as the categorical head at the reference K."""
    return (iqm(head_k) - iqm(categorical_k)) / (iqm(reference) - iqm(categorical_k))


def head_rows(env_arms: list) -> list:
    """(reference, categorical at K or None, the head's cell) for each non-categorical cell whose arm has a
    categorical cell at the reference K (else its smallest K); cells with at least 2 complete seeds and one K."""
    groups = {}
    for arm in env_arms:
        if arm.n >= 2 and len(arm.num_bins()) == 1:
            groups.setdefault(head_family_key(arm), []).append(arm)
    rows = []
    for members in groups.values():
        categorical = {}
        for arm in members:
            if action_head(arm) == CATEGORICAL_HEAD:
                k = arm.num_bins()[0]
                if k not in categorical or arm.n > categorical[k].n:
                    categorical[k] = arm
        if not categorical:
            continue
        reference = categorical[REFERENCE_K if REFERENCE_K in categorical else min(categorical)]
        for arm in sorted(members, key=lambda a: (action_head(a), a.num_bins()[0], a.exp_name)):
            if action_head(arm) != CATEGORICAL_HEAD:
                rows.append((reference, categorical.get(arm.num_bins()[0]), arm))
    return rows


def heads_section(arms: dict) -> list[str]:
    """Per task: each structured-head cell against its arm's categorical cell at the same K and at the reference K
    (P(X > Y) and the separation verdict), and the share of the categorical head's loss at that K it removes."""
    names = {"final_success": "final success", "auc": "AUC"}
    by_env = {}
    for (env_id, _), arm in arms.items():
        by_env.setdefault(env_id, []).append(arm)
    tables = {env_id: head_rows(env_arms) for env_id, env_arms in by_env.items()}
    if not any(tables.values()):
        return []
    lines = [
        "## Action heads: each arm against itself with the categorical head\n",
        f"Cells whose settings differ from a categorical cell only in the head (action_head), the vocabulary and the "
        f"name, read against that arm's categorical cell at the same K and at K = {REFERENCE_K} (else its smallest "
        f"categorical K): P(X > Y) with the separation verdict of the statistics, and the share of the categorical "
        f"head's loss at K (its IQM at the reference K minus at K) that the head removes, (head's IQM at K - "
        f"categorical's at K) / that loss, with a {CI_SIZE:.0%} stratified-bootstrap interval: 1 means the head at K "
        f"is as good as the categorical head at the reference K; shown where the categorical loss's interval "
        f"excludes 0.\n",
    ]
    for env_id in sorted(tables, key=task_sort_key):
        if not tables[env_id]:
            continue
        lines.append(f"### {env_id}\n")
        rows = []
        for reference, categorical_k, arm in tables[env_id]:
            cells = [reference.exp_name, action_head(arm), arm.num_bins()[0], arm.exp_name, arm.n]
            cells += [fmt_interval(*iqm_interval(arm, m)) for m in VOCABULARY_METRICS]
            sentences = []
            for label, other in (("same K", categorical_k), (f"K = {reference.num_bins()[0]}", reference)):
                for metric in VOCABULARY_METRICS:
                    if other is None:
                        cells.append("no categorical cell")
                        continue
                    poi = improvement_interval(arm, other, metric)
                    cells.append(fmt_interval(*poi))
                    sentences.append(f"against {other.exp_name} ({label}), " + comparison_sentence(
                        metric, arm.exp_name, score_matrix(arm, metric), other.exp_name, score_matrix(other, metric),
                        iqm_interval(arm, metric), iqm_interval(other, metric), poi))
            for metric in VOCABULARY_METRICS:
                if categorical_k is None or categorical_k is reference:
                    cells.append("")
                    continue
                matrices = (score_matrix(reference, metric), score_matrix(categorical_k, metric))
                loss = interval_estimate(matrices, iqm_difference)
                cells.append(fmt_interval(*interval_estimate(matrices + (score_matrix(arm, metric),),
                                                             share_of_loss_removed))
                             if loss[1] > 0 else "no loss to remove")
            rows.append(cells + [" ".join(sentences)])
        lines.append(md_table(["arm (categorical reference cell)", "head", "K", "cell", "n"]
                              + [f"IQM {names[m]} [95% CI]" for m in VOCABULARY_METRICS]
                              + [f"P(X > categorical at K), {names[m]} [95% CI]" for m in VOCABULARY_METRICS]
                              + [f"P(X > reference), {names[m]} [95% CI]" for m in VOCABULARY_METRICS]
                              + [f"share of the loss removed, {names[m]} [95% CI]" for m in VOCABULARY_METRICS]
                              + ["in words"], rows))
    return lines


# ---------------------------------------------------------------------------------------------------------------
# Fine-tuning: cells whose runs started from a pretrain_bc.py file (config.json's "pretrained")


FINETUNE_PART = re.compile(r"_ft-[^_]+(?:_cw\d+)?")  # grids.fine_tuned's part of an exp_name: _ft-{recipe}[_cw{N}]


def from_scratch_name(exp_name: str) -> str:
    """The from-scratch cell of a fine-tuning cell: its exp_name without the _ft-... part (ppo_vanilla_k256_ft-d2_cw5_
    no-norm-obs -> ppo_vanilla_k256_no-norm-obs, the same arm, vocabulary and regime trained from scratch)."""
    return FINETUNE_PART.sub("", exp_name, count=1)


def steps_to_reach(run: Run, column: str, level: float) -> float | None:
    """The first logged step (0: the pretrained policy) at which a run's success curve reaches `level`; None if never."""
    reached = np.flatnonzero(curve(run, column) >= level)
    return float(run.steps[reached[0]]) if len(reached) else None


def finetune_section(arms: dict) -> list[str]:
    """Each fine-tuning cell: the pretrained policy it started from and its success there (the curves' step-0 point),
    where fine-tuning took it, and against the same arm from scratch (its cell without the _ft- part, when present):
    P(X > Y) on final success, and how many steps the fine-tuning runs took to reach the from-scratch cell's final IQM."""
    tuned = sorted((arm for arm in arms.values() if arm.complete and "pretrained" in arm.complete[0].config),
                   key=lambda a: (task_sort_key(a.env_id), a.exp_name))
    if not tuned:
        return []
    success = tuned[0].success
    definition = "any" if success.name == "any" else "last"
    rows = []
    for arm in tuned:
        recipe = arm.complete[0].config["pretrained"]
        start = mean_std([run.config["pretrained"]["success"]["sampled"][definition] for run in arm.complete])
        scratch = arms.get((arm.env_id, from_scratch_name(arm.exp_name)))
        cells = [arm.env_id, arm.exp_name, n_cell(arm),
                 f"{recipe['demos']} demos, {recipe['action_head']}, K = {recipe['num_bins']}, noise {recipe['action_noise']:g}",
                 fmt(start[0]), fmt_interval(*iqm_interval(arm, "final_success")), fmt_interval(*iqm_interval(arm, "auc"))]
        if scratch is None or not scratch.complete:
            rows.append(cells + ["none in this report", "", "", ""])
            continue
        level = iqm_interval(scratch, "final_success")[0]
        reached = [steps for run in arm.complete if (steps := steps_to_reach(run, success.curve, level)) is not None]
        cells += [f"{scratch.exp_name} (n={scratch.n}, {total_steps_cell(scratch)} steps)", fmt(level),
                  (f"{fmt_steps(float(np.median(reached)))} ({len(reached)}/{arm.n} reached)" if reached
                   else f"never (0/{arm.n})"),
                  fmt_interval(*improvement_interval(arm, scratch, "final_success"))]
        rows.append(cells)
    return [
        "## Fine-tuning from a pretrained policy\n",
        f"Cells whose runs started from a `pretrain_bc.py` file (`--init-from`; config.json records its recipe). Their "
        f"curves begin at step 0 at the pretrained policy's sampled {success.noun}, measured by `pretrain_bc.py` on "
        f"its own evaluation episodes (the summary's AUC and steps to 0.5 are over training alone). Each is read "
        f"against the same arm trained from scratch (its exp_name without the `_ft-` part) where this report has it: "
        f"how many steps the fine-tuning runs took to reach that cell's final IQM (the median over seeds; 0 when the "
        f"pretrained policy starts there), and P(X > Y) on final success ({CI_SIZE:.0%} interval).\n",
        md_table(["task", "cell", "n", "pretrained from", f"pretrained {success.noun}", "IQM final success [95% CI]",
                  "IQM AUC [95% CI]", "from scratch (cell)", "its IQM final success", "steps to reach it",
                  "P(fine-tuned > from scratch), final [95% CI]"], rows)]


def entropy_note(arms: list) -> str:
    """Under an entropy figure: what it shows, and which runs it leaves out."""
    left_out = entropy_left_out(arms)
    text = ("Policy entropy: the unmasked policy's (`policy_entropy`), comparable across arms; the masked arms' "
            "sampling distribution is in `sampling_entropy`.")
    if left_out:
        seeds = {}
        for run in left_out:
            seeds.setdefault(run.exp_name, []).append(str(run.seed))
        names = ", ".join(f"{name} (seed{'s' * (len(s) > 1)} {', '.join(s)})" for name, s in seeds.items())
        text += (f" Left out: {names}: written before the masked arms logged the unmasked entropy, their "
                 f"`policy_entropy` is the masked sampling distribution's, not comparable.")
    return text + "\n"


def write_text_atomically(path: Path, text: str):
    """A reader (or a crash) never sees half a report.md."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def code_of(run: Run) -> str:
    """Which code made a run: the hash of the sources it ran (config.json code_sha256, the same on every machine);
    runs written before it was recorded have none."""
    sha = run.config.get("code_sha256")
    return f"`{sha[:12]}`" if sha else "no code hash"


def revision_of(run: Run) -> str:
    revision = str(run.config.get("git_revision", "unknown"))
    if revision != "unknown":
        revision = revision[:7] + ("-dirty" if revision.endswith("-dirty") else "")  # older runs' "-dirty" suffix
    changes = run.config.get("git_changes")
    return revision + (f" + uncommitted {', '.join(changes['files'])}" if changes else "")


def code_provenance(arms: dict) -> list[str]:
    """Per cell, the code its runs came from: the sources' hash with the commits (and uncommitted changes) that
    carried it, and how many runs each; a cell whose complete runs ran different code is marked."""
    rows, mixed = [], 0
    for (env_id, exp_name), arm in sorted(arms.items()):
        runs = arm.complete + arm.incomplete
        codes = {}
        for run in runs:
            codes.setdefault(code_of(run), []).append(revision_of(run))
        parts = []
        for code, revisions in codes.items():
            counts = ", ".join(f"{r} x{revisions.count(r)}" for r in dict.fromkeys(revisions))
            parts.append(f"{code} ({len(revisions)} run{'s' * (len(revisions) > 1)}: {counts})")
        hashes = {code_of(run) for run in arm.complete}
        if len(hashes) > 1 and "no code hash" not in hashes:
            mark = "**mixed code**"
        elif len({revision_of(run) for run in arm.complete}) > 1 and "no code hash" in hashes:
            mark = "**mixed revisions** (no code hash: the code may or may not differ)"
        else:
            mark = ""
        mixed += bool(mark)
        rows.append([env_id, exp_name, str(len(runs)), "; ".join(parts), mark])
    return ["## Code the runs came from\n",
            "Per cell (complete and incomplete runs): `code_sha256` from config.json, the hash of the sources a run "
            "ran (the same on every machine), with the git commits that carried it (\"unknown\": not run from the "
            "top level of a git repository; \"-dirty\": an older run's mark of uncommitted changes) and any "
            "uncommitted changes. A marked cell averages runs of different code, or of different revisions: read "
            "it as such. A cell's seeds are independent samples, not replayable runs: the same seed replays exactly "
            "only on the machine that ran it (float differences between CPUs change the first update in the last "
            "digits and the trajectories part after it)."
            + (f" {mixed} cells are marked." if mixed else " Every cell's complete runs ran one code.") + "\n",
            md_table(["task", "exp_name", "runs", "code (runs: commits)", ""], rows)]


def write_report(runs: list[Run], runs_dirs: list[Path], out_dir: Path, reference: list[dict],
                 success: SuccessDefinition) -> Path:
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.md"
    path.unlink(missing_ok=True)  # an earlier report must not pass for this one if this one fails half-way
    for stale in (out_dir / "figures").glob("*.png"):  # figures of an earlier report that this one may not redraw
        stale.unlink()
    arms, set_apart = group_runs(runs, success)
    sections = build_sections(arms, reference)
    incomplete = [run for arm in arms.values() for run in arm.incomplete]
    n_complete = sum(arm.n for arm in arms.values())
    figure = lambda path, alt: f"![{alt}]({path})\n"  # noqa: E731
    drawn = {}

    option = "" if success.name == "any" else f" --success-definition {success.name}"
    lines = [
        "# Results report\n",
        f"Generated by `python report.py --runs-dir {' '.join(map(str, runs_dirs))} --out-dir {out_dir}{option}` from {len(runs)} run "
        f"folders: {n_complete} complete and {len(incomplete)} incomplete in {len(arms)} arms, {len(set_apart)} set "
        f"apart.\n",
        f"**Success definition: {success.name}**: {success.meaning}. Every table, figure and statistic below uses it"
        + ("." if success.name == "any" else "; the paper's numbers beside ours are as published (the paper does not "
           "state its definition; MetaWorld's protocol is any step).") + "\n",
        CONVENTIONS.format(points=GRID_POINTS, min_seeds=VERDICT_MIN_SEEDS, ceiling=CEILING, floor=FLOOR,
                           ci=f"{CI_SIZE:.0%}", reps=BOOTSTRAP_REPS, seed=BOOTSTRAP_SEED),
    ]
    if set_apart:
        lines += ["## Runs set apart\n",
                  "In no cell, mean, curve or statistic: each lacks the fields of this report's success definition, "
                  "or its settings differ from those of its cell (named).\n",
                  set_apart_table(set_apart)]
    if incomplete:
        lines += ["## Incomplete runs\n",
                  "No `summary.json` yet: not in any mean, table or statistic; dashed lines in the curves.\n",
                  incomplete_table(incomplete, success)]
    for section in sections:
        lines.append(f"## {SECTION_TITLES[section.key]}\n")
        if section.key == "4":
            lines.append("The paper's Table 4 n is its number of seeds reaching at least 300k steps; its budget-sweep "
                         "arms used a separate seed batch (random 25% there: 0.810).\n")
        lines.append(md_table(TABLE_HEADER, table_rows(section, reference)))
        if section.key == "2":
            lines.append(figure(figure_final_across_tasks(section.arms_by_env, out_dir, reference),
                                "final success across tasks"))
        paper_rows = [r for r in reference if r["table"] == section.key]
        prefix = f"table{section.key}" if section.key != "other" else "other"
        for env_id, env_arms in section.arms_by_env.items():
            task_rows = [r for r in paper_rows if r["task"] == paper_task(env_id)]
            key = (env_id, tuple(arm.exp_name for arm in env_arms))  # a table with the same arms reuses the figures
            if key not in drawn:
                drawn[key] = [
                    figure(figure_success(env_arms, env_id, out_dir, prefix), f"{env_id} success"),
                    figure(figure_success_iqm(env_arms, env_id, out_dir, prefix), f"{env_id} success IQM"),
                    figure(figure_efficiency(env_arms, env_id, out_dir, prefix, task_rows),
                           f"{env_id} AUC and steps to 0.5"),
                    figure(figure_entropy(env_arms, env_id, out_dir, prefix), f"{env_id} entropy"),
                    entropy_note(env_arms)]
            lines.append(f"### {env_id}\n")
            lines += drawn[key]

    with_rank = {}
    for arm in arms.values():
        if any("rank_agreement" in run.metrics for run in arm.complete + arm.incomplete):
            with_rank.setdefault(arm.env_id, []).append(arm)
    if with_rank:
        lines.append("## Rank agreement of the utility critic with the policy\n")
        lines.append("Spearman correlation between U(s)[d, :] and the policy's log-probabilities over the bins, "
                     "averaged over dimensions and states (the paper reports about 0.31).\n")
        for env_id, env_arms in with_rank.items():
            lines.append(figure(figure_rank_agreement(env_arms, env_id, out_dir), f"{env_id} rank agreement"))

    masked = [arm for arm in arms.values()
              if any(r.mask_counts is not None and len(r.mask_counts.steps) for r in arm.complete + arm.incomplete)]
    if masked:
        lines.append("## Pruned-token heat maps\n")
        lines.append(f"For each masking arm, per seed (rows; the first {HEATMAP_RUNS}, complete seeds first) and action "
                     "dimension (columns): the fraction of each iteration's rollout steps on which each bin was masked "
                     "(`mask_counts.csv`).\n")
        for arm in masked:
            lines.append(f"### {arm.env_id} / {arm.exp_name}\n")
            lines.append(figure(figure_heatmap(arm, out_dir), f"{arm.exp_name} masked tokens"))

    lines.append("## Statistics: interquartile mean and probability of improvement (rliable)\n")
    lines.append(
        f"Per task, over complete seeds (arms with at least 2), under the {success.name} success definition: the IQM "
        f"(25% trimmed mean; with 3 seeds it equals the mean) with a {CI_SIZE:.0%} stratified-bootstrap percentile "
        f"interval, and for every pair of arms in a table the probability of improvement P(X > Y) (the chance that a "
        f"random seed of X beats one of Y, ties count half; for steps to 0.5, where fewer is better, P(X < Y), and a "
        f"seed that never reached 0.5 counts as its run's length, a lower bound) with its interval; {BOOTSTRAP_REPS} bootstrap "
        f"replications, seed {BOOTSTRAP_SEED}. A bootstrap cannot reach beyond the observed seeds, so with few seeds "
        f"its intervals are too narrow (three seeds of X all above three of Y give P(X > Y) = 1 with interval [1, 1]): "
        f"simulated pairs of identically distributed arms come out separated on either measure about 20% of the time "
        f"at 3 seeds and 10% at 5, on both 11% and 3%. So a pair gets a separation verdict only when both arms have "
        f"at least {VERDICT_MIN_SEEDS} complete seeds, and none where both are at the ceiling (every complete seed of "
        f"both >= {CEILING}) or at the floor (<= {FLOOR}), where the task cannot tell arms apart. \"Separated on "
        f"both\" is the stronger verdict; an overlap means these runs cannot tell the arms apart, not that the arms "
        f"are equal.\n")
    lines += statistics(arms, sections)
    lines += vocabulary_section(arms, sections)
    lines += heads_section(arms)
    lines += finetune_section(arms)
    lines += code_provenance(arms)
    write_text_atomically(path, "\n".join(lines))
    return path


# ---------------------------------------------------------------------------------------------------------------
# Pretraining calibration (--calibration): pretrain_bc.py's recipes, no runs


CALIBRATION_BAND = (0.2, 0.6)  # the fine-tuning issue's rule: sampled last-step success with room both ways
RECIPE_FIELDS = ("env_id", "action_head", "num_bins", "norm_obs", "action_noise", "demos", "seed", "success", "bc_loss")


def read_recipes(folders: list[Path]) -> list[dict]:
    """The recipes pretrain_bc.py writes beside its files ({out}.json), from each folder."""
    recipes = []
    for folder in folders:
        if not folder.is_dir():
            raise ReportError(f"{folder}: no such directory")
        recipes += [read_json(path, RECIPE_FIELDS) for path in sorted(folder.glob("*.json"))]
    if not recipes:
        raise ReportError(f"{', '.join(map(str, folders))}: no pretrain_bc.py recipes (*.json)")
    return recipes


def write_calibration(recipes: list[dict], folders: list[Path], out_dir: Path, success: SuccessDefinition) -> Path:
    """calibration.md: per task, head and recipe, the pretrained policy's success against the number of
    demonstrations (mean ± std over pretraining seeds), the smallest count in CALIBRATION_BAND, and one figure."""
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    definition = "any" if success.name == "any" else "last"
    groups = {}
    for recipe in recipes:
        key = (recipe["env_id"], recipe["action_head"], recipe["num_bins"], recipe["norm_obs"], recipe["action_noise"])
        groups.setdefault(key, {}).setdefault(recipe["demos"], []).append(recipe)
    rows, picks = [], []
    fig, axes = plt.subplots(1, len({k[0] for k in groups}), figsize=(6 * len({k[0] for k in groups}), 4), squeeze=False)
    panels = {env_id: ax for env_id, ax in zip(sorted({k[0] for k in groups}, key=task_sort_key), axes[0])}
    colors = iter(OTHER_COLORS * len(groups))
    for key in sorted(groups, key=lambda k: (task_sort_key(k[0]), k[1:])):
        env_id, head, k, norm_obs, noise = key
        label = f"{head}, K = {k}" + ("" if norm_obs else ", raw observations") + f", noise {noise:g}"
        demos = sorted(groups[key])
        sampled = [mean_std([r["success"]["sampled"][definition] for r in groups[key][d]]) for d in demos]
        greedy = [mean_std([r["success"]["greedy"][definition] for r in groups[key][d]]) for d in demos]
        last = [mean_std([r["success"]["sampled"]["last"] for r in groups[key][d]])[0] for d in demos]
        for d, (mean, std), (g_mean, g_std) in zip(demos, sampled, greedy):
            runs = groups[key][d]
            rows.append([env_id, label, d, len(runs), fmt_pm(mean, std), fmt_pm(g_mean, g_std),
                         fmt(float(np.mean([r["bc_loss"] for r in runs]))), ", ".join(str(r["seed"]) for r in runs)])
        inside = [d for d, value in zip(demos, last) if CALIBRATION_BAND[0] <= value <= CALIBRATION_BAND[1]]
        picks.append(f"- {env_id}, {label}: " + (f"{inside[0]} demonstrations" if inside else "none in the band"))
        color, ax = next(colors), panels[env_id]
        ax.errorbar(demos, [m for m, _ in sampled], yerr=[s for _, s in sampled], color=color, marker="o", capsize=3,
                    label=f"{label}: sampled")
        ax.errorbar(demos, [m for m, _ in greedy], yerr=[s for _, s in greedy], color=color, marker="x", ls="--",
                    capsize=3, label=f"{label}: greedy")
    for env_id, ax in panels.items():
        if success.name == "last":
            ax.axhspan(*CALIBRATION_BAND, color="gray", alpha=0.15, lw=0)
        ax.set_xscale("log")
        ax.set_xticks(sorted({d for key in groups if key[0] == env_id for d in groups[key]}))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("demonstrations (episodes)")
        ax.set_ylabel(f"pretrained policy's {success.noun}")
        ax.set_title(env_id)
        ax.grid(alpha=0.3)
        legend(ax)
    figure = save(fig, out_dir, f"calibration_{success.name}.png")
    option = "" if success.name == "any" else f" --success-definition {success.name}"
    text = [
        "# Pretraining calibration\n",
        f"Generated by `python report.py --calibration {' '.join(map(str, folders))} --out-dir {out_dir}{option}` from "
        f"{len(recipes)} `pretrain_bc.py` recipes. **Success definition: {success.name}**: {success.meaning}. Each "
        f"pretrained policy's success over its recipe's evaluation episodes, mean ± std (ddof=0) over pretraining "
        f"seeds; sampled (the paper's protocol, how fine-tuning starts) and greedy (argmax per dimension).\n",
        md_table(["task", "recipe", "demos", "seeds", f"sampled {success.noun}", f"greedy {success.noun}",
                  "BC token loss (nats)", "seeds used"], rows),
        f"The smallest demonstration count whose mean sampled last-step success lies in {CALIBRATION_BAND[0]}-"
        f"{CALIBRATION_BAND[1]} (the fine-tuning issue's rule: room both ways):\n",
        "\n".join(picks) + "\n",
        f"![calibration]({figure})\n",
    ]
    path = out_dir / "calibration.md"
    write_text_atomically(path, "\n".join(text))
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-dir", default=[Path("runs")], type=Path, nargs="+",
                        help="folder(s) holding the run folders (several: one report over all of them, e.g. a Table 3 "
                             "folder and the study whose K = 64 cells its vocabulary rows are read against)")
    parser.add_argument("--out-dir", default=DEFAULT_OUT_DIR, type=Path,
                        help=f"where report.md and figures/ go (default {DEFAULT_OUT_DIR}/, git-ignored; results/ is "
                             f"for curated, committed reports)")
    parser.add_argument("--success-definition", choices=list(SUCCESS_DEFINITIONS), default="any",
                        help="which episodes count as successes in every table, figure and statistic: any (default, "
                             "MetaWorld's protocol: info['success'] at any step) or last (at the episode's last step)")
    parser.add_argument("--calibration", type=Path, nargs="+",
                        help="instead of runs: tabulate and plot the pretrain_bc.py recipes (*.json) in these folders "
                             "(the fine-tuning issue's pretraining calibration) into OUT_DIR/calibration.md")
    args = parser.parse_args(argv)
    try:
        for folder in (args.out_dir, args.out_dir / "figures"):
            if folder.exists() and not folder.is_dir():  # checked before any work: nothing half-written
                raise ReportError(f"--out-dir: {folder} is a file, not a directory")
        if args.calibration:
            recipes = read_recipes(args.calibration)
            path = write_calibration(recipes, args.calibration, args.out_dir, SUCCESS_DEFINITIONS[args.success_definition])
            print(f"wrote {path} ({len(recipes)} recipes)")
            return 0
        runs = find_runs(*args.runs_dir)
        path = write_report(runs, args.runs_dir, args.out_dir, load_reference(),
                            SUCCESS_DEFINITIONS[args.success_definition])
    except ReportError as e:
        print(f"report.py: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({len(runs)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
