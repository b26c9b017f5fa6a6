"""The off-policy utility arm (ppo_offpolicy_utility_mask.py): the branching dueling aggregation and the n-step double
Q-learning target against brute force, the n-step sums across episode boundaries, the success labels, and the script
end to end as the utility arm is tested (stored mask re-applied, outputs, kill + resume, bad flags)."""

import itertools
import json
import math
import signal

import numpy as np
import pytest
import torch
from test_end_to_end import MASK_WARMUP, check_outputs, comparable, kill_after_checkpoint

import ppo_offpolicy_utility_mask as arm
import ppo_utility_mask as utility_arm
from conftest import SHORT_RUN, read_csv, run_script

SCRIPT = "ppo_offpolicy_utility_mask.py"
K = 64
AFTER_WARMUP = 10**9  # a global step past every warm-up: the full budget


def critic(obs_dim, num_bins, seed):
    """A UtilityCritic far from its near-zero initial advantages, so the argmax over bins means something."""
    torch.manual_seed(seed)
    net = arm.UtilityCritic(obs_dim, num_bins)
    with torch.no_grad():
        net.net[-1].weight.mul_(300.0)
    return net


def test_dueling_aggregation_and_the_heads_are_as_documented():
    net = critic(7, 5, seed=0)
    obs = torch.randn(32, 7)
    actions = torch.randint(0, 5, (32, 4))
    with torch.no_grad():
        value, advantages = net.value_and_advantages(obs)
        assert value.shape == (32,) and advantages.shape == (32, 4, 5)
        # U(s) = A(s): forward, the advantage heads of value_and_advantages and the rollout's NumPy copy of `net` agree
        torch.testing.assert_close(net(obs), advantages)
        rollout_copy = arm.numpy_mlp(net.net)(obs.numpy()).reshape(32, 4, 5)
        np.testing.assert_allclose(rollout_copy, advantages.numpy(), rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(value, net.state_value(net.net[:-1](obs)).squeeze(-1))
        q = arm.dueling_q(value, advantages, actions)
    expected = value.clone()
    for i in range(32):
        for d in range(4):
            expected[i] += advantages[i, d, actions[i, d]] - advantages[i, d].mean()
    torch.testing.assert_close(q, expected)
    # identifiable: a constant added to a branch's advantages changes no Q
    torch.testing.assert_close(arm.dueling_q(value, advantages + torch.randn(32, 4, 1), actions), q)


def test_a_new_target_scale_leaves_q_and_the_mask_unchanged_in_real_units():
    """Targets on a fixed replay stay on one scale: after set_output_scale(new), Q * new (real units) is what Q * old
    was for every state and joint action, the TD targets computed from rewards / new agree with the predictions' unit,
    and U's ordering (what the masker reads) is the same; the unit is checkpointed with the weights."""
    net = critic(7, 5, seed=1)
    obs, next_obs = torch.randn(64, 7), torch.randn(64, 7)
    actions = torch.randint(0, 5, (64, 4))
    rewards, discounts = torch.rand(64) * 10, torch.full((64,), 0.99**3)
    target_net = critic(7, 5, seed=2)

    def real_units(old_scale):
        with torch.no_grad():
            q = arm.dueling_q(*net.value_and_advantages(obs), actions) * net.output_scale
            targets = (
                arm.td_targets(
                    rewards / net.output_scale, discounts, net(next_obs), *target_net.value_and_advantages(next_obs)
                )
                * net.output_scale
            )
            return q, targets, net(obs).argsort(-1)

    for scale in (3.0, 40.0, 0.5):
        before = real_units(net.output_scale)
        net.set_output_scale(scale)
        target_net.set_output_scale(scale)
        after = real_units(scale)
        assert float(net.output_scale) == scale
        torch.testing.assert_close(after[0], before[0], rtol=1e-5, atol=1e-3)
        torch.testing.assert_close(after[1], before[1], rtol=1e-5, atol=1e-3)
        assert torch.equal(after[2], before[2])
    assert "output_scale" in net.state_dict()


def test_rank_agreement_over_the_unmasked_bins_is_spearman_within_them():
    scipy_stats = pytest.importorskip("scipy.stats")
    torch.manual_seed(3)
    utility, logits = torch.randn(6, 4, 16, dtype=torch.float64), torch.randn(6, 4, 16, dtype=torch.float64)
    logits[..., :8] += utility[..., :8]  # agreement on half the bins
    unmasked = torch.rand(6, 4, 16) > 0.3
    unmasked[..., :2] = True  # at least two bins per row
    direct = np.mean(
        [
            scipy_stats.spearmanr(utility[i, d][unmasked[i, d]], logits[i, d][unmasked[i, d]])[0]
            for i in range(6)
            for d in range(4)
        ]
    )
    assert arm.rank_agreement(utility, logits, unmasked).item() == pytest.approx(direct, abs=1e-6)
    every = np.mean([scipy_stats.spearmanr(utility[i, d], logits[i, d])[0] for i in range(6) for d in range(4)])
    assert arm.rank_agreement(utility, logits).item() == pytest.approx(every, abs=1e-6)
    # masked bins whose low utility and low logits agree by construction inflate the all-bins number, not this one
    low = utility.argsort(-1).argsort(-1) < 4
    rigged = torch.where(low, utility - 100, logits)
    assert arm.rank_agreement(utility, rigged).item() > arm.rank_agreement(utility, rigged, ~low).item()


def test_advantage_agreement_is_spearmans_rank_correlation():
    scipy_stats = pytest.importorskip("scipy.stats")
    torch.manual_seed(4)
    x = torch.randn(500, dtype=torch.float64)
    y = x + torch.randn(500, dtype=torch.float64)
    assert arm.spearman(x, y).item() == pytest.approx(scipy_stats.spearmanr(x, y)[0], abs=1e-6)  # float32 ranks
    assert arm.spearman(x, x.exp()).item() == pytest.approx(1.0) and arm.spearman(x, -x).item() == pytest.approx(-1.0)


def test_bdq_aggregation_is_tavakoli_et_al_branch_by_branch():
    """--q-aggregation bdq: Q_d(s, a_d) = V + A_d(s, a_d) - mean_k A_d(s, k) per branch, and one target for all
    branches, r + gamma^m times the mean over branches of the target network's Q_d at the online network's argmax."""
    online, target = critic(7, 5, seed=4), critic(7, 5, seed=5)
    obs, next_obs = torch.randn(16, 7), torch.randn(16, 7)
    actions = torch.randint(0, 5, (16, 4))
    rewards, discounts = torch.rand(16), torch.full((16,), 0.9)
    with torch.no_grad():
        value, advantages = online.value_and_advantages(obs)
        q = arm.dueling_q(value, advantages, actions, "bdq")
        next_online = online(next_obs)
        target_v, target_a = target.value_and_advantages(next_obs)
        targets = arm.td_targets(rewards, discounts, next_online, target_v, target_a, "bdq")
    assert q.shape == (16, 4) and targets.shape == (16,)
    for i in range(16):
        expected_target = 0.0
        for d in range(4):
            expected = value[i] + advantages[i, d, actions[i, d]] - advantages[i, d].mean()
            assert q[i, d].item() == pytest.approx(expected.item(), abs=1e-5)
            best = next_online[i, d].argmax()
            expected_target += (target_v[i] + target_a[i, d, best] - target_a[i, d].mean()).item() / 4
        assert targets[i].item() == pytest.approx(rewards[i].item() + 0.9 * expected_target, abs=1e-5)
    # the default (sum) is the joint Q over 4 branches: its value counted once, the branches' advantages summed
    torch.testing.assert_close(arm.dueling_q(value, advantages, actions), q.sum(-1) - 3 * value)


def test_td_target_is_the_double_q_target_over_all_joint_actions():
    """Brute force over all K^4 joint actions (K = 3: 81 of them) against the code's factorized target."""
    num_bins, n = 3, 64
    online, target = critic(6, num_bins, seed=1), critic(6, num_bins, seed=2)
    next_obs = torch.randn(n, 6)
    reward_sums, discounts = torch.randn(n), torch.rand(n) * (torch.rand(n) > 0.2)  # some terminal (discount 0)
    joint = torch.tensor(list(itertools.product(range(num_bins), repeat=4)))  # (81, 4)
    with torch.no_grad():
        online_v, online_a = online.value_and_advantages(next_obs)
        target_v, target_a = target.value_and_advantages(next_obs)
        code = arm.td_targets(reward_sums, discounts, online(next_obs), target_v, target_a)

        def all_q(v, a):  # Q(s', a) for every joint action, shape (n, 81)
            return torch.stack([arm.dueling_q(v, a, joint[j].expand(n, 4)) for j in range(len(joint))], 1)

        q_online, q_target = all_q(online_v, online_a), all_q(target_v, target_a)
    best = q_online.argmax(1)  # double Q-learning: the online network picks, the target network evaluates
    torch.testing.assert_close(code, reward_sums + discounts * q_target[torch.arange(n), best])
    # with one network the target is r + gamma^m max_a Q(s', a) = r + gamma^m (V + sum_d max_k (A_d - mean_k A_d))
    with torch.no_grad():
        same = arm.td_targets(reward_sums, discounts, online_a, online_v, online_a)
    torch.testing.assert_close(same, reward_sums + discounts * q_online.max(1).values)
    centered = online_a - online_a.mean(-1, keepdim=True)
    torch.testing.assert_close(same, reward_sums + discounts * (online_v + centered.max(-1).values.sum(-1)))
    # the two networks disagree on the greedy action somewhere, so double Q differs from the target network's own max
    assert not torch.allclose(code, reward_sums + discounts * q_target.max(1).values)


def reference_n_step(rewards, terminations, dones, gamma, n):
    """The n-step pieces written the long way: walk forward from every step until n rewards, an episode's end or the
    rollout's end."""
    steps, envs = rewards.shape
    sums, last, discount = np.zeros((steps, envs)), np.zeros((steps, envs), dtype=np.int64), np.zeros((steps, envs))
    for i in range(envs):
        for t in range(steps):
            total, k = 0.0, t
            for j in range(n):
                k = t + j
                total += gamma**j * rewards[k, i]
                if dones[k, i] or j == n - 1 or k == steps - 1:
                    break
            sums[t, i], last[t, i] = total, k
            discount[t, i] = gamma ** (k - t + 1) * (1.0 - terminations[k, i])
    return sums, last, discount


def test_n_step_sum_stops_at_an_episode_boundary_and_the_rollout_end():
    # one env, 6 steps, gamma 0.5, n 3; the episode is truncated at step 2 (bootstrapped from its final observation)
    rewards = np.array([[1.0], [2.0], [4.0], [8.0], [16.0], [32.0]])
    dones = np.array([[0.0], [0.0], [1.0], [0.0], [0.0], [0.0]])
    sums, last, discounts = arm.n_step_returns(rewards, np.zeros_like(dones), dones, 0.5, 3)
    np.testing.assert_allclose(sums[:, 0], [1 + 1 + 1, 2 + 2, 4, 8 + 8 + 8, 16 + 16, 32])  # never across step 2 -> 3
    np.testing.assert_array_equal(last[:, 0], [2, 2, 2, 5, 5, 5])  # the rollout ends at step 5
    np.testing.assert_allclose(discounts[:, 0], [0.125, 0.25, 0.5, 0.125, 0.25, 0.5])
    # --no-bootstrap-truncation (terminations = dones): nothing is bootstrapped from the truncated episode's end
    _, _, discounts = arm.n_step_returns(rewards, dones, dones, 0.5, 3)
    np.testing.assert_allclose(discounts[:, 0], [0, 0, 0, 0.125, 0.25, 0.5])
    # n = 1 is the one-step target
    sums, last, discounts = arm.n_step_returns(rewards, np.zeros_like(dones), dones, 0.5, 1)
    np.testing.assert_allclose(sums, rewards)
    np.testing.assert_array_equal(last[:, 0], np.arange(6))
    np.testing.assert_allclose(discounts, 0.5)
    # random rollouts of 3 envs, episode ends and terminations anywhere, against the long way
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 40):
        rewards = rng.normal(size=(40, 3))
        dones = (rng.random((40, 3)) < 0.15).astype(float)
        terminations = dones * (rng.random((40, 3)) < 0.5)
        for got, want in zip(
            arm.n_step_returns(rewards, terminations, dones, 0.9, n),
            reference_n_step(rewards, terminations, dones, 0.9, n),
        ):
            np.testing.assert_allclose(got, want)


