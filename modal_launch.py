"""Run the paper's grids on Modal (client 1.x) when one machine is not enough: one function call per run.

The grids are grids.py's (the same presets and options as benchmark.sh). Each run writes its directory on a Modal
Volume, `{env_id}__{exp_name}__{seed}/`, exactly the layout of a local run, so a preempted or failed run resumes from
its checkpoint when Modal retries it, a re-launched grid skips the runs already complete, and `gather` downloads
complete runs into local runs/ for report.py.

    pip install -r requirements.txt && modal setup        # once: a Modal account and token
    python modal_launch.py smoke --gpu cpu                 # first: one 2-iteration run; what the container offers
    python modal_launch.py list --preset table2            # the runs (offline: no credentials needed)
    python modal_launch.py launch --preset table2          # on T4 GPUs, as in the paper; waits for the results
    python modal_launch.py launch --preset paper --gpu cpu --detach   # CPU-only containers; return at once
    python modal_launch.py status --preset paper           # which runs are complete / in progress on the volume
    python modal_launch.py gather --preset paper           # download complete runs into runs/
    modal secret create wandb WANDB_API_KEY=...            # once, then `launch ... --track` logs to W&B

Importing this module, listing a grid and its tests need no Modal credentials: the App, Volume, Images and Secret
are lazy and only contact Modal when a grid is launched or the volume is read.
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
import threading
import time
from dataclasses import asdict
from pathlib import Path

import modal

import grids

ROOT = Path(__file__).resolve().parent  # locally the repository; in a container /root, where the files below go
APP_NAME = "action-token-pruning"
# A v2 volume: a grid has 36-78 containers writing and committing at once, and Modal recommends no more than 5
# concurrent writers for v1 volumes. `version` must match an existing volume, hence a new name (docs/running.md, "On Modal", says how
# to move runs from the old v1 volume, "action-token-pruning-runs").
VOLUME_NAME = "action-token-pruning-runs-v2"
VOLUME_VERSION = 2
VOLUME_PATH = "/runs"  # where the volume is mounted in the containers; a run directory is VOLUME_PATH/<run name>
DEFAULT_GPU = "T4"  # the paper's hardware; --gpu takes any Modal GPU type, or "cpu"
CPUS = 2.0  # per container: one for the run's single torch thread and the simulator, one for everything else
MEMORY_MB = 4096
# The containers see the host's cores (os.cpu_count()), not the 2 CPUs they get; BLAS and OpenMP pools sized to the
# host would oversubscribe them, so every library runs one thread, as the scripts' --threads 1 does for torch.
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
TIMEOUT_S = 6 * 3600  # per attempt; a 1M-step run takes about 0.5-1 h; a timed-out attempt is retried and resumes
STARTUP_TIMEOUT_S = 15 * 60  # a container that has not started by then fails (the default would be TIMEOUT_S)
RETRIES = modal.Retries(max_retries=3, initial_delay=10.0, backoff_coefficient=2.0, max_delay=60.0)
COMMIT_POLL_S = 30  # how often a running cell looks for a new checkpoint to commit
STOP_GRACE_S = 10  # how long a stopped script gets to exit on SIGTERM before it is killed
NAN_STOP = "error: non-finite loss"  # how the scripts' NaN stop (exit status 1) begins its stderr line
WANDB_SECRET = "wandb"  # a Modal secret holding WANDB_API_KEY, attached only to launches with --track

# What the containers install: the arm scripts' imports (tensorboard for torch.utils.tensorboard), mujoco pinned
# under metaworld, wandb for --track; not report.py's packages, modal (Modal provides its client) or the tests'.
# The pins are requirements.txt's (the tests check). From PyPI, torch==2.13.0 is the CUDA 13 build (~2.7 GB with its
# CUDA libraries), which needs an NVIDIA driver >= 580; CPU containers install the CPU build from PyTorch's index
# first, which satisfies the same pin.
CONTAINER_REQUIREMENTS = (
    "torch==2.13.0",
    "numpy==2.4.6",
    "gymnasium==1.4.0",
    "metaworld==3.1.1",
    "mujoco==3.3.0",
    "tyro==1.0.17",
    "tensorboard==2.21.0",
    "wandb==0.31.0",
    "imageio==2.38.1",
)
PYTORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# Headless OpenGL for MuJoCo, installed only in the images of runs with --capture-video: EGL through glvnd (libegl1,
# libgl1 for PyOpenGL) with Mesa's EGL and its software rasterizer for hosts without NVIDIA's EGL, and OSMesa.
RENDERING_APT_PACKAGES = ("libegl1", "libgl1", "libegl-mesa0", "libgl1-mesa-dri", "libosmesa6")
VIDEO_REQUIREMENTS = ("imageio-ffmpeg==0.8.1",)  # imageio's MP4 writer (an ffmpeg binary), only to film
VIDEO_FLAG = "--capture-video"


def project_files() -> list[Path]:
    """What the containers need besides the requirements: the grid definitions, every arm script and the run plumbing
    the arms import, and the committed pretrained files that fine-tuning cells name (--init-from, docs/finetuning.md)."""
    return [
        ROOT / "grids.py",
        ROOT / "training_run.py",
        *sorted(ROOT.glob("ppo_*.py")),
        *sorted((ROOT / "results" / "pretrained").glob("*.pt")),
    ]


def container_image(gpu: bool, video: bool = False) -> modal.Image:
    """The containers' image: Debian slim, the container requirements (with CPU torch where no GPU is attached), one
    thread per library, the project files; with video, headless OpenGL for MuJoCo (MUJOCO_GL: EGL on a GPU, where
    NVIDIA's EGL may be offered, OSMesa on CPU; the scripts use the MUJOCO_GL they find, egl when it is unset)."""
    image = modal.Image.debian_slim(python_version="3.11")
    if not gpu:
        (torch_pin,) = [r for r in CONTAINER_REQUIREMENTS if r.startswith("torch==")]
        image = image.pip_install(torch_pin, index_url=PYTORCH_CPU_INDEX)
    image = image.pip_install(*CONTAINER_REQUIREMENTS, *(VIDEO_REQUIREMENTS if video else ()))
    image = image.env({"PYTHONUNBUFFERED": "1", **THREAD_ENV})
    if video:
        image = image.apt_install(*RENDERING_APT_PACKAGES).env({"MUJOCO_GL": "egl" if gpu else "osmesa"})
    for path in project_files():  # at the same path under /root as here: --init-from names them relative to the root
        image = image.add_local_file(path, f"/root/{path.relative_to(ROOT)}")
    return image


app = modal.App(APP_NAME)
volume = modal.Volume.from_name(VOLUME_NAME, create_if_missing=True, version=VOLUME_VERSION)
FUNCTION_OPTIONS = dict(
    volumes={VOLUME_PATH: volume},
    timeout=TIMEOUT_S,
    startup_timeout=STARTUP_TIMEOUT_S,
    retries=RETRIES,
    cpu=CPUS,
    memory=MEMORY_MB,
)


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
    return {
        "name": run.name,
        "cell": asdict(run.cell),
        "env_id": run.env_id,
        "seed": run.seed,
        "gpu": gpu,
        "cpus": CPUS,
        "memory_mb": MEMORY_MB,
        "track": track,
        "local_git_revision": revision,
    }


def run_from_job(job: dict) -> grids.Run:
    cell = job["cell"]
    return grids.Run(grids.Cell(cell["exp_name"], cell["script"], tuple(cell["flags"])), job["env_id"], job["seed"])


def wants_video(run: grids.Run) -> bool:
    return any(flag.split("=")[0].replace("_", "-") == VIDEO_FLAG for flag in run.cell.flags)


# Run in a subprocess, as the script will run: torch and CUDA stay out of this process, which only waits and commits.
TORCH_PROBE = (
    "import json, torch; print(json.dumps({'torch': torch.__version__, 'torch_cuda': torch.version.cuda, "
    "'cuda_available': torch.cuda.is_available()}))"
)


def nvidia_smi() -> tuple[str | None, str | None]:
    """The GPU's name and the host's NVIDIA driver version, or Nones without a GPU."""
    if not shutil.which("nvidia-smi"):
        return None, None
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"], capture_output=True, text=True
    )
    fields = [f.strip() for f in out.stdout.splitlines()[0].split(",")] if out.stdout.strip() else []
    return (fields[0], fields[1]) if len(fields) == 2 else (None, None)


