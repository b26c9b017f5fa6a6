"""The masking arms' mechanics (paper sections 3, 4 and 6), each a property a wrong implementation breaks, tested on
the scripts' own functions."""

import numpy as np
import pytest
import scipy.stats
import torch

import ppo_random_mask as random_arm
import ppo_utility_mask as utility_arm

MASKING_ARMS = [random_arm, utility_arm]
K = 64


def args_for(arm, **overrides):
    return arm.Args(**{"num_bins": K, **overrides})


AFTER_WARMUP = 10**9  # a global step past every warm-up: the full budget


def random_utility(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 4, K)).astype(np.float32)


def log_prob(arm, agent, obs, actions, offsets):
    """log pi(a|s) under the stored logit offsets, as the update computes it."""
    return arm.action_log_prob(
        agent.get_log_probs(obs, torch.as_tensor(offsets, dtype=torch.float32)), torch.as_tensor(actions)
    )


def policy_logits(agent, obs):
    """The rollout's logits: the NumPy copy of the actor, shape (batch, 4, K)."""
    return random_arm.numpy_mlp(agent.actor)(obs.numpy()).reshape(len(obs), 4, -1)


@pytest.mark.parametrize("arm", MASKING_ARMS, ids=["random", "utility"])
def test_budget_schedule(arm):
    args = args_for(arm)  # 25% of 64 = 16 bins, ramped over steps 50k..150k
    expected = {0: 0, 49_999: 0, 50_000: 0, 75_000: 4, 100_000: 8, 149_999: 15, 150_000: 16, 1_000_000: 16}
    assert {s: arm.masked_bins_per_dim(s, args) for s in expected} == expected
    assert arm.masked_bins_per_dim(10**9, args_for(arm, mask_budget=0.999, num_bins=2)) == 1  # one bin always stays
    assert arm.masked_bins_per_dim(1, args_for(arm, mask_warmup_start=0, mask_warmup_end=0)) == 16


def test_random_mask_removes_exactly_the_budget():
    np.random.seed(0)
    mask = random_arm.random_mask(5000, K, 16)
    assert mask.shape == (5000, 4, K) and (mask.sum(-1) == 16).all()
    assert not random_arm.random_mask(3, K, 0).any()
    for d in range(4):  # every bin equally likely to go
        assert scipy.stats.chisquare(mask[:, d].sum(0)).pvalue > 0.001


def test_utility_mask_removes_the_budget_of_lowest_bins_and_never_the_top_bin():
    utility = random_utility(2000)
    # skewed utilities: a few very low bins pull each dimension's mean down, so fewer than 16 bins lie below it
    skewed = np.zeros((50, 4, K), dtype=np.float32) + np.linspace(0, 0.01, K, dtype=np.float32)
    skewed[..., :4] = -10.0
    for m in (1, 16, K - 1):
        args = args_for(utility_arm, mask_mode="hard", utility_threshold=0.0, mask_budget=m / K)
        for u in (utility, skewed):
            _, mask = utility_arm.utility_logit_offset(u, AFTER_WARMUP, args)
            assert not np.take_along_axis(mask, u.argmax(-1)[..., None], -1).any()
            # threshold 0 turns the eligibility test off: exactly the m lowest bins go, the budget exactly
            lowest = np.zeros_like(mask)
            np.put_along_axis(lowest, u.argsort(-1)[..., :m], True, -1)
            np.testing.assert_array_equal(mask, lowest)
    # a positive threshold spends less than the budget on the skewed utilities (only the 4 outliers are eligible)
    _, mask = utility_arm.utility_logit_offset(
        skewed, AFTER_WARMUP, args_for(utility_arm, mask_mode="hard", utility_threshold=0.01)
    )
    assert (mask.sum(-1) == 4).all()
    # the top bin stays even when every bin ties
    args = args_for(utility_arm, mask_mode="hard", utility_threshold=0.0, mask_budget=(K - 1) / K)
    _, mask = utility_arm.utility_logit_offset(np.zeros((5, 4, K), dtype=np.float32), AFTER_WARMUP, args)
    assert not mask.all(-1).any() and (mask.sum(-1) == K - 1).all()


def test_threshold_half_removes_fewer_bins_than_a_quarter():
    utility = random_utility(1000, seed=1)
    fractions = {}
    for threshold in (0.25, 0.5):
        _, mask = utility_arm.utility_logit_offset(
            utility, AFTER_WARMUP, args_for(utility_arm, utility_threshold=threshold)
        )
        fractions[threshold] = mask.mean()
        centered = utility - utility.mean(-1, keepdims=True)
        standardized = centered / centered.max(-1, keepdims=True)  # mean bin 0, top bin 1
        assert not (mask & (standardized >= -threshold)).any()  # only bins standardized below -threshold are eligible
        assert (mask.sum(-1) <= 16).all()
    assert fractions[0.5] < fractions[0.25] - 0.02, fractions