def test_episode_outcomes_label_every_transition_of_an_episode_across_rollouts():
    outcomes = np.full((3, 4, 2), np.nan)  # R = 3 rollouts of 4 steps, 2 envs
    # rollout in slot 0: env 0 ends an episode at step 1 (success); env 1 has no episode end
    dones = np.zeros((4, 2))
    dones[1, 0] = 1
    arm.label_episode_outcomes(outcomes, 0, dones, [1.0])
    np.testing.assert_array_equal(outcomes[0, :, 0], [1, 1, np.nan, np.nan])
    assert np.isnan(outcomes[0, :, 1]).all()
    # slot 1: env 1 ends its episode (begun in slot 0) at step 2 and env 0 its second at step 3, both failures;
    # np.nonzero's order is by step, then by env: (2, 1) first
    dones = np.zeros((4, 2))
    dones[2, 1] = dones[3, 0] = 1
    arm.label_episode_outcomes(outcomes, 1, dones, [0.0, 0.0])
    np.testing.assert_array_equal(outcomes[0, :, 1], [0, 0, 0, 0])
    np.testing.assert_array_equal(outcomes[1, :, 1], [0, 0, 0, np.nan])  # step 3 begins env 1's next episode
    np.testing.assert_array_equal(outcomes[0, :, 0], [1, 1, 0, 0])
    np.testing.assert_array_equal(outcomes[1, :, 0], [0, 0, 0, 0])
    # slot 0 again (R = 3 wrapped around, say): its old labels are forgotten, env 1's open episode keeps its course
    dones = np.zeros((4, 2))
    dones[0, 1] = 1
    arm.label_episode_outcomes(outcomes, 0, dones, [1.0])
    np.testing.assert_array_equal(outcomes[1, :, 1], [0, 0, 0, 1])
    np.testing.assert_array_equal(outcomes[0, :, 1], [1, np.nan, np.nan, np.nan])
    assert np.isnan(outcomes[0, :, 0]).all()


