"""Speed of the arm scripts relative to the raw MetaWorld environment, measured in the same run.

    python speed_benchmark.py ppo_vanilla.py ppo_random_mask.py ppo_utility_mask.py ppo_loss_shaping.py
    python speed_benchmark.py ppo_vanilla.py --parallel 1 2 4 8 16      # a sweep's throughput on N cores

Single-process table: each repeat runs every script for a few PPO iterations, measuring the bare environment's
steps/s (random actions, one process, no policy) just before and just after, and takes the script's training SPS (the median over its iterations after
the first, from its own metrics.csv). The ratio script / environment is taken per repeat, so a noisy neighbour
slows both sides of it; the table prints the medians over repeats. The paper's settings are kept except that
evaluation and target-KL early stopping are off, so every script does all 10 epochs of every update: the same,
and the largest, amount of work per step (a real run does 5 epochs early on and 10 later).

Parallel table (--parallel N ...): N copies of a script (one torch thread each, different seeds) at once, as a
sweep runs them, against one alone: efficiency = the N copies' total SPS / (N x one copy's). The environment's own
scaling (N bare environments at once) is printed beside it: what the hardware allows before any policy runs.
"""

import argparse
import csv
import multiprocessing
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


def script_command(script: str, env_id: str, iterations: int, num_steps: int, extra: list[str], runs_dir: str,
                   seed: int = 1) -> list[str]:
    """The command that times a script: fixed work (no evaluation, no target-KL early stopping), one torch thread."""
    return [sys.executable, script, "--env-id", env_id, "--total-timesteps", str(iterations * num_steps),
            "--num-steps", str(num_steps), "--eval-interval", "0", "--target-kl", "None", "--threads", "1",
            "--seed", str(seed), "--runs-dir", runs_dir, "--exp-name", "speed", *extra]


def median_sps(run_dir: str) -> float:
    """A run's median training SPS over its iterations after the first (the first pays start-up costs)."""
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        sps = [float(row["sps"]) for row in csv.DictReader(f)]
    return statistics.median(sps[1:] or sps)


def script_sps(script: str, env_id: str, iterations: int, num_steps: int, extra: list[str], copies: int = 1) -> list[float]:
    """Training SPS of each of `copies` simultaneous runs of a script (seeds 1..copies)."""
    with tempfile.TemporaryDirectory() as runs_dir:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        procs = [subprocess.Popen(script_command(script, env_id, iterations, num_steps, extra, runs_dir, seed),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
                 for seed in range(1, copies + 1)]
        for proc in procs:
            _, stderr = proc.communicate()
            if proc.returncode:
                raise RuntimeError(f"{script} failed (exit {proc.returncode}): {stderr.strip().splitlines()[-1:]}")
        return [median_sps(os.path.join(runs_dir, run)) for run in sorted(os.listdir(runs_dir))]


def parallel_raw_env_sps(env_id: str, steps: int, copies: int) -> list[float]:
    """Steps per second of each of `copies` bare environments stepping at once, one process each."""
    with multiprocessing.get_context("spawn").Pool(copies) as pool:
        return pool.starmap(raw_env_sps, [(env_id, steps, seed) for seed in range(copies)])


def single_table(scripts, args, extra) -> list[dict]:
    """Per repeat: the raw env, then every script; medians over repeats of SPS and of the per-repeat ratios."""
    env, sps, ratios = [], {s: [] for s in scripts}, {s: [] for s in scripts}
    for _ in range(args.repeats):
        for script in scripts:
            before = raw_env_sps(args.env_id, args.env_steps)
            (script_now,) = script_sps(script, args.env_id, args.iterations, args.num_steps, extra)
            env_now = (before + raw_env_sps(args.env_id, args.env_steps)) / 2  # the env's speed around the script's run
            env.append(env_now)
            sps[script].append(script_now)
            ratios[script].append(script_now / env_now)
    rows = [{"what": "raw environment", "sps": statistics.median(env), "ratio": 1.0}]
    return rows + [{"what": os.path.basename(s), "sps": statistics.median(sps[s]), "ratio": statistics.median(ratios[s])}
                   for s in scripts]


def parallel_table(script, args, extra) -> list[dict]:
    """Per N: the total SPS of N copies against N x one copy's (measured in the same run), for the script and for
    the bare environment."""
    (alone,) = script_sps(script, args.env_id, args.iterations, args.num_steps, extra)
    env_alone = raw_env_sps(args.env_id, args.env_steps)
    rows = []
    for n in args.parallel:
        each = script_sps(script, args.env_id, args.iterations, args.num_steps, extra, copies=n)
        env_each = parallel_raw_env_sps(args.env_id, args.env_steps, n)
        rows.append({"copies": n, "sps_each": statistics.mean(each), "efficiency": sum(each) / (n * alone),
                     "env_each": statistics.mean(env_each), "env_efficiency": sum(env_each) / (n * env_alone)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scripts", nargs="+", help="arm scripts to time (e.g. ppo_vanilla.py)")
    parser.add_argument("--env-id", default="button-press-v3")
    parser.add_argument("--iterations", type=int, default=3, help="PPO iterations per script run (the first is not timed)")
    parser.add_argument("--num-steps", type=int, default=2048, help="rollout length (the paper's 2048)")
    parser.add_argument("--env-steps", type=int, default=5000, help="steps of each raw-environment measurement")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the single-process table")
    parser.add_argument("--parallel", type=int, nargs="*", default=[],
                        help="instead of the single-process table: copies at once of each script, e.g. 1 2 4 8 16")
    parser.add_argument("--extra", default="", help="extra flags passed to every script, e.g. '--num-bins 32'")
    args = parser.parse_args()
    for script in args.scripts:
        if not os.path.isfile(script):
            parser.error(f"no such script: {script}")
    if min([args.iterations, args.num_steps, args.env_steps, args.repeats, *args.parallel]) < 1:
        parser.error("--iterations, --num-steps, --env-steps, --repeats and --parallel must be at least 1")
    extra = args.extra.split()

    print(f"{args.env_id}, rollout {args.num_steps}, {args.iterations} iterations per run, cores: {os.cpu_count()}")
    if not args.parallel:
        print(f"medians of {args.repeats} repeats")
        print(f"{'':<28} {'steps/s':>9} {'of raw env':>10}")
        for row in single_table(args.scripts, args, extra):
            print(f"{row['what']:<28} {row['sps']:>9,.0f} {row['ratio']:>10.2f}", flush=True)
        return
    for script in args.scripts:
        print(f"{os.path.basename(script)}: N copies at once against one alone")
        print(f"{'N':>3} {'SPS each':>9} {'efficiency':>10} {'raw env each':>12} {'env efficiency':>14}")
        for row in parallel_table(script, args, extra):
            print(f"{row['copies']:>3} {row['sps_each']:>9,.0f} {row['efficiency']:>10.2f} {row['env_each']:>12,.0f} "
                  f"{row['env_efficiency']:>14.2f}", flush=True)


if __name__ == "__main__":
    main()
