"""Every arm script end to end on a real MetaWorld task: outputs, bad input, resume, NaN handling."""

import functools
import json
import math
import os
import runpy
import shlex
import signal
import subprocess
import sys
import time

import imageio
import numpy as np
import pytest
import torch

from conftest import PATIENCE, ROOT, SHORT_RUN, comparable, read_csv, run_script

REQUIRED_METRICS = [
    "global_step",
    "success_rate",
    "success_rate_last_step",
    "episodic_return",
    "policy_entropy",
    "effective_bins",
    "approx_kl",
    "clipfrac",
    "explained_variance",
    "value_loss",
    "policy_loss",
    "sps",
    "update_seconds",
]


def check_outputs(run_dir, iterations: int):
    """The files every run writes, with sane contents."""
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary) >= {
        "final_success",
        "auc",
        "steps_to_half",
        "wall_seconds",
        "total_steps",
        "final_success_last_step",
        "auc_last_step",
        "steps_to_half_last_step",
    }
    assert 0.0 <= summary["final_success"] <= 1.0 and 0.0 <= summary["auc"] <= 1.0 and summary["wall_seconds"] > 0
    config = json.loads((run_dir / "config.json").read_text())
    assert {"env_id", "num_bins", "learning_rate", "seed", "git_revision", "packages"} <= set(config)
    assert set(config["packages"]) >= {"torch", "gymnasium", "metaworld", "mujoco"}
    metrics = read_csv(run_dir / "metrics.csv")
    assert len(metrics) == iterations and set(REQUIRED_METRICS) <= set(metrics[0])
    for row in metrics:
        for key in REQUIRED_METRICS:
            if key not in ("success_rate", "success_rate_last_step", "episodic_return") or int(
                row["episodes"]
            ):  # none before an episode ends
                assert math.isfinite(float(row[key])), (key, row)
        assert 0 < float(row["effective_bins"]) <= 64 and 0 < float(row["policy_entropy"]) <= 4 * math.log(64) + 1e-4
    episodes = read_csv(run_dir / "episodes.csv")
    assert len(episodes) == summary["episodes"] >= 1 and all(int(e["episodic_length"]) == 500 for e in episodes)
    assert all(float(e["success_last_step"]) <= float(e["success"]) for e in episodes)  # last step is one of any steps
    evals = read_csv(run_dir / "eval.csv")
    assert len(evals) >= 1 and {
        "sampled_success",
        "greedy_success",
        "sampled_success_last_step",
        "greedy_success_last_step",
    } <= set(evals[0])
    assert (run_dir / "checkpoint.pt").exists()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set(EventAccumulator(str(run_dir)).Reload().Tags()["scalars"])
    assert {
        "charts/episodic_return",
        "charts/success_rate",
        "charts/success_rate_last_step",
        "charts/SPS",
        "losses/value_loss",
        "losses/policy_loss",
        "losses/approx_kl",
        "eval/sampled_success_rate",
        "eval/greedy_success_rate",
    } <= tags
    return metrics, summary


def test_vanilla_short_run_with_v2_name(tmp_path):
    flags = [f if f != "reach-v3" else "button-press-v2" for f in SHORT_RUN]
    result = run_script("ppo_vanilla.py", tmp_path, *flags)
    assert result.returncode == 0, result.stderr
    assert "using button-press-v3" in result.stdout and "iter 4/4" in result.stdout
    run_dir = tmp_path / "button-press-v3__ppo_vanilla__1"
    check_outputs(run_dir, iterations=4)
    # a finished run is reported, not repeated
    again = run_script("ppo_vanilla.py", tmp_path, *flags)
    assert again.returncode == 0 and "already complete" in again.stdout and "iter" not in again.stdout


