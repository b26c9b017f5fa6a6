"""benchmark.sh: the grid comes from grids.py; runs go in parallel, one log each; after a run crashes and after a
Ctrl-C, the same command finishes the grid without running anything twice or losing any iteration."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import grids
from conftest import PATIENCE, ROOT, SHORT_RUN, read_csv, run_script

BENCHMARK = str(ROOT / "benchmark.sh")
# Two arms x two seeds of a tiny reach-v3 run: 4 iterations of 256 steps, a checkpoint after each.
TINY_GRID = [
    "--arms",
    "ppo_vanilla,ppo_random_mask",
    "--tasks",
    "reach-v3",
    "--seeds",
    "1,2",
    "--total-timesteps",
    "1024",
    "--",
    "--num-steps",
    "256",
    "--minibatch-size",
    "64",
    "--update-epochs",
    "1",
    "--eval-interval",
    "0",
    "--checkpoint-interval",
    "1",
]
NAMES = [f"reach-v3__{arm}__{seed}" for arm in ("ppo_vanilla", "ppo_random_mask") for seed in (1, 2)]


def env(tmp_path) -> dict:
    """The interpreter of these tests, and a stand-in report tool that records how it was called."""
    fake_report = tmp_path / "report.py"
    fake_report.write_text("import sys\nopen(sys.argv[0] + '.calls', 'a').write(' '.join(sys.argv[1:]) + '\\n')\n")
    return {**os.environ, "PYTHON": sys.executable, "BENCHMARK_REPORT": str(fake_report), "PYTHONWARNINGS": "ignore"}


def default_workers() -> int:
    return int(
        subprocess.run(
            ["nproc"],
            capture_output=True,
            text=True,
            env={k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_THREAD_LIMIT")},
        ).stdout
    )


def benchmark(tmp_path, *args: str) -> list[str]:
    return [BENCHMARK, "--runs-dir", str(tmp_path / "runs"), "--logs-dir", str(tmp_path / "logs"), *args]


def complete_run(runs_dir: Path, name: str, preset: str, **changes) -> Path:
    """A complete run directory of a preset's run: summary.json and the config.json its script writes (with
    `changes` to its settings)."""
    run = next(r for r in grids.expand(presets=[preset]) if r.name == name)
    folder = runs_dir / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(
        json.dumps(
            {
                **run.settings(str(runs_dir)),
                **changes,
                "run_name": name,
                "runs_dir": "moved",
                "threads": 2,
                "host": "elsewhere",
            }
        )
    )
    (folder / "summary.json").write_text("{}")
    return folder


def test_dry_run_prints_the_grids_commands_and_skips_complete_runs(tmp_path):
    done = complete_run(tmp_path / "runs", "button-press-v3__ppo_vanilla__2", "table4")
    out = subprocess.run(
        benchmark(tmp_path, "--preset", "table4", "--dry-run"),
        capture_output=True,
        text=True,
        env=env(tmp_path),
        check=True,
    ).stdout.splitlines()
    grid = subprocess.run(
        [
            sys.executable,
            "grids.py",
            "commands",
            "--preset",
            "table4",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--python",
            sys.executable,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout.splitlines()
    assert out[0].startswith("# 30 runs: 1 already complete, 29 to run (0 resuming from a checkpoint); ")
    estimate = subprocess.run(
        [
            sys.executable,
            "grids.py",
            "estimate",
            "--preset",
            "table4",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--workers",
            str(default_workers()),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout.strip()
    assert out[1] == f"# estimate: {estimate}" and estimate.startswith("29 runs, ~")
    out = [out[0]] + [line for line in out[2:] if not line.startswith("# warning: uncommitted changes to ")]
    assert out[1:] == [
        f"# complete: {done.name}" if "ppo_vanilla.py" in line and "--seed 2" in line else line for line in grid
    ]
    assert not (tmp_path / "logs").exists() and os.listdir(tmp_path / "runs") == [done.name]  # nothing ran


def test_a_smoke_run_in_the_grids_directory_is_not_counted_or_run(tmp_path):
    """A short run (here a real one, of 1024 steps) where the grid's 1M-step run belongs: named with the differing
    settings, neither complete nor run, and the sweep exits 1."""
    runs = tmp_path / "runs"
    smoke = run_script("ppo_utility_mask.py", runs, *SHORT_RUN, "--seed", "2")
    assert smoke.returncode == 0, smoke.stderr[-2000:]
    name = "reach-v3__ppo_utility_mask__2"
    matching = complete_run(runs, "reach-v3__ppo_utility_mask__1", "table2")
    files = sorted(os.listdir(runs / name))
    grid = ["--preset", "table2", "--arms", "ppo_utility_mask", "--tasks", "reach-v3", "--seeds", "1,2"]
    out = subprocess.run(
        benchmark(tmp_path, *grid, "--dry-run"), capture_output=True, text=True, env=env(tmp_path), check=True
    ).stdout.splitlines()
    differs = (
        f"complete with other settings, not counted and not run: {name} (checkpoint_interval: recorded 2, grid "
        "10; total_timesteps: recorded 1024, grid 1000000; num_steps: recorded 256, grid 2048; update_epochs: "
        "recorded 2, grid 10; eval_interval: recorded 512, grid 100000; eval_episodes: recorded 1, grid 5)"
    )
    assert out[0].startswith(
        "# 2 runs: 1 already complete, 0 to run (0 resuming from a checkpoint), 1 complete with "
        "other settings (not counted, not run); "
    )
    assert out[1] == "# estimate: nothing to run"
    assert [line for line in out[2:] if not line.startswith("# warning: uncommitted")] == [
        f"# complete: {matching.name}",
        f"# {differs}",
    ]
    result = subprocess.run(
        benchmark(tmp_path, *grid, "--no-report"), capture_output=True, text=True, env=env(tmp_path), timeout=PATIENCE
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"benchmark.sh: {differs}" in result.stdout.splitlines()
    assert "1 were already complete, 0 ran, 0 completed, 0 failed" in result.stdout
    assert "1 run directories hold complete runs with other settings" in result.stderr
    assert sorted(os.listdir(runs / name)) == files and not (tmp_path / "logs" / f"{name}.log").exists()  # not run


def test_default_workers_are_the_usable_cores_even_with_omp_num_threads_1(tmp_path):
    """GNU nproc reports OMP_NUM_THREADS when it is set; one-thread-per-run setups export OMP_NUM_THREADS=1."""
    out = subprocess.run(
        benchmark(tmp_path, "--preset", "table2", "--dry-run"),
        capture_output=True,
        text=True,
        env={**env(tmp_path), "OMP_NUM_THREADS": "1"},
        check=True,
    ).stdout.splitlines()
    assert f"; {len(os.sched_getaffinity(0))} workers;" in out[0], out[0]


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    for args, message in (
        (["--preset", "table9"], "unknown preset 'table9'"),
        (["--preset", "table2", "--workers", "0"], "--workers must be a positive integer"),
        (["--preset", "table2", "--workers"], "--workers needs a value"),
    ):
        result = subprocess.run(benchmark(tmp_path, *args), capture_output=True, text=True, env=env(tmp_path))
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def pid_of(run_name: str, runs_dir: Path) -> int | None:
    """The python process of one run of this test (matched on its own arguments, under this test's directory)."""
    _, exp_name, seed = run_name.split("__")
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().decode().split("\0")
        except (OSError, ValueError):
            continue
        text = " ".join(args)
        if (
            len(args) > 1
            and args[1].endswith(".py")
            and f"--exp-name {exp_name} " in text
            and f"--seed {seed} " in text
            and str(runs_dir) in text
            and "bash" not in args[0]
        ):
            return int(proc.name)
    return None


def wait_for(path: Path, process: subprocess.Popen, limit: float = PATIENCE):
    """Until the file appears, failing only if benchmark.sh ends first: progress, not a deadline a loaded machine can
    miss (the limit only keeps a hung test from running forever)."""
    deadline = time.time() + limit
    while not path.exists():
        assert process.poll() is None, f"benchmark.sh ended before {path} appeared"
        assert time.time() < deadline, f"no {path} after {limit} s"
        time.sleep(0.02)


def log_events(log: Path) -> list[tuple[str, str]]:
    """(event, detail) of each start/end line of a run's log: ("start", "fresh"), ("end", "137"), ..."""
    pattern = r"^=== \S+ (start|end)(?: \((\w+)\)|: exit (\d+))"
    return [(event, how or code) for event, how, code in re.findall(pattern, log.read_text(), re.M)]


def times(log: Path) -> list[float]:
    stamps = re.findall(r"^=== (\S+) ", log.read_text(), re.M)
    return [time.mktime(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ")) for s in stamps]


def test_parallel_runs_survive_a_crash_and_ctrl_c(tmp_path):
    runs, logs = tmp_path / "runs", tmp_path / "logs"
    command = benchmark(tmp_path, "--workers", "2", *TINY_GRID)
    a, b, c, _ = NAMES

    # 1. Two workers. Run a crashes (SIGKILL) after its first checkpoint; run c takes its place, and once c has a
    # checkpoint, Ctrl-C (SIGINT to the whole process group, as a terminal sends it) interrupts the sweep.
    # (its output goes to a file, not a pipe read only at the end, which a long warning could fill and block)
    with open(tmp_path / "first.out", "w") as output:
        first = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, text=True, env=env(tmp_path), start_new_session=True
        )
        wait_for(runs / a / "checkpoint.pt", first)
        os.kill(pid_of(a, runs), signal.SIGKILL)
        wait_for(runs / c / "checkpoint.pt", first)
        os.killpg(first.pid, signal.SIGINT)
        first.wait(timeout=PATIENCE)
    out = (tmp_path / "first.out").read_text()
    assert first.returncode == 130, out
    assert f"failed: {a} (exit 137" in out and f"failed: {c} (exit " in out
    assert "interrupted" in out and "the same command resumes them" in out
    assert not (runs / a / "summary.json").exists() and not (runs / c / "summary.json").exists()
    assert all(pid_of(name, runs) is None for name in NAMES)  # nothing left running
    # a and b ran at the same time: both started before either ended
    (start_a, end_a), (start_b, end_b) = (times(logs / f"{n}.log")[:2] for n in (a, b))
    assert start_b < end_a and start_a < end_b
    complete = [n for n in NAMES if (runs / n / "summary.json").exists()]

    # 2. The same command finishes the grid: the complete runs are skipped, the others resume or start.
    second = subprocess.run(command, capture_output=True, text=True, env=env(tmp_path), timeout=PATIENCE)
    assert second.returncode == 0, second.stdout + second.stderr
    assert (
        f"{len(complete)} were already complete, {4 - len(complete)} ran, {4 - len(complete)} completed, "
        "0 failed" in second.stdout
    )
    for name in NAMES:  # no iteration missing or repeated, and nothing started again once complete
        assert (runs / name / "summary.json").exists()
        assert [row["iteration"] for row in read_csv(runs / name / "metrics.csv")] == ["1", "2", "3", "4"]
        events = log_events(logs / f"{name}.log")
        assert events.count(("end", "0")) == 1 and events[-1] == ("end", "0"), (name, events)
        resumed = json.loads((runs / name / "config.json").read_text())["resumed"]
        if name in (a, c):  # stopped after a checkpoint, then resumed from it
            assert (
                events[0] == ("start", "fresh")
                and events[1][1] != "0"
                and events[2:] == [("start", "resume"), ("end", "0")]
            ), (name, events)
            assert len(resumed) == 1
        if name in complete:
            assert events == [("start", "fresh"), ("end", "0")] and resumed == []
    calls = (tmp_path / "report.py.calls").read_text().splitlines()
    # at the end of the sweep (not after the interruption); any-step success: not a paper-regime grid
    assert calls == [f"--runs-dir {runs} --success-definition any"]

    # 3. The runs' own config.json files hold the grid's settings: all four count as complete.
    plan = subprocess.run(
        benchmark(tmp_path, "--dry-run", "--workers", "2", *TINY_GRID),
        capture_output=True,
        text=True,
        env=env(tmp_path),
        check=True,
    ).stdout.splitlines()
    plan = [line for line in plan if not line.startswith("# warning: uncommitted changes to ")]
    assert plan[1] == "# estimate: nothing to run"
    assert plan[0].startswith("# 4 runs: 4 already complete, 0 to run") and plan[2:] == [
        f"# complete: {name}" for name in NAMES
    ]


@pytest.mark.skipif(shutil.which("flock") is None, reason="flock(1) is not installed: benchmark.sh runs without locks")
def test_a_run_in_progress_elsewhere_is_not_started_twice(tmp_path):
    """Two sweeps sharing a run (e.g. table2 and table4) lock its directory: the second one leaves it alone."""
    import fcntl

    run_dir = tmp_path / "runs" / NAMES[0]
    run_dir.mkdir(parents=True)
    held = os.open(run_dir, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)  # as a running benchmark.sh's run holds it
    try:
        result = subprocess.run(
            benchmark(
                tmp_path, "--no-report", "--arms", "ppo_vanilla", "--tasks", "reach-v3", "--seeds", "1", *TINY_GRID[6:]
            ),
            capture_output=True,
            text=True,
            env=env(tmp_path),
            timeout=PATIENCE,
        )
    finally:
        os.close(held)
    assert result.returncode == 1 and f"failed: {NAMES[0]} (another process is running it" in result.stdout
    assert os.listdir(run_dir) == [] and "start" not in (tmp_path / "logs" / f"{NAMES[0]}.log").read_text()
    assert not (tmp_path / "report.py.calls").exists()  # --no-report


def test_a_paper_regime_grid_is_reported_at_the_last_step_and_a_dirty_tree_is_named(tmp_path):
    """The paper's regime (--no-norm-obs) matches the paper's numbers only with last-step success: the automatic
    report uses it. A copy of the scripts with an uncommitted change warns once before the grid starts."""
    repo = tmp_path / "repo"
    shutil.copytree(
        ROOT,
        repo,
        ignore=shutil.ignore_patterns(
            ".git", "runs", "logs", "reports", "results", ".whl", "__pycache__", ".pytest_cache"
        ),
    )
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "copy"], check=True)
    grid = [
        "--arms",
        "ppo_vanilla_no-norm-obs",
        "--tasks",
        "reach-v3",
        "--seeds",
        "1",
        "--total-timesteps",
        "256",
        "--",
        "--num-steps",
        "256",
        "--minibatch-size",
        "64",
        "--update-epochs",
        "1",
        "--eval-interval",
        "0",
    ]
    argv = [str(repo / "benchmark.sh"), "--runs-dir", str(tmp_path / "runs"), "--logs-dir", str(tmp_path / "logs")]
    clean = subprocess.run(argv + ["--dry-run", *grid], capture_output=True, text=True, env=env(tmp_path), check=True)
    assert "uncommitted" not in clean.stdout + clean.stderr
    (repo / "ppo_vanilla.py").write_text((repo / "ppo_vanilla.py").read_text() + "\n# a local change\n")
    result = subprocess.run(argv + grid, capture_output=True, text=True, env=env(tmp_path))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "uncommitted" in line]
    assert warnings == [
        "benchmark.sh: warning: uncommitted changes to ppo_vanilla.py (the runs record them as "
        "git_changes in config.json; commit first to make every cell's runs come from one revision)"
    ]
    calls = (tmp_path / "report.py.calls").read_text().splitlines()
    assert calls == [f"--runs-dir {tmp_path / 'runs'} --success-definition last"]
    assert "last-step success" in result.stdout


