"""Run the paper's grids on Modal (client 1.x) when one machine is not enough: one function call per run.

The grids are grids.py's (the same presets and options as benchmark.sh). Each run writes its directory on a Modal
Volume, `{env_id}__{exp_name}__{seed}/`, exactly the layout of a local run, so a preempted or failed run resumes from
its checkpoint when Modal retries it, a re-launched grid skips the runs already complete, and `gather` downloads
complete runs into local runs/ for report.py.

    pip install -r requirements.txt && modal setup        # once: a Modal account and token
    python modal_launch.py list --preset table2            # the runs (offline: no credentials needed)
    python modal_launch.py launch --preset table2          # on T4 GPUs, as in the paper; waits for the results
    python modal_launch.py launch --preset paper --gpu cpu --detach   # CPU-only containers; return at once
    python modal_launch.py status --preset paper           # which runs are complete / in progress on the volume
    python modal_launch.py gather --preset paper           # download complete runs into runs/
    modal secret create wandb WANDB_API_KEY=...            # once, then `launch ... --track` logs to W&B

Importing this module, listing a grid and its tests need no Modal credentials: the App, Volume and Secret are
lazy and only contact Modal when a grid is launched or the volume is read.
"""

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import modal

import grids

ROOT = Path(__file__).resolve().parent  # locally the repository; in a container /root, where the files below go
APP_NAME = "action-token-pruning"
VOLUME_NAME = "action-token-pruning-runs"
VOLUME_PATH = "/runs"  # where the volume is mounted in the containers; a run directory is VOLUME_PATH/<run name>
DEFAULT_GPU = "T4"  # the paper's hardware; --gpu takes any Modal GPU type, or "cpu"
CPUS = 2.0  # per container: one for the run's single torch thread and the simulator, one for everything else
MEMORY_MB = 4096
TIMEOUT_S = 6 * 3600  # per attempt; a 1M-step run takes about 0.5-1 h; a timed-out attempt is retried and resumes
RETRIES = modal.Retries(max_retries=3, initial_delay=10.0, backoff_coefficient=2.0, max_delay=60.0)
COMMIT_POLL_S = 30  # how often a running cell looks for a new checkpoint to commit
WANDB_SECRET = "wandb"  # a Modal secret holding WANDB_API_KEY, attached only to launches with --track


def project_files() -> list[Path]:
    """What the containers need besides the requirements: the grid definitions and every arm script."""
    return [ROOT / "grids.py", *sorted(ROOT.glob("ppo_*.py"))]


image = (
    modal.Image.debian_slim(python_version="3.11")
    .apt_install("git", "libgl1", "libegl1", "libglib2.0-0")  # MuJoCo's shared libraries; git for run metadata
    .pip_install_from_requirements(str(ROOT / "requirements.txt"))
    .env({"PYTHONUNBUFFERED": "1"})
)
for _path in project_files():
    image = image.add_local_file(_path, f"/root/{_path.name}")

app = modal.App(APP_NAME)
volume = modal.Volume.from_name(VOLUME_NAME, create_if_missing=True)
FUNCTION_OPTIONS = dict(image=image, volumes={VOLUME_PATH: volume}, timeout=TIMEOUT_S, retries=RETRIES, cpu=CPUS,
                        memory=MEMORY_MB)


# --- the cell function -------------------------------------------------------------------------------------------

def local_revision() -> str:
    """The launching checkout's git revision (the containers have no .git; config.json says "unknown" there)."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True)
    except OSError:
        return "unknown"
    return (out.stdout.strip() or "unknown") + ("-dirty" if dirty.stdout.strip() else "")


def job_for(run: grids.Run, gpu: str, track: bool, revision: str) -> dict:
    """What a function call needs to know about its run (plain data: it crosses to the container)."""
    return {"name": run.name, "cell": asdict(run.cell), "env_id": run.env_id, "seed": run.seed, "gpu": gpu,
            "track": track, "local_git_revision": revision}


def run_from_job(job: dict) -> grids.Run:
    cell = job["cell"]
    return grids.Run(grids.Cell(cell["exp_name"], cell["script"], tuple(cell["flags"])), job["env_id"], job["seed"])


def commit_volume() -> None:
    """Publish this container's writes to the volume (outside Modal, e.g. under .local(), there is none)."""
    if not modal.is_local():
        volume.commit()


