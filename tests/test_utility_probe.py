"""utility_probe.py: the exact simulator restore, the Monte Carlo token values on cases with a known answer (a
synthetic reward that depends only on the first action's x bin), bad input, and an end-to-end probe of a real tiny
ppo_utility_mask.py checkpoint."""

import dataclasses
import importlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import utility_probe as probe
from conftest import PATIENCE, ROOT, SHORT_RUN, comparable, read_csv, run_script

NUM_BINS = 16
TARGET = 0.5  # the synthetic reward peaks where the x action is 0.5


def synthetic_reward(obs, action):
    """Depends on the action's x component only, so a token's true value is known: at the first step, every x bin's
    reward is 10 * (1 - |x - 0.5|); every later step's reward depends on the policy's own draw."""
    return 10.0 * (1.0 - abs(float(action[0]) - TARGET)), {"success": 0.0}


def synthetic_checkpoint(arm, episode_in_progress, value_bias=0.0, **config_changes):
    """A checkpoint of `arm` whose policy ignores the state (zero actor weights, random logits in the last bias): its
    later actions are drawn from one fixed distribution whatever the first token did. The critic is the constant
    value_bias (normalized scale), de-normalized with a value mean of 3 and a variance of 4."""
    torch.manual_seed(0)
    agent = arm.Agent(39, NUM_BINS)
    with torch.no_grad():
        for layer in (agent.actor[-1], agent.critic[-1]):
            layer.weight.zero_()
        agent.actor[-1].bias.copy_(3.0 * torch.randn(4 * NUM_BINS))
        agent.critic[-1].bias.fill_(value_bias)
    config = {**dataclasses.asdict(arm.Args()), "env_id": "reach-v3", "seed": 1, "num_bins": NUM_BINS, **config_changes}
    return {
        "config": config,
        "agent": agent.state_dict(),
        "global_step": 100_000,
        "obs_rms": (np.zeros(39), np.ones(39), 1.0),
        "value_rms": (np.float64(3.0), np.float64(4.0), 1.0),
        "envs": [episode_in_progress],
    }


def episode_state(arm, steps: int, env_id="reach-v3", seed=1):
    """The replay state of an env `steps` random steps into its first episode."""
    env = arm.make_env(env_id, seed)()
    env.reset(seed=seed)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        env.step(rng.uniform(-1, 1, 4).astype(np.float32))
    return env.episode_state()


def with_synthetic_reward(envs):
    for env in envs.envs:
        env.unwrapped.evaluate_state = synthetic_reward
    return envs


def test_a_restored_state_replays_the_wrapped_env_bit_for_bit():
    arm = importlib.import_module("ppo_utility_mask")
    env = arm.make_env("button-press-v3", 3)()
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(470):  # 30 steps before MetaWorld's 500-step truncation
        env.step(rng.uniform(-1, 1, 4).astype(np.float32))
    saved = probe.save_simulator_state(env)
    actions = rng.uniform(-1, 1, (30, 4)).astype(np.float32)
    reference = []
    for action in actions:  # through the whole wrapper stack, as training steps
        obs, reward, terminated, truncated, _ = env.step(action)
        reference.append((obs, float(reward), terminated or truncated))
    assert reference[-1][2] and not any(r[2] for r in reference[:-1])
    for _ in range(2):  # restored twice: the first replay must not leak into the second
        probe.restore_simulator_state(env, saved)
        replayed = [probe.simulator_step(env, action) for action in actions]
        for (obs, reward, done), (obs2, reward2, truncated2) in zip(reference, replayed):
            np.testing.assert_array_equal(obs, obs2)
            assert reward == reward2 and done == truncated2
        for _ in range(3):  # wander elsewhere before the next restore
            probe.restore_simulator_state(env, saved)
            for action in rng.uniform(-1, 1, (10, 4)).astype(np.float32):
                probe.simulator_step(env, action)