def test_success_loss_is_the_cross_entropy_of_the_taken_bins():
    utility = torch.randn(8, 4, 6, generator=torch.Generator().manual_seed(0), requires_grad=True)
    actions = torch.randint(0, 6, (8, 4))
    successes = torch.tensor([1.0, 0.0] * 4)
    loss = arm.success_loss(utility, actions, successes)
    taken = utility.detach().gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    p = torch.sigmoid(taken)
    y = successes[:, None]
    assert loss.item() == pytest.approx(-(y * p.log() + (1 - y) * (1 - p).log()).mean().item(), rel=1e-5)
    loss.backward()
    taken_mask = torch.zeros(8, 4, 6, dtype=torch.bool).scatter_(-1, actions.unsqueeze(-1), True)
    assert (utility.grad[~taken_mask] == 0).all() and (utility.grad[taken_mask] != 0).all()


def test_the_masker_is_the_utility_arms():
    utility = np.random.default_rng(0).normal(size=(500, 4, K)).astype(np.float32)
    for mode, threshold in (("soft", 0.25), ("hard", 0.0), ("hard", 0.5), ("boost", 0.25)):
        new, old = (
            a.utility_logit_offset(utility, AFTER_WARMUP, a.Args(mask_mode=mode, utility_threshold=threshold))
            for a in (arm, utility_arm)
        )
        np.testing.assert_array_equal(new[0], old[0])
        np.testing.assert_array_equal(new[1], old[1])
    for step in (0, 75_000, 150_000):
        assert arm.masked_bins_per_dim(step, arm.Args()) == utility_arm.masked_bins_per_dim(step, utility_arm.Args())


