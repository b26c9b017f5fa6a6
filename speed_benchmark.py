"""Speed of the arm scripts relative to the raw MetaWorld environment, measured in the same run.

    python speed_benchmark.py ppo_vanilla.py [more scripts ...] --env-id button-press-v3 --iterations 4

The raw environment's steps/s (random actions, one process, no policy) is measured before and after each
script, and each script's training SPS (median over its iterations after the first; evaluation and target-KL
early stopping off, so every script does the same work) is
reported as a ratio to the mean of those two: the ratio, not the absolute number, is comparable across
machines and across noisy neighbours.
"""

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time

import gymnasium as gym
import metaworld  # noqa: F401  (registers Meta-World/MT1)
import numpy as np


def raw_env_sps(env_id: str, steps: int, seed: int = 0) -> float:
    """Steps per second of the bare environment under uniformly random continuous actions."""
    env = gym.make("Meta-World/MT1", env_name=env_id, seed=seed, disable_env_checker=True)
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, size=(steps, 4)).astype(np.float32)
    env.reset()
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def script_sps(script: str, env_id: str, iterations: int, num_steps: int, extra: list[str]) -> float:
    """Median training SPS of a script's own metrics.csv over its iterations after the first."""
    with tempfile.TemporaryDirectory() as runs_dir:
        # target-KL early stopping off: it varies the update's epochs from run to run, so timings would compare
        # different amounts of work; every script here does all 10 epochs of every iteration
        cmd = [sys.executable, script, "--env-id", env_id, "--total-timesteps", str(iterations * num_steps),
               "--num-steps", str(num_steps), "--eval-interval", "0", "--target-kl", "None",
               "--runs-dir", runs_dir, "--exp-name", "speed", *extra]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        (run,) = os.listdir(runs_dir)
        with open(os.path.join(runs_dir, run, "metrics.csv")) as f:
            sps = [float(row["sps"]) for row in csv.DictReader(f)]
    return statistics.median(sps[1:] or sps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scripts", nargs="+", help="arm scripts to time (e.g. ppo_vanilla.py)")
    parser.add_argument("--env-id", default="button-press-v3")
    parser.add_argument("--iterations", type=int, default=4, help="PPO iterations per script")
    parser.add_argument("--num-steps", type=int, default=2048, help="rollout length (the paper's 2048)")
    parser.add_argument("--env-steps", type=int, default=5000, help="steps of each raw-environment measurement")
    parser.add_argument("--extra", default="", help="extra flags passed to every script, e.g. '--num-bins 32'")
    args = parser.parse_args()
    for script in args.scripts:
        if not os.path.isfile(script):
            parser.error(f"no such script: {script}")

    print(f"{'script':<28} {'env steps/s':>12} {'script SPS':>11} {'ratio':>6}")
    for script in args.scripts:
        before = raw_env_sps(args.env_id, args.env_steps)
        sps = script_sps(script, args.env_id, args.iterations, args.num_steps, args.extra.split())
        env = (before + raw_env_sps(args.env_id, args.env_steps)) / 2
        print(f"{os.path.basename(script):<28} {env:>12,.0f} {sps:>11,.0f} {sps / env:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