@pytest.mark.parametrize("mps_running", [False, True])
def test_a_cuda_grid_on_an_nvidia_machine_says_whether_mps_runs(tmp_path, mps_running):
    """Many --cuda runs on one GPU need MPS (without it their updates time-slice): one line says which it is."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: fake'\n")
    (fake / "pgrep").write_text(f"#!/bin/sh\nexit {0 if mps_running else 1}\n")
    for tool in fake.iterdir():
        tool.chmod(0o755)
    environment = {**env(tmp_path), "PATH": f"{fake}:{os.environ['PATH']}"}
    grid = ["--arms", "ppo_vanilla", "--tasks", "reach-v3", "--seeds", "1"]
    out = subprocess.run(
        benchmark(tmp_path, "--dry-run", *grid, "--cuda"), capture_output=True, text=True, env=environment, check=True
    ).stdout
    expected = (
        "# MPS is running"
        if mps_running
        else "# MPS is not running: the runs' CUDA work will time-slice the GPU (slower than the CPU); start it "
        "first, as root: nvidia-cuda-mps-control -d"
    )
    assert [line for line in out.splitlines() if "MPS" in line] == [
        expected + (": the runs' CUDA work shares the GPU" if mps_running else "")
    ]
    # without --cuda, or without an NVIDIA GPU, nothing is said
    plain = subprocess.run(
        benchmark(tmp_path, "--dry-run", *grid), capture_output=True, text=True, env=environment, check=True
    ).stdout
    assert "MPS" not in plain


def test_the_uncommitted_changes_warning_ignores_a_venv_and_stays_short(tmp_path):
    """A virtual environment (or any untracked folder) inside the clone is not the project's code: no warning. Many
    changed scripts are named up to 5 and counted, so the warning is one short line."""
    repo = tmp_path / "repo"
    shutil.copytree(
        ROOT,
        repo,
        ignore=shutil.ignore_patterns(
            ".git", "runs", "logs", "reports", "results", ".whl", "__pycache__", ".pytest_cache", ".venv", ".dev"
        ),
    )
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "copy"], check=True)
    for venv in (".venv", "myenv"):  # ignored by .gitignore, and not ignored
        package = repo / venv / "lib" / "python3.11" / "site-packages" / "package"
        package.mkdir(parents=True)
        for i in range(200):
            (package / f"module{i}.py").write_text("x = 1\n")
    argv = [
        str(repo / "benchmark.sh"),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--logs-dir",
        str(tmp_path / "logs"),
        "--dry-run",
        "--arms",
        "ppo_vanilla",
        "--tasks",
        "reach-v3",
        "--seeds",
        "1",
    ]
    venv_only = subprocess.run(argv, capture_output=True, text=True, env=env(tmp_path), check=True)
    assert "warning: uncommitted" not in venv_only.stdout + venv_only.stderr
    for i in range(7):
        (repo / f"script{i}.py").write_text("x = 1\n")
    many = subprocess.run(argv, capture_output=True, text=True, env=env(tmp_path), check=True)
    warnings = [line for line in many.stdout.splitlines() if "warning: uncommitted" in line]
    assert warnings == [
        "# warning: uncommitted changes to script0.py script1.py script2.py script3.py script4.py "
        "and 2 more (the runs record them as git_changes in config.json; commit first to make every "
        "cell's runs come from one revision)"
    ]