def test_stored_mask_gives_ratio_exactly_one_before_the_first_update():
    """The rollout's log-probs (whole batch, masks from this arm's critic) against the update's recomputation."""
    torch.manual_seed(0)
    np.random.seed(0)
    agent = arm.Agent(39, K)
    obs = torch.randn(2048, 39)
    utility = arm.numpy_mlp(arm.UtilityCritic(39, K).net)(obs.numpy()).reshape(2048, 4, K) * 100
    offsets, mask = arm.utility_logit_offset(utility, AFTER_WARMUP, arm.Args(utility_threshold=0.0))
    assert mask.any()
    actions = arm.sample_action(arm.numpy_mlp(agent.actor)(obs.numpy()).reshape(2048, 4, K) + offsets)
    offsets = torch.as_tensor(offsets, dtype=torch.float32)  # as stored in the rollout buffer

    def log_prob(o, a, off):
        return arm.action_log_prob(agent.get_log_probs(o, off), torch.as_tensor(a))

    with torch.no_grad():
        old_logprob = log_prob(obs, actions, offsets)
    mb = torch.from_numpy(np.random.default_rng(0).permutation(2048)[:64])
    assert torch.equal((log_prob(obs[mb], actions[mb], offsets[mb]) - old_logprob[mb]).exp(), torch.ones(64))
    unmasked = log_prob(obs[mb], actions[mb], torch.zeros_like(offsets[mb]))  # without the mask: the test can fail
    assert not torch.allclose(unmasked, old_logprob[mb])


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_short_run_writes_the_utility_arms_outputs(tmp_path, mode):
    result = run_script(SCRIPT, tmp_path, *SHORT_RUN, *MASK_WARMUP, "--mask-mode", mode)
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "reach-v3__ppo_offpolicy_utility_mask__1"
    metrics, _ = check_outputs(run_dir, iterations=4)
    # the utility arm's columns, and the rank agreement over the bins the mask left in place
    assert list(metrics[0]) == [*utility_arm.METRICS, "rank_agreement_unmasked", "advantage_agreement"]
    counts = read_csv(run_dir / "mask_counts.csv")
    assert len(counts) == 4 and len(counts[0]) == 3 + 4 * 64
    args = arm.Args(mask_warmup_start=0, mask_warmup_end=512)
    for i, (row, count) in enumerate(zip(metrics, counts)):
        masked = sum(int(v) for k, v in count.items() if k.startswith("d"))
        assert masked == pytest.approx(float(row["mask_fraction"]) * 256 * 4 * 64)
        assert masked <= sum(arm.masked_bins_per_dim(s, args) for s in range(256 * i + 1, 256 * (i + 1) + 1)) * 4
        if masked:
            assert float(row["sampling_entropy"]) < float(row["policy_entropy"]) - 0.01
        assert math.isfinite(float(row["utility_loss"])) and -1 <= float(row["rank_agreement"]) <= 1
        assert -1 <= float(row["rank_agreement_unmasked"]) <= 1 and -1 <= float(row["advantage_agreement"]) <= 1
    assert sum(int(v) for k, v in counts[-1].items() if k.startswith("d")) > 0
    # what the probe tool relies on: the checkpoint's "utility_critic" loads into UtilityCritic(obs_dim, K), whose
    # forward is U of shape (batch, 4, K); the target network and the replay buffer travel beside it
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    net = arm.UtilityCritic(39, 64)
    net.load_state_dict(ckpt["utility_critic"])
    assert net(torch.zeros(3, 39)).shape == (3, 4, 64)
    assert set(ckpt["target_critic"]) == set(ckpt["utility_critic"])
    assert ckpt["replay_buffer"]["obs"].shape == (arm.Args().replay_rollouts, 256, 39)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["utility_target"] == "td" and config["replay_rollouts"] == arm.Args().replay_rollouts