def container_report(job: dict) -> dict:
    """What this container offers the run, for modal.json: the GPU and driver, the torch build and whether it sees
    CUDA, the CPUs and memory requested (the container's share; os.cpu_count() would be the host's), the thread
    variables, the host and Modal's task id."""
    probe = subprocess.run([sys.executable, "-c", TORCH_PROBE], capture_output=True, text=True, cwd=ROOT)
    if probe.returncode == 0:
        torch_info = json.loads(probe.stdout.strip().splitlines()[-1])
    else:
        lines = probe.stderr.strip().splitlines()
        torch_info = {
            "torch": None,
            "torch_cuda": None,
            "cuda_available": False,
            "torch_error": lines[-1] if lines else f"exit status {probe.returncode}",
        }
    gpu, driver = nvidia_smi()
    return {
        "gpu_requested": job["gpu"],
        "gpu": gpu,
        "gpu_driver": driver,
        **torch_info,
        "cpus_requested": job["cpus"],
        "memory_mb_requested": job["memory_mb"],
        "threads": {name: os.environ.get(name) for name in THREAD_ENV},
        "host": platform.node(),
        "modal_task_id": os.environ.get("MODAL_TASK_ID"),
    }


def missing_cuda(report: dict) -> str | None:
    """One line when a GPU container's torch sees no CUDA device (e.g. a driver too old for the CUDA 13 build)."""
    if report["gpu_requested"] == "cpu" or report["cuda_available"]:
        return None
    return (
        f"torch.cuda.is_available() is false in this {report['gpu_requested']} container: torch {report['torch']} "
        f"built for CUDA {report['torch_cuda']}, GPU {report['gpu']}, NVIDIA driver {report['gpu_driver']} "
        "(the CUDA 13 build needs driver >= 580)"
        + (f"; importing torch failed: {report['torch_error']}" if report.get("torch_error") else "")
    )