MASK_WARMUP = ["--mask-warmup-start", "0", "--mask-warmup-end", "512"]
MASKING_RUNS = [
    ("ppo_random_mask.py", ["--mask-mode", "soft"]),
    ("ppo_random_mask.py", ["--mask-mode", "hard"]),
    ("ppo_utility_mask.py", ["--mask-mode", "soft"]),
    ("ppo_utility_mask.py", ["--mask-mode", "hard", "--utility-threshold", "0.5"]),
    ("ppo_utility_mask.py", ["--mask-mode", "gumbel"]),
    ("ppo_utility_mask.py", ["--mask-mode", "boost"]),
    ("ppo_utility_mask.py", ["--credit", "broadcast"]),
]


@pytest.mark.parametrize("script,flags", MASKING_RUNS, ids=[f"{s[4:-3]}-{'-'.join(f[1::2])}" for s, f in MASKING_RUNS])
def test_masking_arm_short_run(tmp_path, script, flags):
    result = run_script(script, tmp_path, *SHORT_RUN, *MASK_WARMUP, *flags)
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / f"reach-v3__{script[:-3]}__1"
    metrics, _ = check_outputs(run_dir, iterations=4)
    counts = read_csv(run_dir / "mask_counts.csv")
    assert len(counts) == 4 and len(counts[0]) == 3 + 4 * 64
    module = __import__(script[:-3])
    args = module.Args(mask_warmup_start=0, mask_warmup_end=512)
    mode = flags[flags.index("--mask-mode") + 1] if "--mask-mode" in flags else "soft"
    for i, (row, count) in enumerate(zip(metrics, counts)):
        masked = sum(int(v) for k, v in count.items() if k.startswith("d"))
        assert masked == pytest.approx(float(row["mask_fraction"]) * 256 * 4 * 64)
        # the budget schedule at each of the iteration's 256 steps
        scheduled = sum(module.masked_bins_per_dim(step, args) for step in range(256 * i + 1, 256 * (i + 1) + 1)) * 4
        if mode == "boost":
            assert masked == 0
        elif script == "ppo_random_mask.py" or mode == "gumbel":
            assert masked == scheduled
        else:
            assert masked <= scheduled
        # two entropies: the policy's own (unmasked, as vanilla logs it) and the masked one that sampled
        policy, sampling = float(row["policy_entropy"]), float(row["sampling_entropy"])
        if masked == 0 and mode != "boost":
            assert sampling == pytest.approx(policy, abs=1e-5)
        elif mode in ("hard", "soft", "gumbel"):
            assert sampling < policy - 0.01  # masking concentrates the sampling distribution
    if script == "ppo_utility_mask.py":
        for row in metrics:
            assert math.isfinite(float(row["utility_loss"])) and -1 <= float(row["rank_agreement"]) <= 1


BAD_INPUTS = [
    (["--env-id", "buton-press-v2"], "button-press-v3"),
    (["--num-bins", "1"], "--num-bins"),
    (["--num-steps", "100", "--minibatch-size", "64"], "multiple"),
    (["--total-timesteps", "100"], "less than one rollout"),
    (["--gamma", "1.5"], "--gamma"),
    (["--gae-lambda", "-0.1"], "--gae-lambda"),
    (["--clip-coef", "0"], "--clip-coef"),
    (["--capture-video-greedy"], "pass both"),
    (["--capture-video", "--eval-interval", "0"], "--eval-interval 0"),
    (["--keep-checkpoints-at", "0"], "--keep-checkpoints-at"),
]


BAD_INPUTS = (
    [("ppo_vanilla.py", flags, hint) for flags, hint in BAD_INPUTS]
    + [
        ("ppo_random_mask.py", ["--mask-budget", "1.5"], "--mask-budget"),
        ("ppo_random_mask.py", ["--mask-warmup-start", "200", "--mask-warmup-end", "100"], "warm-up"),
        ("ppo_random_mask.py", ["--soft-mask-penalty", "0"], "--soft-mask-penalty"),
        ("ppo_utility_mask.py", ["--mask-budget", "-0.1"], "--mask-budget"),
        ("ppo_utility_mask.py", ["--utility-threshold", "-1"], "--utility-threshold"),
        ("ppo_utility_mask.py", ["--num-bins", "1"], "--num-bins"),
        ("ppo_vanilla.py", ["--compile", "--cuda"], "pass one of them"),
    ]
    + ([] if torch.cuda.is_available() else [("ppo_utility_mask.py", ["--cuda"], "CUDA")])
)