def test_success_target_trains_once_both_outcomes_are_replayed(tmp_path):
    """drawer-close, seed 3: the near-uniform policy fails its first episode and succeeds in its second (ends at
    step 1000, iteration 4): no update before, a classifier after."""
    flags = [
        "--env-id",
        "drawer-close-v3",
        "--seed",
        "3",
        "--num-steps",
        "256",
        "--total-timesteps",
        "2048",
        "--update-epochs",
        "2",
        "--eval-interval",
        "1024",
        "--eval-episodes",
        "1",
        *MASK_WARMUP,
        "--utility-target",
        "success",
    ]
    result = run_script(SCRIPT, tmp_path, *flags)
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "drawer-close-v3__ppo_offpolicy_utility_mask__3"
    metrics, _ = check_outputs(run_dir, iterations=8)
    episodes = read_csv(run_dir / "episodes.csv")
    assert [float(e["success"]) for e in episodes[:2]] == [0.0, 1.0]
    losses = [float(row["utility_loss"]) for row in metrics]
    assert all(math.isnan(x) for x in losses[:3]) and all(0 < x < 5 for x in losses[3:])
    outcomes = torch.load(run_dir / "checkpoint.pt", weights_only=False)["replay_buffer"]["episode_success"]
    assert set(np.unique(outcomes[:8, :, 0][~np.isnan(outcomes[:8, :, 0])])) == {0.0, 1.0}
    assert np.isnan(outcomes[7, -48:, 0]).all()  # the fifth episode, steps 2001-2048, has not ended


