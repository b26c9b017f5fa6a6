"""The compact form of a run's series, for committed results folders: one `series.npz` in the run folder in place of
its metrics.csv, episodes.csv, eval.csv and mask_counts.csv (pack_runs.py writes it; runs.py reads both forms).

Why: results/ is committed. A K = 256 masking run's mask_counts.csv.gz (a row per PPO iteration, 4 K integer columns)
is about 0.5 MB, its metrics about 60 KB; a 50-run study added 10-20 MB. In this form such a run takes about 80 KB.

The file is a zip of .npy entries (LZMA-compressed; `np.load` reads it, no pickle), one per table. Each entry is a
table as one 0-d structured array whose fields are its columns in the CSV's order, each field a whole column (so a
column's values lie together, which compresses better than rows would): `np.load(path)["metrics"]["success_rate"]`.

- metrics, episodes, eval: every column of the CSV, each in the smallest dtype that gives back exactly the float64
  values the CSV reads as (integers as integers, float32 where every value round-trips, NaN included, else float64):
  the same numbers. Except ROUNDED_TO_FLOAT32, kept to float32 precision (7 significant digits): returns, losses,
  explained variance, the learning rate and the timings, diagnostics that nothing in the report reads, means of float32
  quantities or clock readings whose further float64 digits are noise that does not compress (at float64 they would
  be a sixth of a K = 256 run's file). The report reads success rates, entropies, mask fractions, rank agreement,
  epochs, approx KL and clip fraction: all exact.
- mask_counts: the rows of the iterations divisible by MASK_COUNTS_EVERY, and the last row (so the run's length is
  kept): iteration, global_step and masks (rollout steps counted) of each kept row, counts (kept rows, dimensions,
  bins) as integers, and every (MASK_COUNTS_EVERY). The heat maps are the only reader; they average consecutive
  iterations into at most 100 time columns anyway.
"""

import lzma
import zipfile
from pathlib import Path

import numpy as np

SERIES_FILE = "series.npz"
TABLES = ("metrics", "episodes", "eval")  # {name}.csv of a run, kept whole
MASK_COUNTS = "mask_counts"
MASK_COUNTS_EVERY = 10
ROUNDED_TO_FLOAT32 = {
    ("episodes", "episodic_return"),
    *(
        ("metrics", column)
        for column in (
            "episodic_return",
            "explained_variance",
            "value_loss",
            "policy_loss",
            "utility_loss",
            "learning_rate",
            "sps",
            "update_seconds",
        )
    ),
}
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # every entry's: the same run packs to the same bytes (no churn when repacked)
INTEGER_TYPES = (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.int64)
# What reading a damaged or foreign file raises (np.load: ValueError for what is neither .npy nor zip)
READ_ERRORS = (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile, lzma.LZMAError)


def exact_column(values: np.ndarray) -> np.ndarray:
    """The column in the smallest dtype that gives back exactly these float64 values."""
    values = np.asarray(values, dtype=np.float64)
    if values.size and np.isfinite(values).all() and (values == np.round(values)).all():
        for dtype in INTEGER_TYPES:
            limits = np.iinfo(dtype)
            if limits.min <= values.min() and values.max() <= limits.max:
                return values.astype(dtype)
    single = values.astype(np.float32)
    return single if np.array_equal(single.astype(np.float64), values, equal_nan=True) else values


def stored_column(table: str, column: str, values: np.ndarray) -> np.ndarray:
    """The column as this form keeps it: exact, or rounded to float32 (ROUNDED_TO_FLOAT32)."""
    if (table, column) in ROUNDED_TO_FLOAT32:
        values = np.asarray(values, dtype=np.float32)
    return exact_column(values)


def record(columns: dict) -> np.ndarray:
    """A table (column name -> array, the arrays of equal length or shape) as one 0-d structured array."""
    fields = np.zeros((), dtype=[(name, values.dtype, values.shape) for name, values in columns.items()])
    for name, values in columns.items():
        fields[name] = values
    return fields


def write_series(path: Path, tables: dict, mask_counts: dict | None):
    """tables: name (of TABLES) -> {column: float64 array}, as the CSVs read; mask_counts: {"iteration",
    "global_step", "masks": (T,), "counts": (T, dimensions, bins)} of every iteration, or None. Written to `path`
    whole (a crash leaves no file there)."""
    entries = {}
    for name, columns in tables.items():
        entries[name] = record({column: stored_column(name, column, values) for column, values in columns.items()})
    if mask_counts is not None:
        keep = mask_counts["iteration"] % MASK_COUNTS_EVERY == 0
        keep[-1:] = True
        counts = mask_counts["counts"][keep]
        entries[MASK_COUNTS] = record(
            {
                "iteration": exact_column(mask_counts["iteration"][keep]),
                "global_step": exact_column(mask_counts["global_step"][keep]),
                "masks": exact_column(mask_counts["masks"][keep]),
                "counts": exact_column(counts) if counts.size else counts.astype(np.uint16),
                "every": np.array(MASK_COUNTS_EVERY, dtype=np.uint16),
            }
        )
    partial = path.with_name(path.name + ".partial")
    with zipfile.ZipFile(partial, "w") as archive:
        for name, fields in entries.items():
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_DATE)
            entry.compress_type = zipfile.ZIP_LZMA
            with archive.open(entry, "w") as f:
                np.lib.format.write_array(f, fields, allow_pickle=False)
    partial.replace(path)


def read_series(path: Path) -> tuple[dict, dict | None]:
    """(tables, mask_counts) as write_series takes them, every column float64; mask_counts has the kept rows only and
    "every". Raises one of READ_ERRORS on a file that is not a series file."""
    with np.load(path, allow_pickle=False) as archive:
        entries = {name: archive[name] for name in archive.files}
    unknown = set(entries) - set(TABLES) - {MASK_COUNTS}
    if unknown:
        raise ValueError(f"unknown entries {', '.join(sorted(unknown))}")
    tables = {
        name: {column: entries[name][column].astype(np.float64) for column in entries[name].dtype.names}
        for name in TABLES
        if name in entries
    }
    mask_counts = None
    if MASK_COUNTS in entries:
        fields = entries[MASK_COUNTS]
        mask_counts = {
            column: fields[column].astype(np.float64) for column in ("iteration", "global_step", "masks", "counts")
        }
        mask_counts["every"] = int(fields["every"])
    return tables, mask_counts