def test_common_random_numbers_give_each_token_its_exact_value_even_where_the_mask_removes_it():
    """Known answer. The policy ignores the state and the reward depends only on actions, so under common random
    numbers every token's rollouts share all later actions: x tokens differ by exactly their first-step reward, and
    the other dimensions' tokens change nothing. The random arm's hard mask removes half the bins at every step; the
    forced token must still be the one taken."""
    arm = importlib.import_module("ppo_random_mask")
    episode_in_progress = episode_state(arm, 30)
    config = {"mask_mode": "hard", "mask_budget": 0.5, "mask_warmup_start": 0, "mask_warmup_end": 0}
    policy = probe.BehaviourPolicy(arm, synthetic_checkpoint(arm, episode_in_progress, **config))
    assert policy.masker == "random"
    offsets = policy.logit_offset(np.zeros((5, 39), dtype=np.float32))
    assert np.all((offsets == -arm.HARD_MASK_PENALTY).sum(-1) == NUM_BINS // 2)
    envs = with_synthetic_reward(probe.LockstepEnvs.from_checkpoint(arm, "reach-v3", 1, episode_in_progress, copies=3))
    bins = probe.probed_bins(NUM_BINS, 8)
    tokens = [(d, k) for d in range(4) for k in bins]
    horizon, gamma = 5, 0.9
    returns = envs.token_returns(policy, tokens, horizon, gamma, True, seed=7).reshape(4, len(bins), 3)
    assert envs.rollout_steps == len(tokens) * 3 * horizon

    first_step_reward = 10.0 * (1.0 - np.abs(policy.bin_values[bins] - TARGET))
    expected_gap = (first_step_reward - first_step_reward[0])[:, None]  # the same in each of the 3 rollouts
    np.testing.assert_allclose(returns[0] - returns[0, :1], np.broadcast_to(expected_gap, returns[0].shape), atol=1e-9)
    for d in (1, 2, 3):
        assert np.all(returns[d] == returns[d, :1])
    assert not np.all(returns[0, :, 0] == returns[0, :, 1])  # the rollouts themselves differ

    # the bootstrap: a critic worth 1 more on the normalized scale adds gamma^H * its real-scale std to every return
    richer = probe.BehaviourPolicy(arm, synthetic_checkpoint(arm, episode_in_progress, value_bias=1.0, **config))
    assert richer.value_std == pytest.approx(2.0)
    richer_returns = envs.token_returns(richer, tokens, horizon, gamma, True, seed=7).reshape(4, len(bins), 3)
    np.testing.assert_allclose(richer_returns - returns, gamma**horizon * richer.value_std, atol=1e-9)


@pytest.mark.parametrize("bootstrap_truncation", [True, False])
def test_a_rollout_stops_at_the_episode_end_and_bootstraps_as_the_run_did(bootstrap_truncation):
    arm = importlib.import_module("ppo_vanilla")
    episode_in_progress = episode_state(arm, 497)  # 3 steps before the truncation
    envs = with_synthetic_reward(probe.LockstepEnvs.from_checkpoint(arm, "reach-v3", 1, episode_in_progress, copies=2))
    policies = [
        probe.BehaviourPolicy(
            arm,
            synthetic_checkpoint(arm, episode_in_progress, value_bias=bias, bootstrap_truncation=bootstrap_truncation),
        )
        for bias in (0.0, 1.0)
    ]
    tokens = [(0, 0), (0, NUM_BINS - 1)]
    returns = [envs.token_returns(p, tokens, 10, 0.9, bootstrap_truncation, seed=1) for p in policies]
    assert envs.rollout_steps == 2 * len(tokens) * 2 * 3  # two calls, tokens x copies x the 3 steps left
    np.testing.assert_allclose(
        returns[1] - returns[0], 0.9**3 * policies[1].value_std if bootstrap_truncation else 0.0, atol=1e-9
    )
    assert envs.episode_step() == 497  # the copies end where they began...
    envs.walk(policies[0], 10)  # ...and walk on together through the episode's end into the next one
    assert envs.episode_step() == 7 and envs.walk_steps == 2 * 10


def probe_synthetic_run(monkeypatch, common_random_numbers: bool):
    """probe_run end to end on the synthetic reward, through a vanilla checkpoint of the state-blind policy."""
    arm = importlib.import_module("ppo_vanilla")
    original_make_env = arm.make_env

    def make_env(env_id, seed):
        def thunk():
            env = original_make_env(env_id, seed)()
            env.unwrapped.evaluate_state = synthetic_reward
            return env

        return thunk

    monkeypatch.setattr(arm, "make_env", make_env)
    checkpoint = synthetic_checkpoint(arm, episode_state(arm, 30))
    run = probe.ProbedRun(
        ROOT / "runs" / "synthetic",
        "ppo_vanilla",
        arm,
        checkpoint["config"],
        checkpoint,
        ROOT / "runs" / "synthetic" / "checkpoint.pt",
    )
    settings = probe.ProbeSettings(
        states=20, state_stride=3, rollouts=8, horizon=2, bins_per_dim=8, common_random_numbers=common_random_numbers
    )
    result = probe.probe_run(run, settings, log=lambda line: None)
    truth = 10.0 * (1.0 - np.abs(arm.Agent(39, NUM_BINS).bin_values.numpy()[result.bins] - TARGET))
    recovered = np.array([probe.spearman_by_dimension(truth[None], r[:1].mean(-1))[0] for r in result.returns])
    return result, recovered


def test_independent_rollouts_recover_the_known_ranking_and_a_random_signal_does_not(monkeypatch):
    """Known answer under sampling noise: the later steps' rewards differ from rollout to rollout, only x's first
    step tells tokens apart. The Monte Carlo ranking of x recovers the truth, its halves agree on x and not on the
    dimensions that change nothing, and the random reference signal correlates with nothing."""
    result, recovered = probe_synthetic_run(monkeypatch, common_random_numbers=False)
    assert set(result.correlations) == {"policy_log_prob", "random", probe.MC_SPLIT_HALF}  # vanilla: no critic U
    assert recovered.mean() > 0.85 and recovered.min() > 0.5
    split_half = result.correlations[probe.MC_SPLIT_HALF]
    assert split_half[:, 0].mean() > 0.7
    assert np.all(np.abs(split_half[:, 1:].mean(0)) < 0.3)
    assert abs(np.nanmean(result.correlations["random"])) < 0.15
    assert abs(np.nanmean(result.correlations["random"][:, 0])) < 0.3
    summary = probe.summarize_probe(result)
    assert summary["states"] == 20 and summary["cost"]["env_steps_per_state"] == 4 * 8 * 8 * 2
    assert summary["monte_carlo"]["noise_ceiling"]["per_dimension"]["x"]["mean"] > 0.8


def test_common_random_numbers_make_the_known_ranking_exact(monkeypatch):
    """The same probe with common random numbers: x's ranking is the truth at every state, and the other dimensions'
    returns are exactly equal across bins, so no signal has a correlation there (counted as undefined)."""
    result, recovered = probe_synthetic_run(monkeypatch, common_random_numbers=True)
    np.testing.assert_allclose(recovered, 1.0)
    summary = probe.summarize_probe(result)
    assert summary["monte_carlo"]["constant_pairs"] == 20 * 3
    assert summary["monte_carlo"]["split_half"]["per_dimension"]["x"]["mean"] == pytest.approx(1.0)
    for name in ("policy_log_prob", "random"):
        assert summary["signals"][name]["undefined"] == 20 * 3


def test_probed_bins_and_the_spearman_brown_floor():
    assert probe.probed_bins(64, 8).tolist() == [0, 9, 18, 27, 36, 45, 54, 63]
    assert probe.probed_bins(64, 0).tolist() == list(range(64)) == probe.probed_bins(64, 64).tolist()
    np.testing.assert_allclose(probe.spearman_brown([0.5, 1.0, -1.0, -0.2]), [2 / 3, 1.0, 0.0, 0.0])
    assert np.isnan(probe.spearman_brown(np.nan))


def write_run_dir(path, command="ppo_vanilla.py --env-id reach-v3", checkpoint=b"not a checkpoint"):
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"command": command}))
    if checkpoint is not None:
        (path / "checkpoint.pt").write_bytes(checkpoint)
    return path