@pytest.mark.parametrize("arm,mode", [(random_arm, "hard"), (utility_arm, "hard"), (utility_arm, "gumbel")])
def test_hard_masked_bins_are_never_sampled(arm, mode):
    torch.manual_seed(0)
    agent = arm.Agent(39, K)
    with torch.no_grad():  # make the masked bins the policy's favourites
        agent.actor[-1].weight.zero_()
        agent.actor[-1].bias.copy_(torch.linspace(5, 0, K).repeat(4))
    n = 20000
    np.random.seed(0)
    mask = random_arm.random_mask(n, K, 16)
    mask[:, :, 0] = True
    offset = arm.mask_to_logit_offset(mask, args_for(arm, mask_mode="hard"))
    actions = arm.sample_action(policy_logits(agent, torch.zeros(n, 39)) + offset)
    assert not np.take_along_axis(mask, actions[..., None], -1).any()


@pytest.mark.parametrize("arm", MASKING_ARMS, ids=["random", "utility"])
def test_soft_mask_penalizes_but_keeps_bins(arm):
    mask = np.zeros((1, 4, K), dtype=bool)
    mask[0, 0, 3] = True
    offset = arm.mask_to_logit_offset(mask, args_for(arm, mask_mode="soft", soft_mask_penalty=5.0))
    assert offset[0, 0, 3] == -5.0 and offset.sum() == -5.0


@pytest.mark.parametrize("arm", MASKING_ARMS, ids=["random", "utility"])
def test_stored_mask_gives_ratio_exactly_one_before_the_first_update(arm):
    """The rollout's log-probs (whole batch, stored masks) against the update's first minibatch recomputation."""
    torch.manual_seed(0)
    np.random.seed(0)
    agent = arm.Agent(39, K)
    obs = torch.randn(2048, 39)
    if arm is random_arm:
        mask = random_arm.random_mask(2048, K, 16)
        offsets = arm.mask_to_logit_offset(mask, args_for(arm))
    else:
        utility = utility_arm.numpy_mlp(utility_arm.UtilityCritic(39, K).net)(obs.numpy()).reshape(2048, 4, K) * 100
        offsets, mask = utility_arm.utility_logit_offset(utility, AFTER_WARMUP, args_for(arm, utility_threshold=0.0))
    assert mask.any()
    actions = arm.sample_action(policy_logits(agent, obs) + offsets)
    offsets = torch.as_tensor(offsets, dtype=torch.float32)  # as stored in the rollout buffer
    with torch.no_grad():
        old_logprob = log_prob(arm, agent, obs, actions, offsets)
    mb = torch.from_numpy(np.random.default_rng(0).permutation(2048)[:64])
    new_logprob = log_prob(arm, agent, obs[mb], actions[mb], offsets[mb])
    assert torch.equal((new_logprob - old_logprob[mb]).exp(), torch.ones(64))
    # without the stored mask the ratio is not 1: the test can fail
    unmasked = log_prob(arm, agent, obs[mb], actions[mb], torch.zeros_like(offsets[mb]))
    assert not torch.allclose(unmasked, old_logprob[mb])