def record_attempt(
    run_dir: Path, job: dict, report: dict, started: float, exit_code: int | None, error: str | None
) -> None:
    """Append this attempt to modal.json in the run directory: the container's report, the launching revision, when,
    how long, the script's exit status and its error line (config.json's `device` says what the script used)."""
    path = run_dir / "modal.json"
    attempts = json.loads(path.read_text())["attempts"] if path.exists() else []
    attempts.append(
        {
            **report,
            "local_git_revision": job["local_git_revision"],
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": round(time.time() - started, 1),
            "exit": exit_code,
            "error": error,
        }
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"attempts": attempts}, indent=2))


def commit(vol) -> bool:
    """Commit vol (None: no volume, as in a local run); a failure is logged, not raised, and reported as False.

    A failed commit loses nothing yet: the files stay on this container's disk and the next commit publishes them."""
    if vol is None:
        return True
    try:
        vol.commit()
        return True
    except Exception as e:  # Modal's errors, and the RuntimeError commit() raises for a conflict or a missing volume
        print(
            f"warning: volume commit failed ({type(e).__name__}: {e}); the run goes on and the next commit retries",
            file=sys.stderr,
            flush=True,
        )
        return False


class ErrorLineWatcher(threading.Thread):
    """Copies a script's stderr to ours line by line and keeps the last line starting with "error:" (the scripts
    end every failure they handle with one such line)."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream = stream
        self.error_line: str | None = None

    def run(self):
        for line in self.stream:
            sys.stderr.write(line)
            sys.stderr.flush()
            if line.startswith("error:"):
                self.error_line = line.rstrip("\n")


def wait_committing(process: subprocess.Popen, checkpoint: Path, vol) -> int:
    """Wait for the script, committing the volume whenever a new checkpoint.pt has appeared since the last commit
    that succeeded; returns its exit status."""
    committed = None
    while True:
        try:
            return process.wait(timeout=COMMIT_POLL_S)
        except subprocess.TimeoutExpired:
            stamp = checkpoint.stat().st_mtime if checkpoint.exists() else None
            if stamp != committed and commit(vol):
                committed = stamp


def stop(process: subprocess.Popen) -> None:
    """End the script if it still runs: SIGTERM (the scripts exit at once, keeping their last checkpoint), then
    SIGKILL after STOP_GRACE_S."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def execute(job: dict, runs_dir: str, vol) -> dict:
    """Run (or resume, or confirm complete) one run under runs_dir, on the volume vol mounted there (None: none).

    The volume is reloaded first: a retry may land on a warm container that mounted it before the last attempt's
    commits, and would resume from an older checkpoint and overwrite newer files. The arm script runs as a subprocess
    with --resume, exactly as benchmark.sh runs it. Volume writes become durable only when committed (Modal also
    commits in the background and at a clean shutdown, but a preempted container may not shut down cleanly), so each
    new checkpoint.pt is committed as soon as it appears: a retry then mounts the volume with that checkpoint and the
    script continues from it. The scripts write checkpoint.pt atomically (write, then rename) after flushing the CSV
    files whose lengths it records, so any committed checkpoint is usable; rows written after it are dropped on resume.

    Whatever ends this function (the script's exit, preemption's interrupt, a cancelled input, an error here), the
    script is stopped before it returns, the attempt is recorded in modal.json and the volume committed once more:
    Modal may retry the input in this same container, and two scripts must never write one run directory.
    """
    run = run_from_job(job)
    run_dir = Path(runs_dir) / run.name
    if vol is not None:
        vol.reload()
    if (run_dir / "summary.json").exists():
        return {"name": run.name, "status": "complete", "ran": False}
    started = time.time()
    report = container_report(job)
    no_cuda = missing_cuda(report)
    if no_cuda:  # the script would stop at --cuda; no retry gets another driver
        print(f"error: {no_cuda}", file=sys.stderr, flush=True)
        record_attempt(run_dir, job, report, started, None, no_cuda)
        commit(vol)
        return {"name": run.name, "status": "failed", "error": no_cuda, "container": report}
    argv = run.argv(runs_dir, threads=1, cuda=job["gpu"] != "cpu") + (["--track"] if job["track"] else [])
    print(f"{run.name}: {shlex.join([sys.executable, *argv])}", flush=True)
    process = subprocess.Popen([sys.executable, *argv], cwd=ROOT, stderr=subprocess.PIPE, text=True, errors="replace")
    watcher = ErrorLineWatcher(process.stderr)
    watcher.start()
    interruption = None
    try:
        exit_code = wait_committing(process, run_dir / "checkpoint.pt", vol)
    except BaseException as e:  # KeyboardInterrupt (preemption), InputCancellation, an error while committing...
        interruption = f"{type(e).__name__}: {e}".rstrip(": ")
        raise
    finally:
        stop(process)
        watcher.join(timeout=STOP_GRACE_S)
        record_attempt(run_dir, job, report, started, process.returncode, interruption or watcher.error_line)
        committed = commit(vol)
    error = watcher.error_line
    if exit_code == 0 and (run_dir / "summary.json").exists():
        if not committed:  # summary.json is not durable: a retry resumes from the last committed checkpoint
            raise RuntimeError(f"{run.name}: complete, but the volume commit after it failed")
        return {
            "name": run.name,
            "status": "complete",
            "ran": True,
            "seconds": round(time.time() - started, 1),
            "summary": json.loads((run_dir / "summary.json").read_text()),
            "container": report,
        }
    # Final, not retried: bad input or settings that differ from the checkpoint's (status 2), or a NaN stop, which a
    # retry would reproduce from the same checkpoint and seed.
    if exit_code == 2 or (exit_code == 1 and error and error.startswith(NAN_STOP)):
        return {"name": run.name, "status": "failed", "exit": exit_code, "error": error, "container": report}
    raise RuntimeError(f"{run.name}: the script exited with status {exit_code}" + (f" ({error})" if error else ""))