@pytest.mark.parametrize(
    "case,expected",
    [
        ("missing", "is neither a run directory nor a checkpoint file"),
        ("no_config", "is not a run directory"),
        ("not_an_arm", "not an arm script"),
        ("no_checkpoint", "has not saved a checkpoint"),
        ("damaged_checkpoint", "cannot read"),
        ("one_rollout", "--rollouts must be at least 2"),
        ("unknown_flag", "unrecognized arguments"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(tmp_path, capsys, case, expected):
    run_dir, flags = tmp_path / "run", []
    if case == "no_config":
        run_dir.mkdir()
    elif case == "not_an_arm":
        write_run_dir(run_dir, command="train.py --env-id reach-v3")
    elif case == "no_checkpoint":
        write_run_dir(run_dir, checkpoint=None)
    elif case in ("damaged_checkpoint", "one_rollout", "unknown_flag"):
        write_run_dir(run_dir)
        flags = {"one_rollout": ["--rollouts", "1"], "unknown_flag": ["--sates", "3"]}.get(case, [])
    try:
        status = probe.main([str(run_dir), *flags, "--out-dir", str(tmp_path / "out")])
    except SystemExit as e:  # argparse's own exit, for a bad flag
        status = e.code
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1 and expected in err
    assert not (tmp_path / "out").exists()


def test_bad_input_on_the_command_line_prints_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "utility_probe.py"), str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"utility_probe.py: error: {tmp_path / 'nowhere'} is neither a run directory nor a checkpoint file"
    ]


def test_kept_checkpoints_change_nothing_and_are_probed_at_their_step(tmp_path):
    """--keep-checkpoints-at keeps checkpoint_step<N>.pt at the iteration reaching each step and changes no number the
    run records; the probe takes such a file and names the run with its step."""
    common = [*SHORT_RUN, "--mask-warmup-start", "0", "--mask-warmup-end", "512"]
    assert run_script("ppo_utility_mask.py", tmp_path, *common, "--exp-name", "plain").returncode == 0
    result = run_script(
        "ppo_utility_mask.py", tmp_path, *common, "--exp-name", "kept", "--keep-checkpoints-at", "300", "1024"
    )
    assert result.returncode == 0, result.stderr
    plain, kept = tmp_path / "reach-v3__plain__1", tmp_path / "reach-v3__kept__1"
    assert comparable(kept) == comparable(plain)

    def settings(run_dir):
        recorded = json.loads((run_dir / "config.json").read_text())
        return {k: v for k, v in recorded.items() if k not in ("command", "exp_name", "run_name")}

    assert settings(kept) == settings(plain)
    assert sorted(p.name for p in kept.glob("checkpoint_step*.pt")) == [
        "checkpoint_step1024.pt",
        "checkpoint_step512.pt",
    ]
    run = probe.load_run(kept / "checkpoint_step512.pt")
    assert run.checkpoint["global_step"] == 512 and run.checkpoint["iteration"] == 2 and run.run_dir == kept
    assert run.name == "reach-v3__kept__1_step512" and probe.load_run(kept).name == "reach-v3__kept__1"
    # the kept file at the last step is the run's final checkpoint
    final = torch.load(kept / "checkpoint.pt", weights_only=False)
    last = torch.load(kept / "checkpoint_step1024.pt", weights_only=False)
    assert all(torch.equal(final["agent"][k], last["agent"][k]) for k in final["agent"])


def test_probe_of_a_real_utility_mask_checkpoint(tmp_path):
    """A real 1024-step ppo_utility_mask.py run on reach-v3 with its mask active from the start, then the probe as a
    user runs it, with tiny flags."""
    runs = tmp_path / "runs"
    result = run_script("ppo_utility_mask.py", runs, *SHORT_RUN, "--mask-warmup-start", "0", "--mask-warmup-end", "512")
    assert result.returncode == 0, result.stderr
    run_dir = runs / "reach-v3__ppo_utility_mask__1"
    run = probe.load_run(run_dir)
    policy = probe.BehaviourPolicy(run.module, run.checkpoint)
    masked = (policy.logit_offset(policy.normalize(np.asarray(run.checkpoint["raw_obs"]))) != 0).sum(-1)
    assert policy.masker == "utility" and np.all((masked > 0) & (masked <= 16))  # the checkpoint's budget: 25% of 64

    out = tmp_path / "probe"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "utility_probe.py"),
            str(run_dir),
            "--states",
            "3",
            "--state-stride",
            "4",
            "--rollouts",
            "4",
            "--horizon",
            "3",
            "--bins-per-dim",
            "4",
            "--out-dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    rows = read_csv(out / "probe.csv")
    signals = ["utility_critic", "policy_log_prob", "random", probe.MC_SPLIT_HALF]
    assert len(rows) == 3 * 4 * len(signals) and {r["signal"] for r in rows} == set(signals)
    assert all(r["spearman"] == "" or -1.0 <= float(r["spearman"]) <= 1.0 for r in rows)
    # the checkpoint's env is 24 steps into its third episode (1024 = 2 x 500 + 24); the states are 4 steps apart
    assert [int(r["episode_step"]) for r in read_csv(out / "states.csv")] == [24, 28, 32]
    summary = json.loads((out / "summary.json").read_text())["runs"][0]
    assert summary["arm"] == "ppo_utility_mask" and summary["global_step"] == 1024
    assert summary["probed_bins"] == [0, 21, 42, 63] and summary["cost"]["env_steps_per_state"] == 4 * 4 * 4 * 3
    assert set(summary["signals"]) == {"utility_critic", "policy_log_prob", "random"}
    assert "utility critic of ppo_utility_mask" in (out / "probe.md").read_text()
    assert (out / "figures" / "probe_spearman.png").stat().st_size > 10_000
    saved = np.load(out / "mc_reach-v3__ppo_utility_mask__1.npz")
    assert saved["returns"].shape == (3, 4, 4, 4) and saved["scores_utility_critic"].shape == (3, 4, 64)