def gpu_name() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
    return out.stdout.strip() or None


def record_attempt(run_dir: Path, job: dict, started: float, exit_code: int) -> None:
    """Append this attempt's device and host to modal.json in the run directory (config.json's `device` key says
    what the script itself used)."""
    path = run_dir / "modal.json"
    attempts = json.loads(path.read_text())["attempts"] if path.exists() else []
    attempts.append({"gpu_requested": job["gpu"], "gpu": gpu_name(), "cpus": os.cpu_count(), "host": platform.node(),
                     "modal_task_id": os.environ.get("MODAL_TASK_ID"), "local_git_revision": job["local_git_revision"],
                     "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                     "seconds": round(time.time() - started, 1), "exit": exit_code})
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"attempts": attempts}, indent=2))


def execute(job: dict, runs_dir: str) -> dict:
    """Run (or resume, or confirm complete) one run under runs_dir, committing the volume as it goes.

    The arm script runs as a subprocess with --resume, exactly as benchmark.sh runs it. Volume writes become
    durable only when committed (Modal also commits in the background and at a clean shutdown, but a preempted
    container may not shut down cleanly), so each new checkpoint.pt is committed as soon as it appears: a retry
    then mounts the volume with that checkpoint and the script continues from it. The scripts write checkpoint.pt
    atomically (write, then rename) after flushing the CSV files whose lengths it records, so any committed
    checkpoint is usable; rows written after it are dropped on resume. The final commit publishes summary.json.
    """
    run = run_from_job(job)
    run_dir = Path(runs_dir) / run.name
    if (run_dir / "summary.json").exists():
        return {"name": run.name, "status": "complete", "ran": False}
    argv = run.argv(runs_dir, threads=1, cuda=job["gpu"] != "cpu") + (["--track"] if job["track"] else [])
    started = time.time()
    print(f"{run.name}: {shlex.join([sys.executable, *argv])}", flush=True)
    process = subprocess.Popen([sys.executable, *argv], cwd=ROOT)
    checkpoint, committed = run_dir / "checkpoint.pt", None
    while True:
        try:
            exit_code = process.wait(timeout=COMMIT_POLL_S)
            break
        except subprocess.TimeoutExpired:
            stamp = checkpoint.stat().st_mtime if checkpoint.exists() else None
            if stamp != committed:
                commit_volume()
                committed = stamp
    record_attempt(run_dir, job, started, exit_code)
    commit_volume()
    if exit_code == 0 and (run_dir / "summary.json").exists():
        return {"name": run.name, "status": "complete", "ran": True, "seconds": round(time.time() - started, 1)}
    if exit_code == 2:  # bad input or settings that differ from the checkpoint's: a retry cannot help
        return {"name": run.name, "status": "failed", "exit": exit_code}
    raise RuntimeError(f"{run.name}: the script exited with status {exit_code}")  # Modal retries, which resume


@app.function(gpu=DEFAULT_GPU, **FUNCTION_OPTIONS)
def run_cell_gpu(job: dict, runs_dir: str = VOLUME_PATH) -> dict:
    """One run on a GPU container (T4 unless launched with another --gpu); runs_dir is overridable for tests."""
    return execute(job, runs_dir)


@app.function(**FUNCTION_OPTIONS)
def run_cell_cpu(job: dict, runs_dir: str = VOLUME_PATH) -> dict:
    """One run on a CPU-only container."""
    return execute(job, runs_dir)