def mounted_volume():
    """The volume to reload and commit: Modal's in a container, none where the function runs locally (.local())."""
    return None if modal.is_local() else volume


@app.function(gpu=DEFAULT_GPU, image=container_image(gpu=True), **FUNCTION_OPTIONS)
def run_cell_gpu(job: dict, runs_dir: str = VOLUME_PATH) -> dict:
    """One run on a GPU container (T4 unless launched with another --gpu); runs_dir is overridable for tests."""
    return execute(job, runs_dir, mounted_volume())


@app.function(image=container_image(gpu=False), **FUNCTION_OPTIONS)
def run_cell_cpu(job: dict, runs_dir: str = VOLUME_PATH) -> dict:
    """One run on a CPU-only container."""
    return execute(job, runs_dir, mounted_volume())


@app.function(gpu=DEFAULT_GPU, image=container_image(gpu=True, video=True), **FUNCTION_OPTIONS)
def run_cell_gpu_video(job: dict, runs_dir: str = VOLUME_PATH) -> dict:
    """One run with --capture-video on a GPU container (its image adds headless OpenGL)."""
    return execute(job, runs_dir, mounted_volume())


@app.function(image=container_image(gpu=False, video=True), **FUNCTION_OPTIONS)
def run_cell_cpu_video(job: dict, runs_dir: str = VOLUME_PATH) -> dict:
    """One run with --capture-video on a CPU-only container (its image adds headless OpenGL)."""
    return execute(job, runs_dir, mounted_volume())