@pytest.mark.parametrize("arm", MASKING_ARMS, ids=["random", "utility"])
def test_unmasked_policy_entropy_equals_vanilla_on_the_same_logits(arm):
    """The masked arms log the policy's own entropy (what vanilla logs) beside the masked one that sampled: with the
    same weights, the masked arm's unmasked computation equals vanilla's."""
    import ppo_vanilla as vanilla

    torch.manual_seed(0)
    masked_agent, vanilla_agent = arm.Agent(39, K), vanilla.Agent(39, K)
    with torch.no_grad():
        masked_agent.actor[-1].weight.mul_(100.0)  # far from uniform, so the check means something
    vanilla_agent.load_state_dict(masked_agent.state_dict())
    obs = torch.randn(256, 39)
    with torch.no_grad():
        unmasked = arm.dimension_entropy(masked_agent.get_log_probs(obs, 0.0))
        torch.testing.assert_close(
            unmasked, vanilla.dimension_entropy(vanilla_agent.get_log_probs(obs)), rtol=0, atol=0
        )
        mask = random_arm.random_mask(256, K, 16)
        sampling = arm.dimension_entropy(
            masked_agent.get_log_probs(
                obs, torch.as_tensor(arm.mask_to_logit_offset(mask, args_for(arm)), dtype=torch.float32)
            )
        )
    assert not torch.allclose(sampling, unmasked)  # the masked distribution is another one: the check can fail


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_entropy_under_a_mask_is_the_entropy_of_the_renormalized_distribution(mode):
    torch.manual_seed(0)
    agent = utility_arm.Agent(39, K)
    with torch.no_grad():
        agent.actor[-1].weight.mul_(200)
    obs = torch.randn(16, 39)
    np.random.seed(0)
    mask = torch.as_tensor(random_arm.random_mask(16, K, 20))
    args = args_for(utility_arm, mask_mode=mode, soft_mask_penalty=3.0)
    dim_entropy = utility_arm.dimension_entropy(agent.get_log_probs(obs, utility_arm.mask_to_logit_offset(mask, args)))
    entropy = dim_entropy.sum(-1)
    probs = agent.get_logits(obs).softmax(-1).double()
    weights = (~mask).double() if mode == "hard" else torch.where(mask, np.exp(-3.0), 1.0).double()
    renormalized = probs * weights / (probs * weights).sum(-1, keepdim=True)
    expected = -(renormalized * renormalized.clamp_min(1e-300).log()).sum(-1)
    torch.testing.assert_close(dim_entropy.double(), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(entropy.double(), expected.sum(-1), rtol=1e-4, atol=1e-4)


def test_additive_loss_sends_gradient_only_to_the_taken_bins():
    utility = torch.randn(8, 4, K, generator=torch.Generator().manual_seed(0), requires_grad=True)
    actions = torch.randint(0, K, (8, 4))
    targets = torch.randn(8)
    loss = utility_arm.utility_loss(utility, actions, targets, "additive")
    taken = utility.detach().gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    assert loss.item() == pytest.approx(((taken.sum(-1) - targets) ** 2).mean().item(), rel=1e-6)
    loss.backward()
    taken_mask = torch.zeros(8, 4, K, dtype=torch.bool).scatter_(-1, actions.unsqueeze(-1), True)
    assert (utility.grad[~taken_mask] == 0).all() and (utility.grad[taken_mask] != 0).all()
    # VDN credit: every dimension of a transition gets the same residual gradient 2 (sum - A) / batch
    expected = (2 * (taken.sum(-1) - targets) / 8).unsqueeze(-1).expand(8, 4)
    torch.testing.assert_close(utility.grad[taken_mask].view(8, 4), expected)
    broadcast = utility_arm.utility_loss(utility.detach(), actions, targets, "broadcast")
    assert broadcast.item() == pytest.approx(((taken - targets[:, None]) ** 2).mean().item(), rel=1e-6)


def test_gumbel_with_alpha_zero_masks_uniformly():
    np.random.seed(123)
    args = args_for(utility_arm, mask_mode="gumbel", gumbel_alpha=0.0)
    utility = np.broadcast_to(random_utility(1, seed=2), (20000, 4, K))  # one state, its utilities ignored at alpha 0
    _, mask = utility_arm.utility_logit_offset(utility, AFTER_WARMUP, args)
    assert (mask.sum(-1) == 16).all()
    counts = mask.sum(0)  # (4, K)
    for d in range(4):
        assert scipy.stats.chisquare(counts[d]).pvalue > 0.001
    # with alpha > 0 low-utility bins go far more often, and the top bin almost never
    _, directed = utility_arm.utility_logit_offset(
        utility, AFTER_WARMUP, args_for(utility_arm, mask_mode="gumbel", gumbel_alpha=4.0)
    )
    order = utility[0].argsort(-1)
    rate = directed.mean(0)
    assert (np.take_along_axis(rate, order[:, :8], -1).mean() > 0.9) and (
        np.take_along_axis(rate, order[:, -1:], -1) < 0.01
    ).all()


def test_boost_changes_logits_and_removes_nothing():
    utility = random_utility(10)
    args = args_for(utility_arm, mask_mode="boost", boost_beta=2.0)
    offset, mask = utility_arm.utility_logit_offset(utility, AFTER_WARMUP, args)
    assert not mask.any()
    np.testing.assert_allclose(offset, 2.0 * (utility - utility.mean(-1, keepdims=True)))
    # boost follows the warm-up like every mask: nothing before 50k, half of beta halfway through the ramp
    for step, weight in ((0, 0.0), (49_999, 0.0), (100_000, 1.0), (150_000, 2.0)):
        ramped, _ = utility_arm.utility_logit_offset(utility, step, args)
        np.testing.assert_allclose(ramped, weight * (utility - utility.mean(-1, keepdims=True)), atol=1e-6)
    agent = utility_arm.Agent(39, K)
    obs = torch.randn(10, 39)
    boosted = log_prob(utility_arm, agent, obs, utility.argmax(-1), offset)
    plain = log_prob(utility_arm, agent, obs, utility.argmax(-1), np.zeros_like(offset))
    assert (boosted > plain).all()  # the top-utility bins became more likely


def test_rank_agreement_is_the_mean_spearman_correlation():
    utility = torch.as_tensor(random_utility(20, seed=3))
    logits = utility + 2.0 * torch.as_tensor(random_utility(20, seed=4))
    expected = np.mean(
        [scipy.stats.spearmanr(utility[i, d], logits[i, d]).statistic for i in range(20) for d in range(4)]
    )
    assert utility_arm.rank_agreement(utility, logits).item() == pytest.approx(expected, abs=1e-5)
    assert utility_arm.rank_agreement(utility, utility * 3).item() == pytest.approx(1.0)