def probe_summary(
    run_dir, env_id="handle-pull-v3", arm="ppo_utility_mask", step=999_424, critic=0.1, policy=0.2, ceiling=0.5
):
    """A run's entry of summary.json, as summarize_probe writes it, reduced to what across_runs reads."""

    def value(mean):
        per_dimension = {d: {"mean": mean, "ci": [mean, mean], "n": 20} for d in probe.DIMENSIONS}
        return {"mean": mean, "ci": [mean, mean], "n": 20, "per_dimension": per_dimension, "undefined": 0}

    signals = {"policy_log_prob": value(policy), "random": value(0.0)}
    if critic is not None:
        signals["utility_critic"] = value(critic)
    return {
        "run_dir": str(run_dir),
        "arm": arm,
        "env_id": env_id,
        "global_step": step,
        "num_bins": 64,
        "probed_bins": [0, 63],
        "states": 20,
        "signals": signals,
        "monte_carlo": {
            "split_half": value(ceiling**2),
            "reliability_spearman_brown": value(ceiling**2),
            "noise_ceiling": value(ceiling),
            "constant_pairs": 0,
        },
        "cost": {"env_steps_per_state": 100.0, "seconds_per_state": 1.0, "walk_env_steps": 10},
    }


def test_across_runs_averages_run_means_per_exp_name_and_step():
    summaries = [
        probe_summary(f"r/handle-pull-v3__ppo_utility_mask__{seed}", critic=c, policy=p)
        for seed, c, p in [(1, 0.1, 0.3), (2, 0.3, 0.1), (3, 0.2, 0.2)]
    ]
    summaries += [
        probe_summary(f"r/handle-pull-v3__ppo_loss_shaping_coef0.01__{seed}", arm="ppo_loss_shaping", critic=c)
        for seed, c in [(1, 0.5), (2, 0.7)]
    ]
    summaries += [
        probe_summary("r/handle-pull-v3__ppo_loss_shaping_coef0.03__1", arm="ppo_loss_shaping"),  # alone
        probe_summary("r/handle-pull-v3__ppo_utility_mask__1_it70", step=143_360, critic=None),
    ]
    rows = {(row["exp_name"], row["global_step"]): row for row in probe.across_runs(summaries)}
    # one arm under two exp_names stays apart, and a group of one run is left out
    assert set(rows) == {("ppo_utility_mask", 999_424), ("ppo_loss_shaping_coef0.01", 999_424)}
    utility = rows[("ppo_utility_mask", 999_424)]
    assert utility["runs"] == 3
    assert utility["signals"]["utility_critic"]["mean"] == pytest.approx(0.2)
    assert utility["signals"]["policy_log_prob"]["mean"] == pytest.approx(0.2)
    low, high = utility["signals"]["utility_critic"]["ci"]
    assert 0.1 <= low < 0.2 < high <= 0.3  # a bootstrap across the runs' means stays inside their range
    assert utility["signals"]["noise_ceiling"] == {"mean": 0.5, "ci": [0.5, 0.5], "n": 3}
    assert utility["signals"]["split_half"] == {"mean": 0.25, "ci": [0.25, 0.25], "n": 3}  # reported per checkpoint
    table = probe.markdown_report(summaries, probe.ProbeSettings())
    header = next(line for line in table.splitlines() if line.startswith("| task | exp_name | step | runs |"))
    assert header.endswith("| split-half | noise ceiling |")
    assert rows[("ppo_loss_shaping_coef0.01", 999_424)]["signals"]["utility_critic"]["mean"] == pytest.approx(0.6)