def cell_function(gpu: str, video: bool):
    """The function a run goes to: GPU or CPU container, with or without the rendering packages."""
    return {
        (False, False): run_cell_gpu,
        (True, False): run_cell_cpu,
        (False, True): run_cell_gpu_video,
        (True, True): run_cell_cpu_video,
    }[(gpu == "cpu", video)]


def function_options(gpu: str, track: bool, **more) -> dict:
    """with_options(...) arguments for a launch, or {} to call the functions as decorated.

    The client sends a variant one Resources message built from an empty one, with none of the decorated cpu, memory
    or gpu in it (modal/_function_variants.py: _FunctionOptions.new and merge_options), and Modal does not document
    how the server fills it in; so whenever options are given, cpu and memory go with them, and a GPU function's
    GPU."""
    options = dict(more)
    if track:
        options["secrets"] = [modal.Secret.from_name(WANDB_SECRET, required_keys=["WANDB_API_KEY"])]
    if options or gpu not in ("cpu", DEFAULT_GPU):
        options.update(cpu=CPUS, memory=MEMORY_MB, **({} if gpu == "cpu" else {"gpu": gpu}))
    return options


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
    result = {
        "downloaded": [],
        "already_local": [],
        "conflict": [],
        "not_complete": [] if names is None else [n for n in names if n not in complete],
    }
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
        states[run.name] = (
            "complete"
            if "summary.json" in files
            else "in progress"
            if "checkpoint.pt" in files
            else "started"
            if files
            else "not started"
        )
    return states


# --- launching -----------------------------------------------------------------------------------------------------


def gpu_label(gpu: str) -> str:
    return "CPU" if gpu == "cpu" else gpu


