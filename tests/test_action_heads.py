"""--action-head: the ordinal and Poisson heads compute what their papers define, the rollout's NumPy copy and the
update's torch path give the same logits in every arm, and every head trains end to end on a real task."""

import importlib
import json
import math

import numpy as np
import pytest
import torch

from conftest import SHORT_RUN, read_csv, run_script

ARMS = ["ppo_vanilla", "ppo_random_mask", "ppo_utility_mask", "ppo_loss_shaping", "ppo_offpolicy_utility_mask"]
HEADS = ["categorical", "ordinal", "poisson"]
arm = importlib.import_module("ppo_vanilla")


def test_ordinal_head_is_tang_and_agrawal_eq4_and_uniform_at_zero():
    K = 7
    scores = torch.randn(3, 4, K, dtype=torch.float64) * 3
    logits = arm.head_logits(scores, "ordinal", K, 2.5)
    sig = torch.sigmoid(scores)
    for k in range(K):  # sum_{j <= k} log sigmoid(s_j) + sum_{j > k} log(1 - sigmoid(s_j)), term by term
        direct = torch.log(sig[..., : k + 1]).sum(-1) + torch.log(1 - sig[..., k + 1 :]).sum(-1)
        assert torch.allclose(logits[..., k], direct, atol=1e-10)
    zero = arm.head_logits(torch.zeros(2, 4, K), "ordinal", K, 2.5)
    assert torch.allclose(zero, torch.full_like(zero, K * math.log(0.5)))  # every bin alike: uniform


def test_poisson_head_is_a_tempered_truncated_poisson_centred_at_zero():
    scipy_stats = pytest.importorskip("scipy.stats")
    K, temperature = 64, 2.5
    outputs = torch.tensor([[-3.0], [0.0], [1.5], [6.0]], dtype=torch.float64).expand(2, 4, 1)
    probs = arm.head_logits(outputs, "poisson", K, temperature).softmax(-1)
    rate = (K + 1) * torch.sigmoid(outputs)
    for d in range(4):
        pmf = scipy_stats.poisson.pmf(np.arange(1, K + 1), rate[0, d, 0].item()) ** (1 / temperature)
        assert np.allclose(probs[0, d].numpy(), pmf / pmf.sum(), atol=1e-9)
    # the rate grows with the output, so the mode moves up the bins; at output 0 it is the middle bin
    assert probs[0, 1].argmax().item() + 1 in (K // 2, K // 2 + 1)
    assert list(probs[0].argmax(-1)) == sorted(probs[0].argmax(-1))
    # unimodal: the probabilities rise to the mode and fall after it
    diffs = np.sign(np.diff(probs[0, 2].numpy()))
    assert (np.diff(diffs[diffs != 0]) != 0).sum() <= 1


@pytest.mark.parametrize("head", HEADS)
def test_every_head_gives_finite_normalized_distributions_at_extreme_outputs(head):
    K = 256
    width = arm.head_outputs(head, K)
    for scale in (1e-3, 1.0, 50.0):
        outputs = torch.randn(16, 4, width) * scale
        log_probs = arm.head_logits(outputs, head, K, 2.5).log_softmax(-1)
        assert torch.isfinite(log_probs).all()
        assert torch.allclose(log_probs.exp().sum(-1), torch.ones(16, 4), atol=1e-5)


@pytest.mark.parametrize("module_name", ARMS)
@pytest.mark.parametrize("head", HEADS)
def test_numpy_rollout_and_torch_update_compute_the_same_logits(module_name, head):
    module = importlib.import_module(module_name)
    torch.manual_seed(0)
    agent = module.Agent(39, 256, head, 2.5)
    for p in agent.actor.parameters():  # weights far from initialization, so the head's whole range is exercised
        p.data.normal_(0, 0.5)
    obs = np.random.default_rng(0).normal(size=(32, 39)).astype(np.float32) * 3
    rollout = module.numpy_actor(agent)(obs)
    with torch.no_grad():
        update = agent.get_logits(torch.as_tensor(obs)).numpy()
    assert rollout.shape == update.shape == (32, 4, 256)
    # the same logits up to float32 rounding (sums of up to 256 terms of a few hundred), hence the same distribution
    assert np.allclose(rollout, update, rtol=1e-5, atol=1e-4)
    total_variation = 0.5 * np.abs(torch.as_tensor(rollout).softmax(-1) - torch.as_tensor(update).softmax(-1)).sum(-1)
    assert total_variation.max() < 1e-3


@pytest.mark.parametrize(
    "script,head",
    [
        ("ppo_vanilla.py", "ordinal"),
        ("ppo_vanilla.py", "poisson"),
        ("ppo_utility_mask.py", "ordinal"),
        ("ppo_loss_shaping.py", "poisson"),
    ],
)
def test_a_short_run_with_each_head_trains(tmp_path, script, head):
    """Masks and the loss-shaping KL act on the head's logits unchanged; the metrics stay finite."""
    extra = ["--mask-warmup-start", "0", "--mask-warmup-end", "512"] if "mask" in script else []
    result = run_script(script, tmp_path, *SHORT_RUN, "--action-head", head, *extra)
    assert result.returncode == 0, result.stderr
    run_dir = next(tmp_path.iterdir())
    assert json.loads((run_dir / "config.json").read_text())["action_head"] == head
    rows = read_csv(run_dir / "metrics.csv")
    assert len(rows) == 4 and all(math.isfinite(float(r["policy_entropy"])) for r in rows)
    assert all(0 < float(r["policy_entropy"]) <= 4 * math.log(64) + 1e-4 for r in rows)
    assert (run_dir / "summary.json").exists()


def test_a_bad_temperature_is_one_line(tmp_path):
    result = run_script(
        "ppo_vanilla.py", tmp_path, *SHORT_RUN, "--action-head", "poisson", "--poisson-temperature", "0"
    )
    assert result.returncode == 2 and result.stderr.strip() == "error: --poisson-temperature must be positive, got 0.0"
    assert not any(tmp_path.iterdir())
