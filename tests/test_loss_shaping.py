"""The loss-shaping arm (paper section 6, "Mechanism versus signal"; Table 4): its penalty checked against direct
computation, the stop-gradient to the utility critic, and the script end to end on a real MetaWorld task."""

import json
import math

import numpy as np
import pytest
import torch
from test_end_to_end import check_outputs, comparable, kill_after_checkpoint

import ppo_loss_shaping as arm
import ppo_vanilla
import training_run
from conftest import SHORT_RUN, read_csv, run_script

K = 16
NEW_COLUMNS = ["shaping_penalty", "utility_loss", "rank_agreement"]


def random_logits_and_utility(n=64, num_bins=K, seed=0):
    g = torch.Generator().manual_seed(seed)
    # logits far from uniform and utilities on the critic's O(1) scale, so every term of the KL matters
    return 3.0 * torch.randn(n, 4, num_bins, generator=g), torch.randn(n, 4, num_bins, generator=g)


@pytest.mark.parametrize("tau", [0.5, 4.0, 10.0])
def test_penalty_is_the_kl_to_the_utility_softmax_summed_over_dimensions(tau):
    logits, utility = random_logits_and_utility()
    penalty = arm.shaping_penalty(logits, utility, tau)
    assert penalty.shape == (64,)
    expected = sum(
        torch.distributions.kl_divergence(
            torch.distributions.Categorical(logits=logits[:, d]),
            torch.distributions.Categorical(logits=tau * utility[:, d]),
        )
        for d in range(4)
    )
    torch.testing.assert_close(penalty, expected, rtol=1e-4, atol=1e-5)
    # and by explicit sums, in float64: sum_d sum_k pi log(pi / q)
    pi, q = logits.double().softmax(-1), (tau * utility.double()).softmax(-1)
    torch.testing.assert_close(penalty.double(), (pi * (pi / q).log()).sum((-2, -1)), rtol=1e-4, atol=1e-5)
    assert (penalty > 0).all()


def test_penalty_vanishes_where_the_policy_is_the_target():
    _, utility = random_logits_and_utility(seed=1)
    tau = 4.0
    # a per-dimension shift of the logits leaves the distribution unchanged
    logits = tau * utility + torch.randn(64, 4, 1)
    assert arm.shaping_penalty(logits, utility, tau).abs().max() < 1e-5
    assert (arm.shaping_penalty(logits, utility, tau / 2) > 1e-3).all()


def test_tau_zero_is_log_k_minus_the_entropy_whatever_the_utilities():
    logits, utility = random_logits_and_utility(seed=2)
    entropy = torch.distributions.Categorical(logits=logits).entropy().sum(-1)  # summed over the 4 dimensions
    expected = 4 * math.log(K) - entropy
    torch.testing.assert_close(arm.shaping_penalty(logits, utility, 0.0), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        arm.shaping_penalty(logits, 100 * torch.randn_like(utility), 0.0), expected, rtol=1e-5, atol=1e-5
    )
    # the uniform policy is the entropy-only variant's optimum: zero penalty
    assert arm.shaping_penalty(torch.zeros(3, 4, K), utility[:3], 0.0).abs().max() < 1e-6


def test_no_gradient_reaches_the_utility_critic_through_the_penalty():
    torch.manual_seed(0)
    agent, critic = arm.Agent(39, K), arm.UtilityCritic(39, K)
    with torch.no_grad():
        critic.net[-1].weight.mul_(100.0)  # a critic with real preferences, so the target is far from uniform
    obs = torch.randn(32, 39)
    arm.shaping_penalty(agent.get_logits(obs), critic(obs), 4.0).mean().backward()
    assert all(p.grad is None or not p.grad.any() for p in critic.parameters())
    assert all(p.grad is not None for p in agent.actor.parameters()) and agent.actor[-1].weight.grad.abs().sum() > 0
    # the same KL without the stop-gradient would train the critic: the check above can fail
    agent.zero_grad()
    log_pi, log_q = agent.get_logits(obs).log_softmax(-1), (4.0 * critic(obs)).log_softmax(-1)
    (log_pi.exp() * (log_pi - log_q)).sum((-2, -1)).mean().backward()
    assert critic.net[-1].weight.grad.abs().sum() > 0