def launch(runs: list[grids.Run], gpu: str, track: bool, detach: bool, dry_run: bool) -> int:
    try:
        states = run_states(volume, runs)
    except (modal.exception.Error, OSError) as e:
        if not dry_run:
            raise
        # a dry run works offline and without an account: it shows the grid, not what the volume already holds
        print(
            f"(the volume is not reachable: {type(e).__name__}; every run is listed, and a launch would skip "
            "those complete there)"
        )
        states = {run.name: "volume not checked" for run in runs}
    todo = [run for run in runs if states[run.name] != "complete"]
    checked = "volume not checked" not in states.values()
    print(
        f"{len(runs)} runs: "
        + (f"{len(runs) - len(todo)} already complete on volume {VOLUME_NAME}, " if checked else "")
        + f"{len(todo)} to launch on {gpu_label(gpu)}"
        + (" with W&B tracking" if track else "")
    )
    partial = [run.name for run in todo if states[run.name] in ("in progress", "started")]
    if partial:
        print(
            f"{len(partial)} of them have partial results on the volume and resume from their last checkpoint; "
            "if an earlier launch is still running them, let it finish (or stop it) first"
        )
    if dry_run or not todo:
        for run in todo:
            print(f"  {run.name} ({states[run.name]})")
        return 0
    revision = local_revision()
    jobs = [job_for(run, gpu, track, revision) for run in todo]
    options = function_options(gpu, track)
    failures = 0
    with modal.enable_output(), app.run(detach=detach):
        functions = {}  # one variant per function: each with_options(...) is a container pool of its own
        calls = []
        for run, job in zip(todo, jobs):
            base = cell_function(gpu, wants_video(run))
            if base not in functions:
                functions[base] = base.with_options(**options) if options else base
            calls.append(functions[base].spawn(job))
        if detach:
            for job, call in zip(jobs, calls):
                print(f"  launched {job['name']}: {call.object_id}")
            print(
                "detached: the runs continue without this process; `python modal_launch.py status ...` follows "
                "them and `gather` downloads them"
            )
            return 0
        for job, call in zip(jobs, calls):
            try:
                result = call.get()
            except Exception as e:  # the last retry's error
                result = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
            failures += result["status"] != "complete"
            print(
                f"  {job['name']}: {result['status']}"
                + (f" ({result.get('error') or result.get('exit')})" if result["status"] != "complete" else "")
            )
    print(
        f"{len(jobs) - failures} of {len(jobs)} launched runs complete, {failures} failed; "
        f"`python modal_launch.py gather ...` downloads them"
    )
    return 1 if failures else 0


# --- the smoke test ------------------------------------------------------------------------------------------------

SMOKE_DIR = "smoke"  # on the volume, beside the runs; cleared by each smoke test


def smoke_run() -> grids.Run:
    """The utility arm (the paper's final method) for two 256-step iterations on reach-v3."""
    (run,) = grids.expand(
        arms=["ppo_utility_mask"],
        tasks=["reach-v3"],
        seeds=(1,),
        total_timesteps=512,
        extra=("--num-steps", "256", "--update-epochs", "1", "--eval-interval", "0"),
        exp_suffix="_smoke",
    )
    return run


def smoke_report(result: dict, vol, run_path: str) -> int:
    """Print what the smoke run's container reported and check the volume round trip: the summary.json the
    container wrote and committed, read back here from vol at run_path. Returns the exit status."""
    container = result.get("container")
    if container:
        print(
            f"torch {container['torch']} (built for CUDA {container['torch_cuda']}); torch.cuda.is_available(): "
            f"{container['cuda_available']}" + (f"; {container['torch_error']}" if container.get("torch_error") else "")
        )
        print(
            f"GPU: {container['gpu'] or 'none'}"
            + (f", NVIDIA driver {container['gpu_driver']}" if container["gpu_driver"] else "")
        )
        print(
            f"CPUs requested: {container['cpus_requested']}, memory {container['memory_mb_requested']} MB; threads: "
            + ", ".join(f"{k}={v}" for k, v in container["threads"].items())
        )
        print(f"host {container['host']}, Modal task {container['modal_task_id']}")
    if result["status"] != "complete":
        print(
            f"error: smoke test: the run failed ({result.get('error') or 'exit ' + str(result.get('exit'))})",
            file=sys.stderr,
        )
        return 1
    print(f"run: complete, {result['summary']['total_steps']} steps in {result.get('seconds')} s")
    read_back = json.loads(b"".join(vol.read_file(f"{run_path}/summary.json")))
    if read_back != result["summary"]:
        print(
            f"error: smoke test: {run_path}/summary.json read back from the volume differs from what the container "
            "wrote",
            file=sys.stderr,
        )
        return 1
    print(f"volume round trip: {run_path}/summary.json written and committed in the container, read back here: same")
    print("smoke test passed")
    return 0


