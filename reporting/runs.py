"""Reading run folders: a run's config.json, summary.json (once complete) and its series, metrics.csv and
mask_counts.csv (each CSV plain or gzipped) or, in the compact form of committed results, series.npz (store.py), and
which success definition (which curve and summary fields) a report reads."""

import csv
import gzip
import json
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import grids  # which config.json keys are settings
from reporting import store

RUN_DIR_PATTERN = re.compile(r"^.+__.+__-?\d+$")
SUCCESS_METRICS = ("final_success", "auc", "steps_to_half")  # summary.json fields that depend on the success definition
METRICS_REQUIRED = ("global_step", "success_rate", "policy_entropy")  # metrics columns every run has


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
    "any": SuccessDefinition(
        "any",
        "",
        "success",
        'an episode succeeds if `info["success"]` was 1 at any of its steps, MetaWorld\'s protocol',
    ),
    "last": SuccessDefinition(
        "last", "_last_step", "last-step success", 'an episode succeeds if `info["success"]` was 1 at its last step'
    ),
}


@dataclass
class MaskCounts:
    steps: np.ndarray  # (T,) global step of each iteration
    fractions: np.ndarray  # (T, D, K) fraction of the rollout's steps on which each (dimension, bin) was masked
    every: int = 1  # 1: every iteration; n: the compact form's every nth iteration and the last


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
        return [
            f"{file} {name}"
            for file, name in success.required()
            if (name not in self.metrics if file == "metrics.csv" else self.complete and name not in self.summary)
        ]

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
        with gzip.open(path, "rt", newline="") if path.suffix == ".gz" else open(path, newline="") as f:
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


def read_mask_count_table(path: Path, incomplete: bool) -> dict:
    """mask_counts.csv as {"iteration", "global_step", "masks": (T,), "counts": (T, D, K)}: how many of each
    iteration's rollout steps (masks) masked each (dimension, bin), from its d{dim}_b{bin} columns."""
    table = read_numeric_csv(path, ("global_step", "masks"), incomplete)
    cells = [(name, re.fullmatch(r"d(\d+)_b(\d+)", name)) for name in table]
    cells = [(name, int(m[1]), int(m[2])) for name, m in cells if m]
    if not cells:
        raise ReportError(f"{path}: no d{{dim}}_b{{bin}} columns")
    dims, bins = 1 + max(c[1] for c in cells), 1 + max(c[2] for c in cells)
    counts = np.zeros((len(table["global_step"]), dims, bins))
    for name, d, b in cells:
        counts[:, d, b] = table[name]
    iteration = table.get("iteration", np.arange(1.0, len(counts) + 1))  # a row per iteration, from 1
    return {"iteration": iteration, "global_step": table["global_step"], "masks": table["masks"], "counts": counts}


def mask_counts_from(table: dict, every: int = 1) -> MaskCounts:
    masks = table["masks"][:, None, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        fractions = np.where(masks > 0, table["counts"] / np.where(masks > 0, masks, 1), 0.0)
    return MaskCounts(table["global_step"], fractions, every)


def read_series_file(path: Path) -> tuple[dict, dict | None]:
    """store.read_series, with a damaged or foreign file reported as one line naming it."""
    try:
        return store.read_series(path)
    except store.READ_ERRORS as e:
        raise ReportError(f"{path}: not readable as a series file ({type(e).__name__}: {e})") from None


def load_series(path: Path) -> tuple[dict, MaskCounts | None]:
    """(metrics, mask counts) of a run in the compact form."""
    tables, counts = read_series_file(path)
    metrics = tables.get("metrics")
    if metrics is None:
        raise ReportError(f"{path}: no metrics table")
    missing = [c for c in METRICS_REQUIRED if c not in metrics]
    if missing:
        raise ReportError(f"{path}: missing metrics column(s) {', '.join(missing)}")
    return metrics, None if counts is None else mask_counts_from(counts, counts["every"])


def load_run(folder: Path) -> Run:
    config = read_json(folder / "config.json", ("env_id", "exp_name", "seed", "num_bins"))
    summary_path = folder / "summary.json"
    summary = read_json(summary_path, ("final_success", "auc")) if summary_path.exists() else None
    metrics_path, counts_path = run_file(folder, "metrics.csv"), run_file(folder, "mask_counts.csv")
    series_path = folder / store.SERIES_FILE
    if series_path.exists():
        for other in (metrics_path, counts_path):
            if other is not None:
                raise ReportError(f"{series_path}: both it and {other.name} exist; keep one")
        metrics, mask_counts = load_series(series_path)
        metrics_path = series_path
    elif metrics_path is None:
        raise ReportError(
            f"{folder / 'metrics.csv'}: missing (every run folder needs config.json and metrics.csv, "
            f"or {store.SERIES_FILE})"
        )
    else:
        metrics = read_numeric_csv(metrics_path, METRICS_REQUIRED, summary is None)
        mask_counts = None
    if summary is not None and len(metrics["global_step"]) == 0:
        raise ReportError(f"{metrics_path}: no rows, but summary.json says the run completed")
    if counts_path is not None:
        mask_counts = mask_counts_from(read_mask_count_table(counts_path, summary is None))
    start = pretrained_start(config, folder / "config.json")
    if start is not None:  # a fine-tuning run's curves begin at step 0, at the pretrained policy's success
        metrics = {name: np.concatenate([[start.get(name, math.nan)], values]) for name, values in metrics.items()}
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
        return {
            "iteration": 0.0,
            "global_step": 0.0,
            "success_rate": float(sampled["any"]),
            "success_rate_last_step": float(sampled["last"]),
        }
    except (KeyError, TypeError, ValueError):
        raise ReportError(f"{path}: its pretrained recipe has no sampled success") from None


def run_folders_in(runs_dir: Path) -> list[Path]:
    """The run folders directly under runs_dir (see find_runs), unread."""
    if not runs_dir.is_dir():
        raise ReportError(f"{runs_dir}: no such directory")
    found = []
    for folder in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        if (folder / "config.json").exists():
            found.append(folder)
        elif RUN_DIR_PATTERN.match(folder.name):
            raise ReportError(f"{folder / 'config.json'}: missing (the folder is named like a run)")
    if not found:
        raise ReportError(f"{runs_dir}: no run folders ({{env_id}}__{{exp_name}}__{{seed}}/ with config.json)")
    return found


def find_runs(*runs_dirs: Path) -> list[Run]:
    """Every run folder directly under each runs_dir: a folder with config.json, or one named like a run
    ({env_id}__{exp_name}__{seed}) that lacks it (an error). Other folders (figures/, ...) are skipped. One
    (env_id, exp_name, seed) in two folders is an error: a cell's seeds are counted once."""
    runs = [load_run(folder) for runs_dir in runs_dirs for folder in run_folders_in(runs_dir)]
    seen = {}
    for run in runs:
        key = (run.env_id, run.exp_name, run.seed)
        if key in seen:
            raise ReportError(f"{run.path}: same env_id, exp_name and seed as {seen[key]}")
        seen[key] = run.path
    return runs