def test_descending_the_penalty_moves_the_policy_to_the_target():
    _, utility = random_logits_and_utility(n=8, seed=3)
    logits = torch.zeros(8, 4, K, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=0.1)
    for _ in range(500):
        optimizer.zero_grad()
        arm.shaping_penalty(logits, utility, 4.0).sum().backward()
        optimizer.step()
    torch.testing.assert_close(logits.detach().softmax(-1), (4.0 * utility).softmax(-1), atol=2e-3, rtol=0)


def check(args):
    """The checks a run makes before writing anything: the arm's own flags, then the shared ones."""
    arm.check_args(args)
    training_run.check_common_args(args)


@pytest.mark.parametrize(
    "flags,hint",
    [
        (dict(shaping_coef=-0.1), "--shaping-coef"),
        (dict(shaping_tau=-1.0), "--shaping-tau"),
        (dict(rank_states=0), "--rank-states"),
    ],
)
def test_bad_shaping_flags_are_one_line_and_exit_2(flags, hint, capsys):
    with pytest.raises(SystemExit) as e:
        check(arm.Args(**flags))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and hint in err[0]
    check(arm.Args(shaping_coef=0.0, shaping_tau=0.0))  # both 0 are valid: the critic alone, the entropy-only target


@pytest.mark.parametrize("tau", ["0", "4"])
def test_short_run_writes_vanilla_outputs_plus_the_shaping_columns(tmp_path, tau):
    result = run_script("ppo_loss_shaping.py", tmp_path, *SHORT_RUN, "--shaping-tau", tau)
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "reach-v3__ppo_loss_shaping__1"
    metrics, _ = check_outputs(run_dir, iterations=4)
    assert list(metrics[0]) == list(ppo_vanilla.METRICS) + NEW_COLUMNS
    for row in metrics:
        penalty = float(row["shaping_penalty"])
        assert 0 <= penalty < 4 * math.log(64) and math.isfinite(float(row["utility_loss"]))
        assert -1 <= float(row["rank_agreement"]) <= 1
        if tau == "0":  # log K - entropy per dimension: the rollout's entropy, up to the update's small policy change
            assert penalty == pytest.approx(4 * math.log(64) - float(row["policy_entropy"]), abs=0.05)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["shaping_tau"] == float(tau) and config["shaping_coef"] == arm.Args().shaping_coef
    assert "utility_critic" in torch.load(run_dir / "checkpoint.pt", weights_only=False)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set(EventAccumulator(str(run_dir)).Reload().Tags()["scalars"])
    assert {"losses/shaping_penalty", "losses/utility_loss", "charts/rank_agreement"} <= tags


def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path):
    """The utility critic's weights and its share of the Adam state travel in the checkpoint."""
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
    ]
    assert run_script("ppo_loss_shaping.py", tmp_path, *flags, "--exp-name", "straight").returncode == 0
    run_dir = tmp_path / "reach-v3__killed__1"
    kill_after_checkpoint("ppo_loss_shaping.py", tmp_path, run_dir, [*flags, "--exp-name", "killed"], min_iteration=4)
    result = run_script("ppo_loss_shaping.py", tmp_path, *flags, "--exp-name", "killed", "--resume")
    assert result.returncode == 0 and "resuming" in result.stdout, result.stderr
    straight = comparable(tmp_path / "reach-v3__straight__1")
    assert comparable(run_dir) == straight
    assert len(straight[0]) == 12 and all(np.isfinite(float(r["shaping_penalty"])) for r in straight[0])
    assert len(read_csv(run_dir / "metrics.csv")) == 12