# --- the volume, seen from here ----------------------------------------------------------------------------------

def files_by_run(vol) -> dict[str, dict[str, int]]:
    """{run name: {path inside the run directory: size}} of every file on the volume."""
    runs: dict[str, dict[str, int]] = {}
    for entry in vol.listdir("/", recursive=True):
        if entry.type != modal.volume.FileEntryType.FILE:
            continue
        parts = entry.path.strip("/").split("/", 1)
        if len(parts) == 2:
            runs.setdefault(parts[0], {})[parts[1]] = entry.size
    return runs


def gather(vol, names: list[str] | None, runs_dir: Path) -> dict[str, list[str]]:
    """Download complete runs (those of `names`, or all) into runs_dir/<run name>/ in the layout of a local run.

    A run already complete locally is skipped; a local directory holding an unfinished run is left alone and
    reported (remove it to take the Modal run). Each run is downloaded into a staging directory beside runs_dir
    (never inside it: every folder there is read as a run) and renamed into place, so an interrupted gather never
    leaves a directory that looks complete.
    """
    on_volume = files_by_run(vol)
    complete = {name for name, files in on_volume.items() if "summary.json" in files}
    wanted = sorted(complete) if names is None else [n for n in names if n in complete]
    result = {"downloaded": [], "already_local": [], "conflict": [],
              "not_complete": [] if names is None else [n for n in names if n not in complete]}
    runs_dir.mkdir(parents=True, exist_ok=True)
    staging_root = runs_dir.parent / f".{runs_dir.name}.gathering"
    for name in wanted:
        target = runs_dir / name
        if (target / "summary.json").exists():
            result["already_local"].append(name)
            continue
        if target.exists() and any(target.iterdir()):
            result["conflict"].append(name)
            continue
        staging = staging_root / name
        shutil.rmtree(staging, ignore_errors=True)  # what an interrupted gather left
        for relative in on_volume[name]:
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as f:
                for chunk in vol.read_file(f"{name}/{relative}"):
                    f.write(chunk)
        if target.exists():
            target.rmdir()
        staging.rename(target)
        result["downloaded"].append(name)
    shutil.rmtree(staging_root, ignore_errors=True)
    return result


def run_states(vol, runs: list[grids.Run]) -> dict[str, str]:
    """complete / in progress (a checkpoint, no summary) / started (files, no checkpoint) / not started."""
    on_volume = files_by_run(vol)
    states = {}
    for run in runs:
        files = on_volume.get(run.name, {})
        states[run.name] = ("complete" if "summary.json" in files else "in progress" if "checkpoint.pt" in files
                            else "started" if files else "not started")
    return states


# --- launching -----------------------------------------------------------------------------------------------------