def smoke(gpu: str) -> int:
    """One 2-iteration run in a fresh directory on the volume, no retries; prints what the container offers."""
    run = smoke_run()
    try:
        volume.remove_file(SMOKE_DIR, recursive=True)
    except FileNotFoundError:  # the first smoke test
        pass
    job = job_for(run, gpu, track=False, revision=local_revision())
    print(f"smoke test: {run.name} (2 iterations) on {gpu_label(gpu)}, in {SMOKE_DIR}/ on volume {VOLUME_NAME}")
    options = function_options(gpu, track=False, retries=0)
    with modal.enable_output(), app.run():
        try:
            result = cell_function(gpu, video=False).with_options(**options).remote(job, f"{VOLUME_PATH}/{SMOKE_DIR}")
        except Exception as e:
            result = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
    return smoke_report(result, volume, f"{SMOKE_DIR}/{run.name}")


# --- the command line ------------------------------------------------------------------------------------------------


def parse_gpu(text: str) -> str:
    """--gpu as Modal spells it (GPU types upper case, as the client sends them) or "cpu"; GridError if malformed."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9:-]*", text):
        raise grids.GridError(f"--gpu takes a Modal GPU type (T4, L4, A10G, A100, H100, ...) or cpu, got {text!r}")
    return "cpu" if text.lower() == "cpu" else text.upper()


def main(argv: list[str] | None = None) -> int:
    own, extra = grids.split_extra(list(sys.argv[1:] if argv is None else argv))
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="Flags after a bare -- are passed to every run."
    )
    sub = parser.add_subparsers(dest="what", required=True)
    for what, text in (
        ("list", "the runs of a grid (offline)"),
        ("launch", "run a grid on Modal"),
        ("status", "the state of a grid's runs on the volume"),
        ("gather", "download complete runs into a local runs directory"),
        ("smoke", "one 2-iteration run: what a container offers, and the volume round trip"),
    ):
        p = sub.add_parser(what, help=text)
        if what != "smoke":
            grids.add_selection_args(p)
        if what in ("launch", "smoke"):
            p.add_argument("--gpu", default=DEFAULT_GPU, help=f"a Modal GPU type (default {DEFAULT_GPU}) or cpu")
        if what == "launch":
            p.add_argument("--track", action="store_true", help=f"log to W&B (Modal secret {WANDB_SECRET!r})")
            p.add_argument("--detach", action="store_true", help="return once launched; the runs go on")
            p.add_argument("--dry-run", action="store_true", help="show what would be launched")
        if what == "gather":
            p.add_argument("--runs-dir", default="runs", help="the local directory of run directories (default runs)")
            p.add_argument("--all", action="store_true", help="every complete run on the volume, whatever the grid")
    args = parser.parse_args(own)
    try:
        if args.what == "smoke" and extra:
            raise grids.GridError("smoke takes no flags after --")
        if hasattr(args, "gpu"):
            args.gpu = parse_gpu(args.gpu)
        runs = (
            None
            if args.what == "smoke" or (args.what == "gather" and args.all)
            else grids.selection_from_args(args, extra)
        )
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
    """launch, smoke, status or gather (the commands that talk to Modal)."""
    if args.what == "launch":
        return launch(runs, args.gpu, args.track, args.detach, args.dry_run)
    if args.what == "smoke":
        return smoke(args.gpu)
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
        print(
            f"error: {len(result['conflict'])} runs are unfinished in {args.runs_dir} but complete on Modal; remove "
            "those local directories to gather them",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
