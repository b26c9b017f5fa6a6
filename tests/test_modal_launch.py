"""modal_launch.py without Modal: it imports and lists grids with no credentials, its functions are configured as
documented, the cell function (run in-process with .local()) completes a tiny run, and gather copies complete runs
from a volume into the local layout. A real launch needs a Modal account and is not tested here."""

import json
import os
import subprocess
import sys
from pathlib import Path

import modal
import pytest
from conftest import ROOT, read_csv

import grids
import modal_launch

NO_CREDENTIALS = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}


def test_imports_and_lists_without_credentials(tmp_path):
    env = {**NO_CREDENTIALS, "HOME": str(tmp_path), "MODAL_CONFIG_PATH": str(tmp_path / "none.toml")}
    result = subprocess.run([sys.executable, "modal_launch.py", "list", "--preset", "table2"], capture_output=True,
                            text=True, cwd=ROOT, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == [r.name for r in
                                                                             grids.expand(presets=["table2"])]
    # commands that need Modal fail with one line, not a traceback
    result = subprocess.run([sys.executable, "modal_launch.py", "launch", "--preset", "table2", "--gpu", "T4; rm"],
                            capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert result.returncode == 2 and result.stderr.startswith("error: --gpu") and "Traceback" not in result.stderr


def test_function_configuration():
    gpu, cpu = modal_launch.run_cell_gpu.info(), modal_launch.run_cell_cpu.info()
    assert gpu.gpus == [("T4", 1)] and cpu.gpus == []
    for info in (gpu, cpu):
        assert info.timeout == modal_launch.TIMEOUT_S == 6 * 3600
        assert info.max_retries == 3
        assert info.cpu == 2.0
        assert {path: mount.name for path, mount in info.volumes.items()} == {"/runs": "action-token-pruning-runs"}
        assert info.secrets == []  # the W&B secret is attached only to launches with --track
    assert modal_launch.app.name == "action-token-pruning"
    assert {"run_cell_gpu", "run_cell_cpu"} <= set(modal_launch.app.registered_functions)


class DirectoryVolume:
    """A stand-in for modal.Volume (listdir and read_file) over a local directory."""

    def __init__(self, root: Path):
        self.root = root

    def listdir(self, path, recursive=False):
        assert path == "/" and recursive
        return [modal.volume.FileEntry(path=str(p.relative_to(self.root)), size=p.stat().st_size, mtime=0,
                                       type=modal.volume.FileEntryType.FILE if p.is_file()
                                       else modal.volume.FileEntryType.DIRECTORY)
                for p in sorted(self.root.rglob("*"))]

    def read_file(self, path):
        data = (self.root / path).read_bytes()
        yield data[: len(data) // 2]
        yield data[len(data) // 2:]


def test_cell_runs_end_to_end_and_gathers(tmp_path):
    volume = tmp_path / "volume"
    run = grids.expand(arms=["ppo_random_mask"], tasks=["reach-v3"], seeds=(3,), total_timesteps=512,
                       extra=("--num-steps", "256", "--update-epochs", "1", "--eval-interval", "0"))[0]
    job = modal_launch.job_for(run, "cpu", track=False, revision="abc123")
    with pytest.warns(UserWarning, match="executing locally"):
        result = modal_launch.run_cell_cpu.local(job, runs_dir=str(volume))
    assert result["status"] == "complete" and result["ran"]
    run_dir = volume / run.name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["total_steps"] == 512 and len(read_csv(run_dir / "metrics.csv")) == 2
    config = json.loads((run_dir / "config.json").read_text())
    assert config["exp_name"] == "ppo_random_mask" and config["seed"] == 3 and config["threads"] == 1
    attempt, = json.loads((run_dir / "modal.json").read_text())["attempts"]
    assert attempt["gpu_requested"] == "cpu" and attempt["exit"] == 0 and attempt["local_git_revision"] == "abc123"
    with pytest.warns(UserWarning):  # relaunched: complete, nothing runs
        assert modal_launch.run_cell_cpu.local(job, runs_dir=str(volume)) == {"name": run.name, "status": "complete",
                                                                             "ran": False}

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
        "downloaded": [fake.name], "already_local": [run.name], "conflict": [],
        "not_complete": ["reach-v3__ppo_vanilla__1"]}
    assert (local / fake.name / "wandb" / "log.txt").read_text() == "nested"
    assert modal_launch.run_states(DirectoryVolume(volume), grids.expand(arms=["ppo_vanilla"], tasks=["reach-v3"],
                                                                         seeds=(1, 2, 3))) == {
        "reach-v3__ppo_vanilla__1": "in progress", "reach-v3__ppo_vanilla__2": "complete",
        "reach-v3__ppo_vanilla__3": "not started"}