@pytest.mark.parametrize("script,flags,hint", BAD_INPUTS, ids=[f"{s[4:-3]}{f[0]}" for s, f, _ in BAD_INPUTS])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, script, flags, hint):
    result = run_script(script, tmp_path, *flags)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and hint in lines[0], result.stderr
    assert "Traceback" not in result.stderr and not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "script",
    [
        "ppo_vanilla.py",
        "ppo_random_mask.py",
        "ppo_utility_mask.py",
        "ppo_loss_shaping.py",
        "ppo_offpolicy_utility_mask.py",
    ],
)
def test_a_runs_dir_that_is_a_file_is_one_line(tmp_path, script):
    a_file = tmp_path / "runs"
    a_file.write_text("not a folder")
    result = run_script(script, a_file, *SHORT_RUN)
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: --runs-dir {a_file} is a file, not a directory"
    assert [p.name for p in tmp_path.iterdir()] == ["runs"] and a_file.read_text() == "not a folder"


def test_unreadable_checkpoint_and_unfinished_run(tmp_path):
    run_dir = tmp_path / "reach-v3__ppo_vanilla__1"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_bytes(b"not a checkpoint")
    result = run_script("ppo_vanilla.py", tmp_path, *SHORT_RUN, "--resume")
    assert result.returncode == 2 and "cannot read checkpoint" in result.stderr and f"remove {run_dir}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    result = run_script("ppo_vanilla.py", tmp_path, *SHORT_RUN)  # without --resume: refuses to overwrite
    assert result.returncode == 2 and "--resume" in result.stderr
    assert not (run_dir / "summary.json").exists()


def with_flag(flags: list, name: str, value: str) -> list:
    """flags with `name` set to `value` (replaced where present)."""
    flags = list(flags)
    if name in flags:
        flags[flags.index(name) + 1] = value
        return flags
    return [*flags, name, value]


def kill_after_checkpoint(script, runs_dir, run_dir, flags, min_iteration: int, sig=signal.SIGKILL, then=None):
    """Start a run, send it `sig` (and `then`, a moment later) once its checkpoint has reached `min_iteration`
    (mid-run); returns (exit status, stderr)."""
    cmd = [sys.executable, str(ROOT / script), "--runs-dir", str(runs_dir), *flags]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.time() + PATIENCE
    while time.time() < deadline and proc.poll() is None:
        ckpt = run_dir / "checkpoint.pt"
        if ckpt.exists():
            try:
                if torch.load(ckpt, weights_only=False)["iteration"] >= min_iteration:
                    break
            except Exception:
                pass  # being replaced right now
        time.sleep(0.05)
    proc.send_signal(sig)
    if then is not None:
        time.sleep(0.02)
        proc.send_signal(then)
    _, stderr = proc.communicate()
    assert not (run_dir / "summary.json").exists(), "the run finished before it could be killed"
    return proc.returncode, stderr


