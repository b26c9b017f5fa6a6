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
SHORT_RUN = ["--env-id", "reach-v3", "--num-steps", "256", "--minibatch-size", "64", "--total-timesteps", "1024",
             "--update-epochs", "2", "--eval-interval", "512", "--eval-episodes", "1", "--checkpoint-interval", "2"]


# Tests wait on progress (a process ended, a file appeared), never on speed: a subprocess's time limit only stops a hung
# test, and is generous enough that a loaded machine (two training runs beside the suite) never reaches it.
PATIENCE = 1800


def run_script(script: str, runs_dir, *flags: str, env_vars: dict | None = None, timeout: float = PATIENCE):
    """Run an arm script as a user would; returns the CompletedProcess (stdout and stderr captured)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env_vars or {})}
    return subprocess.run([sys.executable, str(ROOT / script), "--runs-dir", str(runs_dir), *flags],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def comparable(run_dir):
    """Everything a run records except wall-clock speed."""
    metrics = [{k: v for k, v in row.items() if k not in ("sps", "update_seconds")} for row in read_csv(run_dir / "metrics.csv")]
    summary = {k: v for k, v in json.loads((run_dir / "summary.json").read_text()).items() if k not in ("wall_seconds", "run_name")}
    return metrics, summary, (run_dir / "episodes.csv").read_text(), (run_dir / "eval.csv").read_text()
