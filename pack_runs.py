"""Copy run folders into a results folder in the compact form, so that committed results stay light.

    python pack_runs.py runs/button-press-v3__ppo_random_mask__1 runs/button-press-v3__ppo_random_mask__2 \
        --to results/button-press-v3_my-study_2026-12-08
    python pack_runs.py runs --to results/button-press-v3_my-study_2026-12-08    # every run folder under runs/

Each SRC is a run folder (config.json inside) or a folder of run folders (as report.py's --runs-dir). Each run becomes
{to}/{run folder name}/ holding config.json and summary.json as they are, its CSVs (metrics, episodes, eval,
mask_counts; plain or gzipped) in one series.npz (reporting/store.py: every number as the CSVs give it, except
returns, losses, the learning rate and timings, which nothing in the report reads, kept to float32 precision, and
the mask counts, kept for every 10th iteration and the last), and its other files (e.g. probe.md); checkpoints (*.pt), TensorBoard event files and folders (videos/) are dropped. A run
already in the compact form is packed again as it is. report.py reads either form.

Nothing is written to --to before every run has been packed into a staging folder beside it and read back with
report.py's reader and checked against its source (the same config, summary and metrics, and the mask counts of the
kept iterations); then a new --to appears in one rename, and into an existing one each run folder moves in one rename,
so a run folder there is either complete or absent. Bad input: one line naming the file, exit 2, nothing written.
"""

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from reporting import store
from reporting.runs import (
    ReportError,
    Run,
    load_run,
    read_mask_count_table,
    read_numeric_csv,
    read_series_file,
    run_file,
    run_folders_in,
)

KEPT_AS_IS = ("config.json", "summary.json")
PACKED = {f"{name}.csv" for name in (*store.TABLES, store.MASK_COUNTS)}  # and their .gz, and series.npz


def dropped_kind(path: Path) -> str | None:
    """Why a file or folder of a run is not carried into the results folder, or None if it is."""
    if path.is_dir():
        return "folders (videos/, ...)"
    if path.suffix == ".pt":
        return "checkpoints (*.pt)"
    if path.name.startswith("events.out.tfevents"):
        return "TensorBoard event files"
    return None


def run_folders(sources: list[Path]) -> list[Path]:
    """The run folders the sources name: each SRC with config.json, else every run folder directly under it."""
    folders = []
    for source in sources:
        if not source.is_dir():
            raise ReportError(f"{source}: no such directory")
        folders += [source] if (source / "config.json").exists() else run_folders_in(source)
    seen = {}
    for folder in folders:
        if folder.name in seen:
            raise ReportError(f"{folder}: the same run folder name as {seen[folder.name]}; they would be one folder")
        seen[folder.name] = folder
    return folders


def read_series(folder: Path, complete: bool) -> tuple[dict, dict | None]:
    """A run's tables (store.TABLES present) and its mask counts of every iteration (or of the kept ones, for a run
    already in the compact form), from whichever form it is in. An incomplete run's half-written last rows are
    dropped, as report.py does."""
    if (folder / store.SERIES_FILE).exists():
        return read_series_file(folder / store.SERIES_FILE)
    tables = {}
    for name in store.TABLES:
        path = run_file(folder, f"{name}.csv")
        if path is not None:
            tables[name] = read_numeric_csv(path, (), not complete)
    counts_path = run_file(folder, "mask_counts.csv")
    return tables, read_mask_count_table(counts_path, not complete) if counts_path else None


def pack_run(source: Run, target: Path) -> list[str]:
    """Write the run into `target` (a new folder), config.json last; the kinds of what was dropped."""
    target.mkdir()
    tables, mask_counts = read_series(source.path, source.complete)
    store.write_series(target / store.SERIES_FILE, tables, mask_counts)
    dropped = []
    for path in sorted(source.path.iterdir()):
        name = path.name.removesuffix(".gz")
        if name in KEPT_AS_IS or name in PACKED or path.name == store.SERIES_FILE:
            continue
        kind = dropped_kind(path)
        if kind:
            dropped.append(kind)
        else:
            shutil.copy2(path, target / path.name)
    for name in reversed(KEPT_AS_IS):  # config.json last: report.py takes a folder with it for a run
        if (source.path / name).exists():
            shutil.copy2(source.path / name, target / name)
    return dropped


def difference(source: Run, packed: Run) -> str | None:
    """What report.py would read differently from the packed run than store.py promises (None: nothing): config,
    summary, every metrics column (exact, or to float32 precision where ROUNDED_TO_FLOAT32 says so), and the masked
    fractions of the kept iterations."""
    if packed.config != source.config or packed.summary != source.summary:
        return "config.json or summary.json"
    if list(packed.metrics) != list(source.metrics):
        return "metrics columns"
    for column, values in source.metrics.items():
        if not np.array_equal(packed.metrics[column], store.stored_column("metrics", column, values), equal_nan=True):
            return f"metrics column {column}"
    if (source.mask_counts is None) != (packed.mask_counts is None):
        return "mask counts present in one only"
    if source.mask_counts is not None:
        kept = np.isin(source.mask_counts.steps, packed.mask_counts.steps)
        if not np.array_equal(source.mask_counts.steps[kept], packed.mask_counts.steps) or not np.array_equal(
            source.mask_counts.fractions[kept], packed.mask_counts.fractions
        ):
            return "mask counts"
    return None


def size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def pack(sources: list[Path], to: Path) -> str:
    """Pack the sources' runs into `to`; the line that says what was done."""
    if to.exists() and not to.is_dir():
        raise ReportError(f"--to: {to} is a file, not a directory")
    folders = run_folders(sources)
    for folder in folders:
        if (to / folder.name).exists():
            raise ReportError(f"{to / folder.name}: already there (remove it to pack {folder} again)")
    stage = to.parent / f".{to.name}.packing-{os.getpid()}"
    to.parent.mkdir(parents=True, exist_ok=True)
    stage.mkdir()
    try:
        dropped = []
        for folder in folders:
            source = load_run(folder)
            dropped += pack_run(source, stage / folder.name)
            differs = difference(source, load_run(stage / folder.name))
            if differs:
                raise ReportError(f"{folder}: its packed copy reads differently ({differs}); nothing written")
        if to.exists():
            for folder in folders:
                os.rename(stage / folder.name, to / folder.name)
            stage.rmdir()
        else:
            os.rename(stage, to)
    finally:
        if stage.exists():
            shutil.rmtree(stage)
    packed = sum(size(to / folder.name) for folder in folders)
    kinds = ", ".join(f"{kind} x{dropped.count(kind)}" for kind in dict.fromkeys(dropped))
    return (
        f"packed {len(folders)} run{'s' * (len(folders) > 1)} into {to}: {packed / 1e6:.2f} MB (sources "
        f"{sum(map(size, folders)) / 1e6:.2f} MB)" + (f"; dropped {kinds}" if kinds else "")
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "sources",
        nargs="+",
        type=Path,
        metavar="SRC",
        help="run folders, or folders of run folders (every run folder directly under it)",
    )
    parser.add_argument(
        "--to",
        required=True,
        type=Path,
        help="the results folder to pack them into (created if absent; a run folder already there is an error)",
    )
    args = parser.parse_args(argv)
    try:
        print(pack(args.sources, args.to))
    except (ReportError, OSError) as e:
        print(f"pack_runs.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
