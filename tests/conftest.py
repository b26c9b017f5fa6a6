"""Shared helpers: the arm scripts are single files at the repository root, imported here as modules (their
training loop runs only under __main__) and run end to end as subprocesses, exactly as a user runs them."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# A few PPO iterations on a real MetaWorld task: 1024 steps (two 500-step episodes), evaluation at 512 and at the end.
SHORT_RUN = [
    "--env-id",
    "reach-v3",
    "--num-steps",
    "256",
    "--minibatch-size",
    "64",
    "--total-timesteps",
    "1024",
    "--update-epochs",
    "2",
    "--eval-interval",
    "512",
    "--eval-episodes",
    "1",
    "--checkpoint-interval",
    "2",
]


# Tests wait on progress (a process ended, a file appeared), never on speed: a subprocess's time limit only stops a hung
# test, and is generous enough that a loaded machine (two training runs beside the suite) never reaches it.
PATIENCE = 1800


def run_script(script: str, runs_dir, *flags: str, env_vars: dict | None = None, timeout: float = PATIENCE):
    """Run an arm script as a user would; returns the CompletedProcess (stdout and stderr captured)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env_vars or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / script), "--runs-dir", str(runs_dir), *flags],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def comparable(run_dir):
    """Everything a run records except wall-clock speed."""
    metrics = [
        {k: v for k, v in row.items() if k not in ("sps", "update_seconds")}
        for row in read_csv(run_dir / "metrics.csv")
    ]
    summary = {
        k: v
        for k, v in json.loads((run_dir / "summary.json").read_text()).items()
        if k not in ("wall_seconds", "run_name")
    }
    return metrics, summary, (run_dir / "episodes.csv").read_text(), (run_dir / "eval.csv").read_text()


def write_untrained_pretrained_file(path, env_id: str = "reach-v3", num_bins: int = 64, norm_obs: bool = True):
    """A file in pretrain_bc.py's format holding an untrained arm actor (no demonstrations, success recorded as 0), for
    tests that need an --init-from file only to run an arm (ppo_prior_mask.py requires one), not a cloned policy."""
    import torch

    import ppo_vanilla

    agent = ppo_vanilla.Agent(39, num_bins)
    recipe = {
        "env_id": env_id,
        "num_bins": num_bins,
        "action_head": "categorical",
        "poisson_temperature": 2.5,
        "obs_dim": 39,
        "norm_obs": norm_obs,
        "demos": 0,
        "action_noise": 0.0,
        "success": {"sampled": {"any": 0.0, "last": 0.0}, "greedy": {"any": 0.0, "last": 0.0}},
    }
    stats = {"mean": torch.zeros(39, dtype=torch.float64), "var": torch.ones(39, dtype=torch.float64), "count": 1e-4}
    torch.save({"actor": agent.actor.state_dict(), "obs_rms": stats if norm_obs else None, "recipe": recipe}, path)
    return path