@pytest.mark.parametrize(
    "script,extra,sig,then",
    [
        # Ctrl-C under `timeout` or a sweep: SIGINT, then SIGTERM passed on by benchmark.sh during the shutdown
        ("ppo_vanilla.py", [], signal.SIGINT, signal.SIGTERM),
        ("ppo_random_mask.py", ["--mask-warmup-start", "0", "--mask-warmup-end", "1024"], signal.SIGTERM, None),
        (
            "ppo_utility_mask.py",
            ["--mask-warmup-start", "0", "--mask-warmup-end", "1024", "--utility-threshold", "0"],
            signal.SIGKILL,
            None,
        ),
        # a structured action head (a non-default --action-head) resumes as exactly
        (
            "ppo_random_mask.py",
            ["--mask-warmup-start", "0", "--mask-warmup-end", "1024", "--action-head", "poisson"],
            signal.SIGKILL,
            None,
        ),
        # --compile: the resumed process compiles the step again, from the restored state, and takes the same steps
        (
            "ppo_utility_mask.py",
            ["--mask-warmup-start", "0", "--mask-warmup-end", "1024", "--compile"],
            signal.SIGKILL,
            None,
        ),
    ],
    ids=[
        "vanilla-SIGINT-then-SIGTERM",
        "random-SIGTERM",
        "utility-SIGKILL",
        "random-poisson-head-SIGKILL",
        "utility-compile-SIGKILL",
    ],
)
def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path, script, extra, sig, then):
    flags = [
        "--env-id",
        "reach-v3",
        "--num-steps",
        "256",
        "--total-timesteps",
        "3072",
        "--update-epochs",
        "2",
        "--checkpoint-interval",
        "2",
        "--eval-interval",
        "1024",
        "--eval-episodes",
        "1",
        *extra,
    ]
    name = script[:-3]
    assert run_script(script, tmp_path, *flags, "--exp-name", "straight").returncode == 0
    run_dir = tmp_path / "reach-v3__killed__1"
    status, stderr = kill_after_checkpoint(
        script, tmp_path, run_dir, [*flags, "--exp-name", "killed"], min_iteration=4, sig=sig, then=then
    )
    if sig != signal.SIGKILL:  # Ctrl-C and SIGTERM: one line with where it stopped and the command that resumes
        assert status == 128 + sig, stderr
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in stderr, stderr
        assert (
            lines[0].startswith(f"stopped by {sig.name} during iteration ")
            and "last checkpoint: iteration " in lines[0]
        )
        command = shlex.split(lines[0].split("resume with: ")[1])
        assert command[0] == "python" and command[-1] == "--resume" and "killed" in command
    result = run_script(script, tmp_path, *flags, "--exp-name", "killed", "--resume")
    assert result.returncode == 0 and "resuming" in result.stdout, result.stderr
    assert comparable(run_dir) == comparable(tmp_path / "reach-v3__straight__1"), name
    resumed = json.loads((run_dir / "config.json").read_text())["resumed"]
    assert len(resumed) == 1 and "--resume" in resumed[0]["command"]


def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    flags = with_flag(SHORT_RUN, "--total-timesteps", "3072")  # 12 iterations, a checkpoint every 2
    assert run_script("ppo_vanilla.py", tmp_path, *flags, "--exp-name", "straight").returncode == 0
    run_dir = tmp_path / "reach-v3__killed__1"
    kill_after_checkpoint("ppo_vanilla.py", tmp_path, run_dir, [*flags, "--exp-name", "killed"], min_iteration=4)
    newest = run_dir / "checkpoint.pt"
    previous = torch.load(run_dir / "checkpoint.prev.pt", weights_only=False)["iteration"]
    assert previous == torch.load(newest, weights_only=False)["iteration"] - 2
    newest.write_bytes(newest.read_bytes()[:1000])  # a crash or a full disk mid-write
    result = run_script("ppo_vanilla.py", tmp_path, *flags, "--exp-name", "killed", "--resume")
    assert result.returncode == 0, result.stderr
    assert f"falling back to the previous checkpoint (iteration {previous})" in result.stderr
    assert f"resuming reach-v3__killed__1 from iteration {previous} " in result.stdout
    assert comparable(run_dir) == comparable(tmp_path / "reach-v3__straight__1")