def launch(runs: list[grids.Run], gpu: str, track: bool, detach: bool, dry_run: bool) -> int:
    states = run_states(volume, runs)
    todo = [run for run in runs if states[run.name] != "complete"]
    print(f"{len(runs)} runs: {len(runs) - len(todo)} already complete on volume {VOLUME_NAME}, {len(todo)} to launch"
          f" on {'CPU' if gpu == 'cpu' else gpu}" + (" with W&B tracking" if track else ""))
    partial = [run.name for run in todo if states[run.name] != "not started"]
    if partial:
        print(f"{len(partial)} of them have partial results on the volume and resume from their last checkpoint; "
              "if an earlier launch is still running them, let it finish (or stop it) first")
    if dry_run or not todo:
        for run in todo:
            print(f"  {run.name} ({states[run.name]})")
        return 0
    revision = local_revision()
    jobs = [job_for(run, gpu, track, revision) for run in todo]
    function = run_cell_cpu if gpu == "cpu" else run_cell_gpu
    options = {}
    if gpu not in ("cpu", DEFAULT_GPU):
        options["gpu"] = gpu
    if track:
        options["secrets"] = [modal.Secret.from_name(WANDB_SECRET, required_keys=["WANDB_API_KEY"])]
    failures = 0
    with modal.enable_output(), app.run(detach=detach):
        if options:
            function = function.with_options(**options)
        calls = [function.spawn(job) for job in jobs]
        if detach:
            for job, call in zip(jobs, calls):
                print(f"  launched {job['name']}: {call.object_id}")
            print("detached: the runs continue without this process; `python modal_launch.py status ...` follows "
                  "them and `gather` downloads them")
            return 0
        for job, call in zip(jobs, calls):
            try:
                result = call.get()
            except Exception as e:  # the last retry's error
                result = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
            failures += result["status"] != "complete"
            print(f"  {job['name']}: {result['status']}" + (f" ({result.get('error') or result.get('exit')})"
                                                             if result["status"] != "complete" else ""))
    print(f"{len(jobs) - failures} of {len(jobs)} launched runs complete, {failures} failed; "
          f"`python modal_launch.py gather ...` downloads them")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    own, extra = grids.split_extra(list(sys.argv[1:] if argv is None else argv))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Flags after a bare -- are passed to every run.")
    sub = parser.add_subparsers(dest="what", required=True)
    for what, text in (("list", "the runs of a grid (offline)"), ("launch", "run a grid on Modal"),
                       ("status", "the state of a grid's runs on the volume"),
                       ("gather", "download complete runs into a local runs directory")):
        p = sub.add_parser(what, help=text)
        grids.add_selection_args(p)
        if what == "launch":
            p.add_argument("--gpu", default=DEFAULT_GPU, help=f"a Modal GPU type (default {DEFAULT_GPU}) or cpu")
            p.add_argument("--track", action="store_true", help=f"log to W&B (Modal secret {WANDB_SECRET!r})")
            p.add_argument("--detach", action="store_true", help="return once launched; the runs go on")
            p.add_argument("--dry-run", action="store_true", help="show what would be launched")
        if what == "gather":
            p.add_argument("--runs-dir", default="runs", help="the local directory of run directories (default runs)")
            p.add_argument("--all", action="store_true", help="every complete run on the volume, whatever the grid")
    args = parser.parse_args(own)
    try:
        runs = None if args.what == "gather" and args.all else grids.selection_from_args(args, extra)
    except grids.GridError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.what == "list":
        for run in runs:
            print(f"{run.name}\t{run.cell.script}\t{shlex.join(list(run.cell.flags))}")
        return 0
    try:
        return act(args, runs)
    except modal.exception.Error as e:  # no credentials, no network, a missing secret...
        print(f"error: Modal: {type(e).__name__}: {e} (set up a token with `modal setup`)", file=sys.stderr)
        return 1


def act(args: argparse.Namespace, runs: list[grids.Run] | None) -> int:
    """launch, status or gather (the commands that talk to Modal)."""
    if args.what == "launch":
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9:-]*", args.gpu):
            print(f"error: --gpu takes a Modal GPU type (T4, L4, A10G, A100, H100, ...) or cpu, got {args.gpu!r}",
                  file=sys.stderr)
            return 2
        return launch(runs, args.gpu, args.track, args.detach, args.dry_run)
    if args.what == "status":
        states = run_states(volume, runs)
        for name, state in states.items():
            print(f"{name}\t{state}")
        counts = {s: list(states.values()).count(s) for s in dict.fromkeys(states.values())}
        print(", ".join(f"{n} {s}" for s, n in counts.items()), file=sys.stderr)
        return 0
    result = gather(volume, None if runs is None else [r.name for r in runs], Path(args.runs_dir))
    for key, names in result.items():
        print(f"{key.replace('_', ' ')}: {len(names)}" + "".join(f"\n  {n}" for n in names if key != "downloaded"))
    if result["conflict"]:
        print(f"error: {len(result['conflict'])} runs are unfinished in {args.runs_dir} but complete on Modal; remove "
              "those local directories to gather them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