def test_with_nothing_masked_ppo_runs_exactly_as_in_the_utility_arm(tmp_path):
    """The Q-network shares no parameter, optimizer or random number with PPO: with --mask-budget 0 everything but
    the critic's own columns equals the utility arm's run, so PPO's update is untouched by the off-policy critic."""
    flags = [*SHORT_RUN, "--mask-budget", "0"]
    for script in (SCRIPT, "ppo_utility_mask.py"):
        assert run_script(script, tmp_path, *flags, "--exp-name", script[:-3]).returncode == 0
    critic_columns = ("utility_loss", "rank_agreement", "rank_agreement_unmasked", "advantage_agreement")
    runs = [
        comparable(tmp_path / f"reach-v3__{name}__1") for name in ("ppo_offpolicy_utility_mask", "ppo_utility_mask")
    ]
    for run in runs:
        run[0][:] = [{k: v for k, v in row.items() if k not in critic_columns} for row in run[0]]
    assert runs[0] == runs[1]


def test_the_exploration_floor_unmasks_its_share_of_steps(tmp_path):
    """--unmasked-fraction 1: every rollout step unmasked, so training runs exactly as the utility arm's with nothing
    masked (the critic still scores and learns; evaluation keeps the arm's mask); 0.5: about half the masked bins of the same run at 0, the PPO ratios still
    exact (the stored offsets are the ones that sampled)."""
    flags = [*SHORT_RUN, *MASK_WARMUP]
    assert run_script(SCRIPT, tmp_path, *flags, "--unmasked-fraction", "1", "--exp-name", "floor1").returncode == 0
    assert (
        run_script("ppo_utility_mask.py", tmp_path, *flags, "--mask-budget", "0", "--exp-name", "none").returncode == 0
    )
    critic_columns = ("utility_loss", "rank_agreement", "rank_agreement_unmasked", "advantage_agreement")
    runs = [comparable(tmp_path / f"reach-v3__{name}__1") for name in ("floor1", "none")]
    for run in runs:
        run[0][:] = [{k: v for k, v in row.items() if k not in critic_columns} for row in run[0]]
    assert runs[0][:3] == runs[1][:3]  # metrics, summary, episodes (evaluation acts with the arm's mask)
    for fraction in ("0", "0.5"):
        assert (
            run_script(
                SCRIPT, tmp_path, *flags, "--unmasked-fraction", fraction, "--exp-name", f"f{fraction}"
            ).returncode
            == 0
        )
    masked = {
        f: sum(float(r["mask_fraction"]) for r in read_csv(tmp_path / f"reach-v3__f{f}__1" / "metrics.csv"))
        for f in ("0", "0.5")
    }
    assert 0.3 * masked["0"] < masked["0.5"] < 0.7 * masked["0"]
    for row in read_csv(tmp_path / "reach-v3__f0.5__1" / "metrics.csv"):
        assert float(row["approx_kl"]) < 0.05  # ratios of the distributions that sampled