def test_merge_writes_one_table_over_earlier_probes_and_refuses_other_settings(tmp_path, capsys):
    settings = dataclasses.asdict(probe.ProbeSettings())
    for seed in (1, 2):
        out = tmp_path / f"p{seed}"
        out.mkdir()
        (out / "summary.json").write_text(
            json.dumps(
                {
                    "settings": settings,
                    "runs": [probe_summary(f"r/handle-pull-v3__ppo_utility_mask__{seed}", critic=0.1 * seed)],
                }
            )
        )
    assert probe.main(["--merge", str(tmp_path / "p1"), str(tmp_path / "p2"), "--out-dir", str(tmp_path / "m")]) == 0
    merged = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert len(merged["runs"]) == 2 and merged["across_runs"][0]["signals"]["utility_critic"]["mean"] == pytest.approx(
        0.15
    )
    assert "| handle-pull-v3 | ppo_utility_mask | 999,424 | 2 | 0.150 [" in (tmp_path / "m" / "probe.md").read_text()
    capsys.readouterr()
    (tmp_path / "p2" / "summary.json").write_text(json.dumps({"settings": {**settings, "horizon": 5}, "runs": []}))
    assert probe.main(["--merge", str(tmp_path / "p1"), str(tmp_path / "p2"), "--out-dir", str(tmp_path / "m2")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "other settings" in err and not (tmp_path / "m2").exists()