def test_resume_without_checkpoint_says_so_and_a_complete_run_keeps_its_settings(tmp_path):
    result = run_script("ppo_vanilla.py", tmp_path, *SHORT_RUN, "--resume")  # e.g. a typo in --exp-name or --seed
    run_dir = tmp_path / "reach-v3__ppo_vanilla__1"
    assert result.returncode == 0 and f"no checkpoint in {run_dir}: starting a new run" in result.stdout
    assert (run_dir / "summary.json").exists()
    # the same run directory asked for with other settings (a longer budget): refused in one line, not "complete"
    result = run_script("ppo_vanilla.py", tmp_path, *with_flag(SHORT_RUN, "--total-timesteps", "2048"), "--resume")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and "complete run with other settings" in lines[0]
        and "total_timesteps (1024 -> 2048)" in lines[0]
    )


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    """The real script, run in-process, with gradients poisoned from the third iteration on."""
    real_clip = torch.nn.utils.clip_grad_norm_
    calls = {"n": 0}

    def poisoned_clip(params, *args, **kwargs):
        params = list(params)
        calls["n"] += 1
        if calls["n"] > 2 * 8:  # 8 minibatches per iteration (2 epochs x 256/64)
            for p in params:
                p.grad.fill_(float("nan"))
        return real_clip(params, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", poisoned_clip)
    monkeypatch.setattr(
        sys, "argv", ["ppo_vanilla.py", "--runs-dir", str(tmp_path), *SHORT_RUN, "--checkpoint-interval", "1"]
    )
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(ROOT / "ppo_vanilla.py"), run_name="__main__")
    assert e.value.code == 1
    assert "non-finite loss at iteration 3" in capsys.readouterr().err
    run_dir = tmp_path / "reach-v3__ppo_vanilla__1"
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["iteration"] == 2
    assert not (run_dir / "summary.json").exists() and len(read_csv(run_dir / "metrics.csv")) == 2


def test_track_with_wandb_offline(tmp_path):
    result = run_script("ppo_vanilla.py", tmp_path, *SHORT_RUN, "--track", env_vars={"WANDB_MODE": "offline"})
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "reach-v3__ppo_vanilla__1"
    assert (run_dir / "summary.json").exists()
    assert any(p.name.startswith("offline-run") for p in (run_dir / "wandb").iterdir())