# success mode trains only while the replay holds both outcomes: seed 4's random policy succeeds often enough on
# drawer-close that the critic also trains after the kill (iterations 10 and 12), where its resumed state shows
@pytest.mark.parametrize("target,seed", [("td", "3"), ("success", "4")])
def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path, target, seed):
    """The replay buffer (wrapped around: 3 rollouts of 12), the target network with a period that is no multiple of
    the updates per iteration, the critic's Adam and the replay's random numbers all travel in the checkpoint."""
    flags = [
        "--env-id",
        "drawer-close-v3",
        "--seed",
        seed,
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
        "--mask-warmup-start",
        "0",
        "--mask-warmup-end",
        "1024",
        "--utility-threshold",
        "0",
        "--replay-rollouts",
        "3",
        "--utility-updates-per-iteration",
        "24",
        "--utility-minibatch-size",
        "64",
        "--target-network-period",
        "5",
        "--target-network-tau",
        "1",
        "--utility-n-step",
        "5",
        "--utility-target",
        target,
    ]
    assert run_script(SCRIPT, tmp_path, *flags, "--exp-name", "straight").returncode == 0
    run_dir = tmp_path / f"drawer-close-v3__killed__{seed}"
    kill_after_checkpoint(
        SCRIPT, tmp_path, run_dir, [*flags, "--exp-name", "killed"], min_iteration=6, sig=signal.SIGKILL
    )
    result = run_script(SCRIPT, tmp_path, *flags, "--exp-name", "killed", "--resume")
    assert result.returncode == 0 and "resuming" in result.stdout, result.stderr
    straight = comparable(tmp_path / f"drawer-close-v3__straight__{seed}")
    assert comparable(run_dir) == straight
    trained_after_kill = [row for row in straight[0][8:] if math.isfinite(float(row["utility_loss"]))]
    assert len(straight[0]) == 12 and trained_after_kill  # the critic trained after the resume point


BAD_FLAGS = [
    (["--unmasked-fraction", "1.5"], "--unmasked-fraction"),
    (["--replay-rollouts", "0"], "--replay-rollouts"),
    (["--utility-n-step", "0"], "--utility-n-step"),
    (["--utility-n-step", "300", "--num-steps", "256", "--minibatch-size", "64"], "longer than a rollout"),
    (["--utility-updates-per-iteration", "0"], "--utility-updates-per-iteration"),
    (["--utility-minibatch-size", "1"], "--utility-minibatch-size"),
    (["--target-network-tau", "0"], "--target-network-tau"),
    (["--target-network-tau", "1.5"], "--target-network-tau"),
    (["--target-network-period", "0"], "--target-network-period"),
    (["--mask-budget", "1.5"], "--mask-budget"),
]


@pytest.mark.parametrize("flags,hint", BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_bad_flags_are_one_line_and_write_nothing(tmp_path, flags, hint):
    result = run_script(SCRIPT, tmp_path, *flags)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and hint in lines[0], result.stderr
    assert "Traceback" not in result.stderr and not any(tmp_path.iterdir())


def test_a_bad_utility_target_is_refused_by_tyro(tmp_path):
    result = run_script(SCRIPT, tmp_path, "--utility-target", "advantage")
    assert result.returncode == 2 and "Traceback" not in result.stderr and not any(tmp_path.iterdir())


def test_a_short_run_with_bdq_aggregation_trains_the_critic(tmp_path):
    result = run_script(SCRIPT, tmp_path, *SHORT_RUN, *MASK_WARMUP, "--q-aggregation", "bdq")
    assert result.returncode == 0, result.stderr
    rows = read_csv(next(tmp_path.iterdir()) / "metrics.csv")
    assert len(rows) == 4 and all(math.isfinite(float(r["utility_loss"])) for r in rows)


def test_the_ppo_baseline_replaces_the_learned_state_value(tmp_path):
    """--q-baseline ppo: Q's state value is the PPO critic's, so the V_q branch gets no gradient; its real-unit output
    (weights times the output unit) stays what it was between two checkpoints, while the learned branch's moves."""

    def state_value_in_real_units(run_dir, name):
        ckpt = torch.load(run_dir / name, weights_only=False)["utility_critic"]
        return ckpt["state_value.weight"] * ckpt["output_scale"], ckpt["state_value.bias"] * ckpt["output_scale"]

    for baseline in ("ppo", "learned"):
        result = run_script(
            SCRIPT, tmp_path, *SHORT_RUN, *MASK_WARMUP, "--q-baseline", baseline, "--exp-name", baseline
        )
        assert result.returncode == 0, result.stderr
        run_dir = tmp_path / f"reach-v3__{baseline}__1"
        assert all(math.isfinite(float(r["utility_loss"])) for r in read_csv(run_dir / "metrics.csv"))
        (w2, b2), (w4, b4) = (state_value_in_real_units(run_dir, n) for n in ("checkpoint.prev.pt", "checkpoint.pt"))
        unchanged = torch.allclose(w2, w4, rtol=1e-5, atol=1e-6) and torch.allclose(b2, b4, rtol=1e-5, atol=1e-6)
        assert unchanged == (baseline == "ppo")
