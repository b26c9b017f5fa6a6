"""modal_launch.py without Modal: it imports and lists grids with no credentials, its functions and images are
configured as documented, the cell function (run in-process with .local(), or execute() with a local stand-in for the
volume) completes a tiny run, reloads the volume before it starts, never leaves its script running, and tells final
failures from retryable ones, and gather copies complete runs from a volume into the local layout. A real launch
needs a Modal account and is not tested here (docs/running.md's Modal section says what was checked only against Modal's
documentation and client source)."""

import ast
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import modal
import pytest

import grids
import modal_launch
from conftest import PATIENCE, ROOT, read_csv

NO_CREDENTIALS = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
ARM_SCRIPTS = (
    "ppo_vanilla.py",
    "ppo_random_mask.py",
    "ppo_utility_mask.py",
    "ppo_loss_shaping.py",
    "ppo_offpolicy_utility_mask.py",
    "ppo_prior_mask.py",
)


def offline_env(tmp_path) -> dict:
    return {**NO_CREDENTIALS, "HOME": str(tmp_path), "MODAL_CONFIG_PATH": str(tmp_path / "none.toml")}


def test_imports_and_lists_without_credentials(tmp_path):
    env = offline_env(tmp_path)
    result = subprocess.run(
        [sys.executable, "modal_launch.py", "list", "--preset", "table2"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=PATIENCE,
    )
    assert result.returncode == 0, result.stderr
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == [
        r.name for r in grids.expand(presets=["table2"])
    ]
    # commands that need Modal fail with one line, not a traceback
    for command in (["launch", "--preset", "table2", "--gpu", "T4; rm"], ["smoke", "--gpu", "T4; rm"]):
        result = subprocess.run(
            [sys.executable, "modal_launch.py", *command],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=PATIENCE,
        )
        assert result.returncode == 2 and result.stderr.startswith("error: --gpu") and "Traceback" not in result.stderr
        assert len(result.stderr.splitlines()) == 1
    result = subprocess.run(
        [sys.executable, "modal_launch.py", "smoke", "--gpu", "cpu"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=PATIENCE,
    )
    assert result.returncode == 1 and result.stderr.startswith("error: Modal: AuthError") and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    # a dry run works offline: it lists the grid and says the volume was not checked; a real launch needs Modal
    result = subprocess.run(
        [sys.executable, "modal_launch.py", "launch", "--preset", "table2", "--dry-run"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=PATIENCE,
    )
    assert result.returncode == 0 and result.stderr == "" and "Traceback" not in result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].startswith("(the volume is not reachable: AuthError;") and lines[1] == "36 runs: 36 to launch on T4"
    assert lines[2:] == [f"  {r.name} (volume not checked)" for r in grids.expand(presets=["table2"])]
    result = subprocess.run(
        [sys.executable, "modal_launch.py", "launch", "--preset", "table2"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=PATIENCE,
    )
    assert result.returncode == 1 and result.stderr.startswith("error: Modal: AuthError")


def test_gpu_names_as_modal_spells_them():
    assert modal_launch.parse_gpu("t4") == "T4" and modal_launch.parse_gpu("a100-80gb") == "A100-80GB"
    assert modal_launch.parse_gpu("CPU") == "cpu" and modal_launch.parse_gpu("cpu") == "cpu"
    with pytest.raises(grids.GridError, match="--gpu"):
        modal_launch.parse_gpu("")


def test_the_volume_is_a_v2_volume(tmp_path):
    """The Volume.from_name call itself (it is lazy: recording its arguments needs no Modal)."""
    code = (
        "import modal; real = modal.Volume.from_name; calls = []\n"
        "modal.Volume.from_name = lambda *a, **k: calls.append((a, k)) or real(*a, **k)\n"
        "import modal_launch; print(repr(calls))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=offline_env(tmp_path),
        timeout=PATIENCE,
    )
    assert result.returncode == 0, result.stderr
    assert ast.literal_eval(result.stdout.strip()) == [
        (("action-token-pruning-runs-v2",), {"create_if_missing": True, "version": 2})
    ]


def test_function_configuration():
    functions = {
        name: getattr(modal_launch, name).info()
        for name in ("run_cell_gpu", "run_cell_cpu", "run_cell_gpu_video", "run_cell_cpu_video")
    }
    for name, info in functions.items():
        assert info.gpus == ([("T4", 1)] if "gpu" in name else [])
        assert info.timeout == modal_launch.TIMEOUT_S == 6 * 3600
        assert info.startup_timeout == modal_launch.STARTUP_TIMEOUT_S < info.timeout
        assert info.max_retries == 3
        assert info.cpu == 2.0 and info.memory_mib == 4096
        assert {path: mount.name for path, mount in info.volumes.items()} == {"/runs": "action-token-pruning-runs-v2"}
        assert info.secrets == []  # the W&B secret is attached only to launches with --track
    assert modal_launch.app.name == "action-token-pruning"
    assert set(functions) <= set(modal_launch.app.registered_functions)
    video = grids.expand(arms=["ppo_vanilla"], tasks=["reach-v3"], seeds=(1,), extra=("--capture-video",))[0]
    plain = grids.expand(arms=["ppo_vanilla"], tasks=["reach-v3"], seeds=(1,))[0]
    assert modal_launch.wants_video(video) and not modal_launch.wants_video(plain)
    assert modal_launch.cell_function("cpu", video=True) is modal_launch.run_cell_cpu_video
    assert modal_launch.cell_function("A100", video=False) is modal_launch.run_cell_gpu


def test_function_options_keep_the_resources_together():
    assert modal_launch.function_options("T4", track=False) == {}  # as decorated
    assert modal_launch.function_options("cpu", track=False) == {}
    assert modal_launch.function_options("A100", track=False) == {"gpu": "A100", "cpu": 2.0, "memory": 4096}
    assert modal_launch.function_options("cpu", track=False, retries=0) == {"retries": 0, "cpu": 2.0, "memory": 4096}
    tracked = modal_launch.function_options("T4", track=True)
    assert tracked.pop("secrets") and tracked == {"gpu": "T4", "cpu": 2.0, "memory": 4096}
    # the client accepts them offline (with_options is lazy)
    modal_launch.run_cell_gpu.with_options(**modal_launch.function_options("A100", track=True))


class RecordingImage:
    """A stand-in for modal.Image that records the image definition, layer by layer."""

    def __init__(self, layers=()):
        self.layers = list(layers)

    @classmethod
    def debian_slim(cls, python_version=None):
        return cls([("debian_slim", (python_version,), {})])

    def __getattr__(self, method):  # pip_install, apt_install, env, add_local_file, ...
        return lambda *args, **kwargs: RecordingImage(self.layers + [(method, args, kwargs)])


def pins(lines) -> dict[str, str]:
    return dict(line.strip().split("==") for line in lines if "==" in line and not line.lstrip().startswith("#"))


def arm_imports() -> set[str]:
    """The distributions the arm scripts import, directly or through the project's own modules (training_run), with
    tensorboard imported through torch.utils.tensorboard."""
    names, pending, read = set(), list(ARM_SCRIPTS), set()
    while pending:
        script = pending.pop()
        read.add(script)
        for node in ast.walk(ast.parse((ROOT / script).read_text())):
            modules = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for module in modules:
                local = f"{module.split('.')[0]}.py"
                if (ROOT / local).is_file():
                    pending += [local] if local not in read else []
                else:
                    names.add("tensorboard" if module.startswith("torch.utils.tensorboard") else module.split(".")[0])
    return names - set(sys.stdlib_module_names)


def test_image_definition(monkeypatch):
    requirements = (ROOT / "requirements.txt").read_text().splitlines()
    report_start = next(i for i, line in enumerate(requirements) if line.startswith("# report.py"))
    report_only = set(pins(requirements[report_start:]))
    assert {"rliable", "pandas", "matplotlib"} <= report_only
    monkeypatch.setattr(modal, "Image", RecordingImage)
    for gpu in (True, False):
        for video in (True, False):
            layers = modal_launch.container_image(gpu=gpu, video=video).layers
            assert layers[0] == ("debian_slim", ("3.11",), {})
            pip = [(args, kwargs) for method, args, kwargs in layers if method == "pip_install"]
            packages = pins(pip[-1][0])
            # what the scripts need, mujoco pinned as locally, and to film (--capture-video) imageio's MP4 writer
            assert set(packages) == arm_imports() | {"mujoco"} | ({"imageio-ffmpeg"} if video else set())
            assert not set(packages) & report_only
            assert packages.items() <= pins(requirements).items()  # requirements.txt's versions
            if gpu:  # torch from PyPI: the CUDA build
                assert len(pip) == 1 and pip[0][1] == {}
            else:  # the CPU build first, from PyTorch's CPU index; it satisfies the same pin after
                cpu_index = {"index_url": "https://download.pytorch.org/whl/cpu"}
                assert pip[0] == ((f"torch=={packages['torch']}",), cpu_index)
            env = {k: v for method, args, _ in layers if method == "env" for k, v in args[0].items()}
            assert {k: env[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")} == {
                "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1",
                "OPENBLAS_NUM_THREADS": "1",
            }
            apt = [args for method, args, _ in layers if method == "apt_install"]
            assert apt == ([modal_launch.RENDERING_APT_PACKAGES] if video else [])  # nothing renders otherwise
            assert ("MUJOCO_GL" in env) == video
            pretrained = [str(p.relative_to(ROOT)) for p in (ROOT / "results" / "pretrained").glob("*.pt")]
            assert sorted(args[1] for method, args, _ in layers if method == "add_local_file") == sorted(
                f"/root/{name}" for name in ("grids.py", "training_run.py", *ARM_SCRIPTS, *pretrained)
            )


class DirectoryVolume:
    """A stand-in for modal.Volume (listdir and read_file) over a local directory."""

    def __init__(self, root: Path):
        self.root = root

    def listdir(self, path, recursive=False):
        assert path == "/" and recursive
        return [
            modal.volume.FileEntry(
                path=str(p.relative_to(self.root)),
                size=p.stat().st_size,
                mtime=0,
                type=modal.volume.FileEntryType.FILE if p.is_file() else modal.volume.FileEntryType.DIRECTORY,
            )
            for p in sorted(self.root.rglob("*"))
        ]

    def read_file(self, path):
        data = (self.root / path).read_bytes()
        yield data[: len(data) // 2]
        yield data[len(data) // 2 :]


def test_cell_runs_end_to_end_and_gathers(tmp_path, capsys):
    """The smoke test's run, through the cell function as Modal calls it (in-process), then the smoke report's
    volume round trip and gather against a local stand-in for the volume."""
    volume = tmp_path / "volume"
    run = modal_launch.smoke_run()
    job = modal_launch.job_for(run, "cpu", track=False, revision="abc123")
    with pytest.warns(UserWarning, match="executing locally"):
        result = modal_launch.run_cell_cpu.local(job, runs_dir=str(volume))
    assert result["status"] == "complete" and result["ran"]
    run_dir = volume / run.name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary == result["summary"] and summary["total_steps"] == 512
    assert len(read_csv(run_dir / "metrics.csv")) == 2  # two iterations
    config = json.loads((run_dir / "config.json").read_text())
    assert config["exp_name"] == "ppo_utility_mask_smoke" and config["seed"] == 1 and config["threads"] == 1
    (attempt,) = json.loads((run_dir / "modal.json").read_text())["attempts"]
    assert attempt["gpu_requested"] == "cpu" and attempt["exit"] == 0 and attempt["error"] is None
    assert attempt["local_git_revision"] == "abc123" and attempt["cpus_requested"] == 2.0
    assert attempt["torch"] == config["packages"]["torch"] and attempt["cuda_available"] in (True, False)
    assert set(attempt["threads"]) == {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"}
    assert "cpus" not in attempt  # the host's core count is not what the container gets
    capsys.readouterr()
    assert modal_launch.smoke_report(result, DirectoryVolume(volume), run.name) == 0
    out = capsys.readouterr().out
    assert f"torch {attempt['torch']}" in out and "CPUs requested: 2.0" in out and "OMP_NUM_THREADS=" in out
    assert "volume round trip" in out and "smoke test passed" in out
    assert (
        modal_launch.smoke_report({**result, "summary": {**summary, "auc": -1}}, DirectoryVolume(volume), run.name) == 1
    )
    assert "differs" in capsys.readouterr().err
    with pytest.warns(UserWarning):  # relaunched: complete, nothing runs
        assert modal_launch.run_cell_cpu.local(job, runs_dir=str(volume)) == {
            "name": run.name,
            "status": "complete",
            "ran": False,
        }

    # an unfinished run on the volume, a complete one, and a local directory in the way of a third
    (volume / "reach-v3__ppo_vanilla__1").mkdir()
    (volume / "reach-v3__ppo_vanilla__1" / "checkpoint.pt").write_bytes(b"x")
    fake = volume / "reach-v3__ppo_vanilla__2"
    (fake / "wandb").mkdir(parents=True)
    (fake / "summary.json").write_text("{}")
    (fake / "wandb" / "log.txt").write_text("nested")
    local = tmp_path / "runs"
    (local / fake.name).mkdir(parents=True)
    (local / fake.name / "checkpoint.pt").write_bytes(b"a local unfinished run")
    gathered = modal_launch.gather(DirectoryVolume(volume), None, local)
    assert gathered == {"downloaded": [run.name], "already_local": [], "conflict": [fake.name], "not_complete": []}
    for path in run_dir.rglob("*"):  # the same layout, byte for byte
        assert path.is_dir() or (local / run.name / path.relative_to(run_dir)).read_bytes() == path.read_bytes()
    assert sorted(p.name for p in local.iterdir()) == sorted([run.name, fake.name])  # nothing else in runs/
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "volume"]  # no staging left behind

    (local / fake.name / "checkpoint.pt").unlink()
    names = [run.name, fake.name, "reach-v3__ppo_vanilla__1"]
    assert modal_launch.gather(DirectoryVolume(volume), names, local) == {
        "downloaded": [fake.name],
        "already_local": [run.name],
        "conflict": [],
        "not_complete": ["reach-v3__ppo_vanilla__1"],
    }
    assert (local / fake.name / "wandb" / "log.txt").read_text() == "nested"
    assert modal_launch.run_states(
        DirectoryVolume(volume), grids.expand(arms=["ppo_vanilla"], tasks=["reach-v3"], seeds=(1, 2, 3))
    ) == {
        "reach-v3__ppo_vanilla__1": "in progress",
        "reach-v3__ppo_vanilla__2": "complete",
        "reach-v3__ppo_vanilla__3": "not started",
    }


# --- execute() against a stand-in volume, with stand-in arm scripts -------------------------------------------------


class StandInVolume:
    """A stand-in for the mounted modal.Volume (reload and commit) that records the calls; each commit raises the
    next of `commit_errors` (None: succeeds). `started` says whether the arm script had started at each call."""

    def __init__(self, runs_dir: Path, commit_errors=()):
        self.runs_dir, self.commit_errors, self.calls = runs_dir, list(commit_errors), []

    def started(self) -> bool:
        return (self.runs_dir / "arm.pid").exists()

    def reload(self):
        self.calls.append(("reload", self.started()))

    def commit(self):
        self.calls.append(("commit", self.started()))
        error = self.commit_errors.pop(0) if self.commit_errors else None
        if error is not None:
            raise error


# The arm scripts' command line, the run directory, and a pid file beside it (so a test can find the process).
ARM_PROLOGUE = """
import os, pathlib, sys, time
args = sys.argv[1:]
value = lambda flag: args[args.index(flag) + 1]
runs_dir = pathlib.Path(value("--runs-dir"))
run_dir = runs_dir / f"{value('--env-id')}__{value('--exp-name')}__{value('--seed')}"
run_dir.mkdir(parents=True, exist_ok=True)
(runs_dir / "arm.pid").write_text(str(os.getpid()))
"""
CHECKPOINT_THEN = ARM_PROLOGUE + "(run_dir / 'checkpoint.pt').write_bytes(b'1')\ntime.sleep(0.5)\n"


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """execute() with fast polls, a stand-in torch probe (the real one runs in the end-to-end test) and an arm script
    whose body the test gives; returns a function body -> (job, runs_dir)."""
    monkeypatch.setattr(modal_launch, "COMMIT_POLL_S", 0.05)
    monkeypatch.setattr(
        modal_launch,
        "TORCH_PROBE",
        "import json; print(json.dumps({'torch': 'stand-in', 'torch_cuda': None, 'cuda_available': False}))",
    )

    def make(body: str, gpu: str = "cpu"):
        script = tmp_path / "arm.py"
        script.write_text(textwrap.dedent(body))
        run = grids.Run(grids.Cell("stand_in", str(script)), "reach-v3", 1)
        return modal_launch.job_for(run, gpu, track=False, revision="abc123"), tmp_path / "runs"

    return make


def attempts(runs_dir: Path) -> list[dict]:
    return json.loads((runs_dir / "reach-v3__stand_in__1" / "modal.json").read_text())["attempts"]


def test_the_volume_is_reloaded_before_the_run_starts(stand_in):
    job, runs_dir = stand_in(CHECKPOINT_THEN + "(run_dir / 'summary.json').write_text('{\"total_steps\": 1}')\n")
    vol = StandInVolume(runs_dir)
    result = modal_launch.execute(job, str(runs_dir), vol)
    assert result["status"] == "complete" and result["summary"] == {"total_steps": 1}
    assert vol.calls[0] == ("reload", False) and vol.calls.count(("reload", False)) == 1
    assert ("commit", True) in vol.calls[1:-1]  # the checkpoint, while the script ran
    assert vol.calls[-1] == ("commit", True)  # and once more at the end
    vol = StandInVolume(runs_dir)  # a retry that finds the run complete: reloaded first, then nothing runs
    assert modal_launch.execute(job, str(runs_dir), vol)["ran"] is False and vol.calls == [("reload", True)]


def test_a_failed_commit_is_logged_and_the_run_goes_on(stand_in, capsys):
    job, runs_dir = stand_in(
        CHECKPOINT_THEN + "(run_dir / 'checkpoint.pt').write_bytes(b'2')\ntime.sleep(0.5)\n"
        "(run_dir / 'summary.json').write_text('{}')\n"
    )
    vol = StandInVolume(runs_dir, commit_errors=[RuntimeError("conflict")])
    assert modal_launch.execute(job, str(runs_dir), vol)["status"] == "complete"
    assert len([call for call in vol.calls if call[0] == "commit"]) >= 3  # the failed one, a retry, the final one
    assert "warning: volume commit failed (RuntimeError: conflict)" in capsys.readouterr().err
    # when even the commit after the run fails, summary.json is not durable: the attempt fails and Modal retries it
    (runs_dir / "reach-v3__stand_in__1" / "summary.json").unlink()
    with pytest.raises(RuntimeError, match="complete, but the volume commit after it failed"):
        modal_launch.execute(job, str(runs_dir), StandInVolume(runs_dir, commit_errors=[RuntimeError("down")] * 100))


def test_an_interrupt_leaves_no_script_running(stand_in):
    """Preemption's interrupt arriving during a commit: the script is stopped, the attempt recorded, the volume
    committed once more, and the interrupt goes on to Modal."""
    job, runs_dir = stand_in(ARM_PROLOGUE + "(run_dir / 'checkpoint.pt').write_bytes(b'1')\ntime.sleep(60)\n")
    vol = StandInVolume(runs_dir, commit_errors=[KeyboardInterrupt()])
    with pytest.raises(KeyboardInterrupt):
        modal_launch.execute(job, str(runs_dir), vol)
    pid = int((runs_dir / "arm.pid").read_text())
    try:
        os.kill(pid, 0)
        left_running = True
        os.kill(pid, signal.SIGKILL)  # don't leave it behind when the test fails
    except ProcessLookupError:  # stopped and reaped
        left_running = False
    assert not left_running
    assert [name for name, _ in vol.calls] == ["reload", "commit", "commit"]
    (attempt,) = attempts(runs_dir)
    assert attempt["error"] == "KeyboardInterrupt" and attempt["exit"] == -15  # SIGTERM (the real scripts: 143)


def test_a_nan_stop_is_final_and_other_failures_are_retried(stand_in):
    job, runs_dir = stand_in(
        ARM_PROLOGUE + "print('error: non-finite loss at iteration 3 (step 768); stopping', "
        "file=sys.stderr)\nsys.exit(1)\n"
    )
    result = modal_launch.execute(job, str(runs_dir), StandInVolume(runs_dir))
    assert result["status"] == "failed" and result["exit"] == 1 and result["error"].startswith("error: non-finite")
    job, runs_dir = stand_in(ARM_PROLOGUE + "raise OSError('disk full')\n")
    with pytest.raises(RuntimeError, match="exited with status 1"):  # Modal retries this one
        modal_launch.execute(job, str(runs_dir), StandInVolume(runs_dir))
    job, runs_dir = stand_in(
        ARM_PROLOGUE + "print('error: --num-steps must be positive', file=sys.stderr)\nsys.exit(2)\n"
    )
    assert modal_launch.execute(job, str(runs_dir), StandInVolume(runs_dir))["error"] == (
        "error: --num-steps must be positive"
    )
    assert [a["exit"] for a in attempts(runs_dir)] == [1, 1, 2]


def test_a_gpu_container_whose_torch_sees_no_cuda_says_so(stand_in):
    job, runs_dir = stand_in(ARM_PROLOGUE, gpu="T4")
    result = modal_launch.execute(job, str(runs_dir), StandInVolume(runs_dir))
    assert result["status"] == "failed" and not (runs_dir / "arm.pid").exists()  # the script never started
    line = result["error"]
    assert re.match(r"torch\.cuda\.is_available\(\) is false in this T4 container: .*driver >= 580\)$", line)
    assert "\n" not in line and attempts(runs_dir)[-1]["error"] == line


def test_the_image_ships_every_local_module_the_arms_import():
    """An arm that imports a project module the image lacks fails only inside the container, after the upload."""
    shipped = {path.name for path in modal_launch.project_files()}
    for script in sorted(ROOT.glob("ppo_*.py")):
        tree = ast.parse(script.read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        local = {f"{name}.py" for name in imported if (ROOT / f"{name}.py").exists()}
        assert local and local <= shipped, (script.name, local - shipped)