@functools.cache
def gl_backend() -> tuple:
    """The first of MuJoCo's headless OpenGL backends that can film here, checked as --capture-video checks it
    (check_video renders a frame and encodes it), or None and each one's error line."""
    errors = []
    for backend in ("egl", "osmesa"):
        result = subprocess.run(
            [sys.executable, "-c", "import ppo_vanilla; ppo_vanilla.check_video('reach-v3')"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=PATIENCE,
            env={**os.environ, "MUJOCO_GL": backend, "PYTHONWARNINGS": "ignore"},
        )
        if result.returncode == 0:
            return backend, ""
        errors.append((result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1])
    return None, " | ".join(errors)


def test_capture_video_films_playable_mp4s_and_changes_no_number(tmp_path):
    backend, errors = gl_backend()
    if backend is None:
        pytest.skip(f"no headless OpenGL backend for MuJoCo on this machine (docs/running.md, Videos): {errors}")
    # 2 iterations, one evaluation at the end with 2 episodes per policy: the first of each is filmed
    flags = [*with_flag(with_flag(SHORT_RUN, "--total-timesteps", "512"), "--eval-episodes", "2")]
    result = run_script(
        "ppo_vanilla.py",
        tmp_path,
        *flags,
        "--exp-name",
        "filmed",
        "--capture-video",
        "--capture-video-greedy",
        "--track",
        env_vars={"MUJOCO_GL": backend, "WANDB_MODE": "offline"},
    )
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "reach-v3__filmed__1"
    assert f"filming evaluation episodes into {run_dir / 'videos'} (MUJOCO_GL={backend})" in result.stdout
    videos = sorted(p.name for p in (run_dir / "videos").iterdir())
    assert videos == ["greedy-step0000512.mp4", "sampled-step0000512.mp4"]
    for name in videos:
        frames = np.stack(imageio.v2.mimread(run_dir / "videos" / name, memtest=False))
        assert frames.shape == (500, 240, 240, 3)  # one frame per step of the 500-step episode
        assert frames[0].std() > 20 and np.abs(frames[-1].astype(int) - frames[0]).mean() > 1  # a scene, that moves
    logged = sorted(p.name for p in (run_dir / "wandb").glob("offline-run-*/files/media/videos/videos/*.mp4"))
    assert [name.split("_")[0] for name in logged] == ["greedy", "sampled"], logged  # --track: W&B has both
    # The same run without --capture-video computes exactly the same numbers, and loads no OpenGL at all: a
    # MUJOCO_GL that cannot load does not matter to it
    plain = run_script("ppo_vanilla.py", tmp_path, *flags, "--exp-name", "plain", env_vars={"MUJOCO_GL": "bogus"})
    assert plain.returncode == 0, plain.stderr
    assert comparable(tmp_path / "reach-v3__plain__1") == comparable(run_dir)
    assert not (tmp_path / "reach-v3__plain__1" / "videos").exists()


def test_video_only_a_filming_runs_evaluation_env_renders():
    import ppo_vanilla
    import training_run

    assert ppo_vanilla.make_env("reach-v3", 1)().render_mode is None
    env = ppo_vanilla.make_env("reach-v3", 1, **training_run.VIDEO_RENDER)()
    assert env.render_mode == "rgb_array" and env.unwrapped.camera_name == training_run.VIDEO_CAMERA


@pytest.mark.parametrize(
    "env_vars",
    [
        {"MUJOCO_GL": "bogus"},  # not a backend
        {"MUJOCO_GL": "egl", "PYOPENGL_PLATFORM": "osmesa"},  # a backend that cannot load: PyOpenGL is bound to another
    ],
    ids=["unknown-backend", "backend-cannot-load"],
)
def test_capture_video_without_a_usable_gl_backend_is_one_line_and_writes_nothing(tmp_path, env_vars):
    result = run_script("ppo_vanilla.py", tmp_path, *SHORT_RUN, "--capture-video", env_vars=env_vars)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"error: --capture-video cannot film with MUJOCO_GL={env_vars['MUJOCO_GL']} (")
    assert "libegl1" in lines[0] and "libosmesa6" in lines[0]
    assert not any(tmp_path.iterdir())


EVALUATION_RUNS = [
    ("ppo_vanilla.py", []),
    ("ppo_random_mask.py", MASK_WARMUP),
    ("ppo_utility_mask.py", [*MASK_WARMUP, "--mask-mode", "gumbel"]),  # gumbel: the masker itself draws numbers
    ("ppo_loss_shaping.py", []),
    (
        "ppo_offpolicy_utility_mask.py",
        [*MASK_WARMUP, "--mask-mode", "gumbel", "--replay-rollouts", "2", "--utility-updates-per-iteration", "4"],
    ),
]


@pytest.mark.parametrize("script,extra", EVALUATION_RUNS, ids=[s[4:-3] for s, _ in EVALUATION_RUNS])
def test_evaluation_does_not_perturb_training(tmp_path, script, extra):
    """Evaluation samples (and masks) from its own generator: how often a run evaluates changes none of the numbers
    training produces (before, --eval-interval 0 and 2048 gave different returns by iteration 3)."""
    flags = [*with_flag(SHORT_RUN, "--eval-interval", "256"), *extra]
    assert run_script(script, tmp_path, *flags, "--exp-name", "often").returncode == 0
    assert (
        run_script(script, tmp_path, *with_flag(flags, "--eval-interval", "0"), "--exp-name", "never").returncode == 0
    )
    often, never = comparable(tmp_path / "reach-v3__often__1"), comparable(tmp_path / "reach-v3__never__1")
    assert often[:3] == never[:3]  # metrics, summary, episodes
    assert len(read_csv(tmp_path / "reach-v3__often__1" / "eval.csv")) == 4
