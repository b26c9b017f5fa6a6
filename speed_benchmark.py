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

--compile: every script is also timed with --compile (each gradient step compiled once by torch.compile,
training_run.MinibatchStep) beside its eager path, in the same repeat, with the compilation's seconds (the first
compiled run of each script and K compiles into an empty inductor cache made for this invocation; later repeats load
from it, as later runs on one machine do: "cold" and "warm"). --num-bins 64 256 times every script at each K. With
--parallel, N copies with --compile against N eager copies.

--cuda (on a machine with an NVIDIA GPU): every script is also timed with --cuda (the update as a replayed CUDA graph,
training_run.MinibatchStep) beside its CPU path, in the same repeat; "update" is the update's share of an iteration
(metrics.csv's update_seconds x SPS / rollout). With --parallel, N copies with --cuda sharing the GPU against N
copies on the CPU: their total steps/s and the ratio. Many processes on one GPU need MPS (nvidia-cuda-mps-control -d,
as root, before they start): the first line says whether it runs.
"""

import argparse
import csv
import multiprocessing
import os
import re
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


def script_command(
    script: str, env_id: str, iterations: int, num_steps: int, extra: list[str], runs_dir: str, seed: int = 1
) -> list[str]:
    """The command that times a script: fixed work (no evaluation, no target-KL early stopping), one torch thread."""
    return [
        sys.executable,
        script,
        "--env-id",
        env_id,
        "--total-timesteps",
        str(iterations * num_steps),
        "--num-steps",
        str(num_steps),
        "--eval-interval",
        "0",
        "--target-kl",
        "None",
        "--threads",
        "1",
        "--seed",
        str(seed),
        "--runs-dir",
        runs_dir,
        "--exp-name",
        "speed",
        *extra,
    ]


def compile_seconds(stdout: str):
    """The seconds a --compile run spent on its first (compiling) gradient step, from MinibatchStep's "compiled ... in
    X s" lines (summed: the off-policy arm compiles two steps); None for a run that compiled nothing."""
    found = re.findall(r"^compiled \S+ in ([0-9.]+) s", stdout, re.MULTILINE)
    return sum(map(float, found)) if found else None


def run_speed(run_dir: str, num_steps: int) -> dict:
    """A run's median training SPS over its iterations after the first (the first pays start-up costs, and with
    --cuda the CUDA graph's capture), and the median share of an iteration spent in the update."""
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    timed = rows[1:] or rows
    return {
        "sps": statistics.median(float(r["sps"]) for r in timed),
        "update_share": statistics.median(float(r["update_seconds"]) * float(r["sps"]) / num_steps for r in timed),
    }


def script_speeds(
    script: str,
    env_id: str,
    iterations: int,
    num_steps: int,
    extra: list[str],
    copies: int = 1,
    env_vars: dict | None = None,
) -> list[dict]:
    """run_speed of each of `copies` simultaneous runs of a script (seeds 1..copies), with its compile_seconds."""
    with tempfile.TemporaryDirectory() as runs_dir, tempfile.TemporaryDirectory() as logs:
        env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_vars or {})}
        outputs = [open(os.path.join(logs, f"{seed}.out"), "w+") for seed in range(1, copies + 1)]
        procs = [
            subprocess.Popen(
                script_command(script, env_id, iterations, num_steps, extra, runs_dir, seed),
                stdout=out,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for seed, out in zip(range(1, copies + 1), outputs)
        ]
        for proc in procs:
            _, stderr = proc.communicate()
            if proc.returncode:
                raise RuntimeError(f"{script} failed (exit {proc.returncode}): {stderr.strip().splitlines()[-1:]}")
        stdouts = []
        for out in outputs:
            out.seek(0)
            stdouts.append(out.read())
            out.close()
        return [
            {**run_speed(os.path.join(runs_dir, run), num_steps), "compile_seconds": compile_seconds(stdout)}
            for run, stdout in zip(sorted(os.listdir(runs_dir), key=lambda run: int(run.rsplit("__", 1)[1])), stdouts)
        ]


def mps_running() -> bool:
    """Whether NVIDIA's MPS control daemon runs here (its processes share the GPU instead of time-slicing it)."""
    return subprocess.run(["pgrep", "-f", "nvidia-cuda-mps"], capture_output=True).returncode == 0


def parallel_raw_env_sps(env_id: str, steps: int, copies: int) -> list[float]:
    """Steps per second of each of `copies` bare environments stepping at once, one process each."""
    with multiprocessing.get_context("spawn").Pool(copies) as pool:
        return pool.starmap(raw_env_sps, [(env_id, steps, seed) for seed in range(copies)])


def rollout_profile(env_id: str, steps: int, num_bins: int = 64, seed: int = 0) -> dict:
    """Microseconds per step of each part of ppo_vanilla.py's rollout loop, timed piece by piece with its own
    functions on one environment (SyncVectorEnv, EpisodeRecorder, the NumPy actor of an untrained agent): the env
    step, observation normalization, the policy's forward pass, sampling, and the bookkeeping (buffers, episode
    ends). The arm's loop does the same per step; timing each piece adds a few perf_counter calls."""
    from gymnasium.wrappers.utils import RunningMeanStd

    import ppo_vanilla as arm

    envs = gym.vector.SyncVectorEnv(
        [arm.make_env(env_id, seed)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP, copy=False
    )
    obs_dim = envs.single_observation_space.shape[0]
    agent = arm.Agent(obs_dim, num_bins)
    actor, bin_values, obs_rms = arm.numpy_actor(agent), agent.bin_values.numpy(), RunningMeanStd(shape=(obs_dim,))
    raw_obs, _ = envs.reset(seed=seed)
    next_obs = arm.normalize_obs(raw_obs, obs_rms, True)
    obs_buf, actions_buf = np.zeros((steps, 1, obs_dim), np.float32), np.zeros((steps, 1, arm.ACTION_DIMS), np.int64)
    rewards, dones = np.zeros((steps, 1)), np.zeros((steps, 1))
    parts = dict.fromkeys(["env step", "normalize observation", "policy forward", "sampling", "bookkeeping"], 0.0)
    clock = time.perf_counter
    for step in range(steps):
        t0 = clock()
        obs_buf[step] = next_obs
        t1 = clock()
        logits = actor(next_obs)
        t2 = clock()
        action = arm.sample_action(logits)
        t3 = clock()
        actions_buf[step] = action
        t4 = clock()
        raw_obs, reward, terminated, truncated, infos = envs.step(bin_values[action])
        t5 = clock()
        next_obs = arm.normalize_obs(raw_obs, obs_rms, True)
        t6 = clock()
        rewards[step] = reward
        done = np.logical_or(terminated, truncated)
        dones[step] = done
        if done.any():
            arm.normalize_obs(infos["final_obs"][0], obs_rms, True)
        t7 = clock()
        parts["bookkeeping"] += (t1 - t0) + (t4 - t3) + (t7 - t6)
        parts["policy forward"] += t2 - t1
        parts["sampling"] += t3 - t2
        parts["env step"] += t5 - t4
        parts["normalize observation"] += t6 - t5
    envs.close()
    return {name: 1e6 * total / steps for name, total in parts.items()}


def single_table(scripts, args, extra) -> list[dict]:
    """Per repeat: the raw env, then every script at every K (with --compile and --cuda, every script again with
    each); medians over repeats of SPS, of the per-repeat ratios to the raw env and of the update's share of an
    iteration, and for compiled runs the compilation's seconds in the first repeat (cold) and the median of the others
    (warm: loaded from the inductor cache the first one filled)."""
    modes = (
        [("", [])]
        + ([(" --compile", ["--compile"])] if getattr(args, "compile", False) else [])
        + ([(" --cuda", ["--cuda"])] if getattr(args, "cuda", False) else [])
    )
    bins = getattr(args, "num_bins", None) or [None]
    timed = [(script, k, label, flags) for script in scripts for k in bins for label, flags in modes]
    env, speeds = [], {(s, k, label): [] for s, k, label, _ in timed}
    with tempfile.TemporaryDirectory() as cache:  # this invocation's inductor cache: the first compilation is cold
        for _ in range(args.repeats):
            for script, k, label, flags in timed:
                before = raw_env_sps(args.env_id, args.env_steps)
                (speed,) = script_speeds(
                    script,
                    args.env_id,
                    args.iterations,
                    args.num_steps,
                    extra + ([] if k is None else ["--num-bins", str(k)]) + flags,
                    env_vars={"TORCHINDUCTOR_CACHE_DIR": cache},
                )
                env_now = (
                    before + raw_env_sps(args.env_id, args.env_steps)
                ) / 2  # the env's speed around the script's run
                env.append(env_now)
                speeds[script, k, label].append({**speed, "ratio": speed["sps"] / env_now})
    rows = [{"what": "raw environment", "sps": statistics.median(env), "ratio": 1.0, "update_share": 0.0}]
    for s, k, label, _ in timed:
        runs = speeds[s, k, label]
        row = {
            "what": os.path.basename(s) + ("" if k is None else f" K={k}") + label,
            **{key: statistics.median(r[key] for r in runs) for key in ("sps", "ratio", "update_share")},
        }
        if label:  # against the eager path's runs of the same repeats
            eager = speeds[s, k, ""]
            row["speedup"] = statistics.median(r["sps"] / e["sps"] for r, e in zip(runs, eager))
        if runs[0]["compile_seconds"] is not None:
            row["compile_cold"] = runs[0]["compile_seconds"]
            row["compile_warm"] = statistics.median(r["compile_seconds"] for r in runs[1:]) if len(runs) > 1 else None
        rows.append(row)
    return rows


def parallel_table(script, args, extra) -> list[dict]:
    """Per N: the total SPS of N copies against N x one copy's (measured in the same run), for the script and for
    the bare environment; with --cuda, also N copies with --cuda sharing the GPU, against the N CPU copies."""
    (alone,) = script_speeds(script, args.env_id, args.iterations, args.num_steps, extra)
    env_alone = raw_env_sps(args.env_id, args.env_steps)
    rows = []
    for n in args.parallel:
        each = script_speeds(script, args.env_id, args.iterations, args.num_steps, extra, copies=n)
        env_each = parallel_raw_env_sps(args.env_id, args.env_steps, n)
        total = sum(speed["sps"] for speed in each)
        row = {
            "copies": n,
            "sps_each": total / n,
            "efficiency": total / (n * alone["sps"]),
            "env_each": statistics.mean(env_each),
            "env_efficiency": sum(env_each) / (n * env_alone),
            "total": total,
            "update_share": statistics.mean(speed["update_share"] for speed in each),
        }
        if getattr(args, "compile", False):
            compiled_each = script_speeds(
                script, args.env_id, args.iterations, args.num_steps, extra + ["--compile"], copies=n
            )
            compiled_total = sum(speed["sps"] for speed in compiled_each)
            row.update(
                compiled_total=compiled_total,
                compiled_ratio=compiled_total / total,
                compiled_update_share=statistics.mean(speed["update_share"] for speed in compiled_each),
            )
        if getattr(args, "cuda", False):
            # the update's share with N copies says whether the shared GPU (update) or the shared cores (rollout) limit
            cuda_each = script_speeds(
                script, args.env_id, args.iterations, args.num_steps, extra + ["--cuda"], copies=n
            )
            cuda_total = sum(speed["sps"] for speed in cuda_each)
            row.update(
                cuda_total=cuda_total,
                cuda_ratio=cuda_total / total,
                cuda_update_share=statistics.mean(speed["update_share"] for speed in cuda_each),
            )
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scripts", nargs="+", help="arm scripts to time (e.g. ppo_vanilla.py)")
    parser.add_argument("--env-id", default="button-press-v3")
    parser.add_argument(
        "--iterations", type=int, default=3, help="PPO iterations per script run (the first is not timed)"
    )
    parser.add_argument("--num-steps", type=int, default=2048, help="rollout length (the paper's 2048)")
    parser.add_argument("--env-steps", type=int, default=5000, help="steps of each raw-environment measurement")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the single-process table")
    parser.add_argument(
        "--parallel",
        type=int,
        nargs="*",
        default=[],
        help="instead of the single-process table: copies at once of each script, e.g. 1 2 4 8 16",
    )
    parser.add_argument("--extra", default="", help="extra flags passed to every script, e.g. '--num-bins 32'")
    parser.add_argument(
        "--profile-rollout",
        action="store_true",
        help="instead: microseconds per step of each part of ppo_vanilla.py's rollout, beside the raw env's step",
    )
    parser.add_argument(
        "--cuda",
        action="store_true",
        help="also time every script with --cuda (CUDA-graph update) beside its CPU path (needs a GPU)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time every script with --compile (torch.compile'd update) beside its eager path",
    )
    parser.add_argument(
        "--num-bins",
        type=int,
        nargs="*",
        default=[],
        help="time every script at each of these K (e.g. 64 256), in the same repeats",
    )
    args = parser.parse_args()
    for script in args.scripts:
        if not os.path.isfile(script):
            parser.error(f"no such script: {script}")
    if min([args.iterations, args.num_steps, args.env_steps, args.repeats, *args.parallel]) < 1:
        parser.error("--iterations, --num-steps, --env-steps, --repeats and --parallel must be at least 1")
    if any(k < 2 for k in args.num_bins):
        parser.error("--num-bins must be at least 2")
    if args.num_bins and (args.parallel or args.profile_rollout):
        parser.error("--num-bins is for the single-process table; pass --extra '--num-bins K' with --parallel")
    extra = args.extra.split()
    if args.cuda:
        import torch

        if not torch.cuda.is_available():
            parser.error("--cuda: torch sees no CUDA device here")
        print(
            f"GPU: {torch.cuda.get_device_name()}; MPS {'is running' if mps_running() else 'is not running (several --cuda processes will time-slice the GPU; as root: nvidia-cuda-mps-control -d)'}"
        )

    print(f"{args.env_id}, rollout {args.num_steps}, {args.iterations} iterations per run, cores: {os.cpu_count()}")
    if args.profile_rollout:
        num_bins = int(extra[extra.index("--num-bins") + 1]) if "--num-bins" in extra else 64
        raw = 1e6 / raw_env_sps(args.env_id, args.env_steps)
        parts = rollout_profile(args.env_id, args.env_steps, num_bins)
        raw_after = 1e6 / raw_env_sps(args.env_id, args.env_steps)
        total = sum(parts.values())
        print(f"ppo_vanilla.py's rollout, K = {num_bins}, {args.env_steps} steps: microseconds per step")
        for name, us in [
            ("raw environment (bare gym.make, random actions)", (raw + raw_after) / 2),
            *parts.items(),
            ("rollout total", total),
        ]:
            print(f"{name:<50} {us:>8.1f}")
        print(f"the rollout alone runs at {(raw + raw_after) / 2 / total:.2f} of the raw environment's speed")
        return
    if not args.parallel:
        print(
            f"medians of {args.repeats} repeats"
            + (
                "; speedup: against the same script's eager runs, per repeat; "
                "compile: the first step's seconds, cold / warm cache"
                if args.compile
                else ""
            )
        )
        extra_header = f" {'speedup':>7} {'compile s':>11}" if args.compile or args.cuda else ""
        print(f"{'':<42} {'steps/s':>9} {'of raw env':>10} {'update':>7}{extra_header}")
        for row in single_table(args.scripts, args, extra):
            cells = ""
            if "speedup" in row:
                warm = f"{row['compile_warm']:.1f}" if row.get("compile_warm") is not None else "-"
                cells = f" {row['speedup']:>7.2f}" + (
                    f" {row['compile_cold']:>5.1f} / {warm:<4}" if "compile_cold" in row else ""
                )
            print(
                f"{row['what']:<42} {row['sps']:>9,.0f} {row['ratio']:>10.2f} {row['update_share']:>7.0%}{cells}",
                flush=True,
            )
        return
    for script in args.scripts:
        print(f"{os.path.basename(script)}: N copies at once against one alone")
        compiled_header = f" {'--compile total':>15} {'ratio':>6} {'--compile update':>16}" if args.compile else ""
        cuda_header = f" {'--cuda total':>12} {'ratio':>6} {'--cuda update':>13}" if args.cuda else ""
        print(
            f"{'N':>3} {'SPS each':>9} {'efficiency':>10} {'update':>7} {'raw env each':>12} {'env efficiency':>14}"
            f" {'total':>8}{compiled_header}{cuda_header}"
        )
        for row in parallel_table(script, args, extra):
            compiled_cells = (
                (
                    f" {row['compiled_total']:>15,.0f} {row['compiled_ratio']:>6.2f}"
                    f" {row['compiled_update_share']:>16.0%}"
                )
                if args.compile
                else ""
            )
            cuda_cells = (
                (f" {row['cuda_total']:>12,.0f} {row['cuda_ratio']:>6.2f} {row['cuda_update_share']:>13.0%}")
                if args.cuda
                else ""
            )
            print(
                f"{row['copies']:>3} {row['sps_each']:>9,.0f} {row['efficiency']:>10.2f} {row['update_share']:>7.0%} "
                f"{row['env_each']:>12,.0f} {row['env_efficiency']:>14.2f} {row['total']:>8,.0f}{compiled_cells}{cuda_cells}",
                flush=True,
            )


if __name__ == "__main__":
    main()
