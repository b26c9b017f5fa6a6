"""The math every arm shares (a copy of ppo_vanilla.py's), checked against direct computation."""

import importlib
import inspect

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.wrappers.utils import RunningMeanStd

import training_run
from conftest import ROOT

ARMS = [p.stem for p in sorted(ROOT.glob("ppo_*.py"))]


@pytest.fixture(params=ARMS)
def arm(request):
    return importlib.import_module(request.param)


def no_mask(arm, batch: int, num_bins: int):
    """The extra argument a masking arm's get_log_probs takes: an all-zero logit offset (nothing masked)."""
    if "logit_offset" in inspect.signature(arm.Agent.get_log_probs).parameters:
        return (torch.zeros(batch, 4, num_bins),)
    return ()


def test_bins_are_evenly_spaced_on_minus_one_to_one(arm):
    for k in (2, 5, 64):
        agent = arm.Agent(39, k)
        values = agent.bin_values.numpy()
        assert values[0] == -1.0 and values[-1] == 1.0
        np.testing.assert_allclose(np.diff(values), 2.0 / (k - 1), rtol=1e-5)
    assert agent.get_logits(torch.zeros(3, 39)).shape == (3, 4, 64)


def test_reference_kl_is_the_sum_of_the_per_dimension_categorical_kls(arm):
    """--ref-kl-coef's penalty, KL(pi || pi_ref) per state, against torch.distributions' KL of the 4 Categoricals,
    also where the policy masks bins hard (probability exactly 0: they add nothing, finitely)."""
    torch.manual_seed(0)
    logits, ref_logits = torch.randn(2, 5, 4, 16)
    logits[:, :, :5] -= 1e9  # the first 5 bins of every dimension masked hard, as the masking arms do it
    for policy in (torch.randn(5, 4, 16), logits):
        expected = torch.distributions.kl_divergence(
            torch.distributions.Categorical(logits=policy), torch.distributions.Categorical(logits=ref_logits)
        ).sum(-1)
        got = arm.reference_kl(policy.log_softmax(-1), ref_logits.log_softmax(-1))
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    same = torch.randn(5, 4, 16).log_softmax(-1)
    torch.testing.assert_close(arm.reference_kl(same, same), torch.zeros(5))


def test_factored_log_prob_and_entropy_match_per_dimension_categoricals(arm):
    torch.manual_seed(0)
    agent = arm.Agent(39, 16)
    with torch.no_grad():  # make the policy far from uniform so the check means something
        agent.actor[-1].weight.mul_(300.0)
    obs = torch.randn(32, 39)
    actions = torch.randint(0, 16, (32, 4))
    log_probs = agent.get_log_probs(obs, *no_mask(arm, 32, 16))
    logprob, dim_entropy = arm.action_log_prob(log_probs, actions), arm.dimension_entropy(log_probs)
    entropy = dim_entropy.sum(-1)
    logits = agent.get_logits(obs)
    expected_lp = torch.zeros(32)
    expected_h = torch.zeros(32, 4)
    for d in range(4):
        dist = torch.distributions.Categorical(logits=logits[:, d])
        expected_lp += dist.log_prob(actions[:, d])
        expected_h[:, d] = dist.entropy()
    torch.testing.assert_close(logprob, expected_lp, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dim_entropy, expected_h, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(entropy, expected_h.sum(-1), rtol=1e-5, atol=1e-5)


def test_sampling_follows_the_categorical(arm):
    np.random.seed(0)
    probs = np.array([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1], [0.25] * 4, [0.0, 0.5, 0.5, 0.0]])
    n = 20000
    with np.errstate(divide="ignore"):
        logits = np.broadcast_to(np.log(probs) + 3.0, (n, 4, 4))  # a constant shift changes nothing
    actions = arm.sample_action(logits)
    assert actions.shape == (n, 4)
    freq = np.stack([np.bincount(actions[:, d], minlength=4) for d in range(4)]) / n
    np.testing.assert_allclose(freq, probs, atol=0.015, rtol=0)


def test_numpy_rollout_networks_match_torch(arm):
    """The rollout's NumPy copies of the networks compute what the torch modules compute."""
    torch.manual_seed(0)
    agent = arm.Agent(39, 64)
    # the actor, and the utility critic of the arms that have one (the masker calls it in the rollout)
    nets = [agent.actor] + ([arm.UtilityCritic(39, 64).net] if hasattr(arm, "UtilityCritic") else [])
    obs = torch.randn(5, 39) * 3
    for net in nets:
        with torch.no_grad():
            net[-1].weight.mul_(100.0)  # far from the near-zero initial outputs
            expected = net(obs).numpy()
        np.testing.assert_allclose(arm.numpy_mlp(net)(obs.numpy()), expected, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(arm.numpy_mlp(net)(obs.numpy()[0]), expected[0], rtol=1e-5, atol=1e-4)


def test_advantages_are_normalized_within_each_minibatch(arm):
    rng = np.random.default_rng(0)
    advantages = torch.as_tensor(rng.normal(5.0, 3.0, size=256), dtype=torch.float32)
    out = arm.normalize_per_minibatch(advantages, 64)
    for start in range(0, 256, 64):  # CleanRL's per-minibatch normalization, one minibatch at a time
        mb = advantages[start : start + 64]
        torch.testing.assert_close(out[start : start + 64], (mb - mb.mean()) / (mb.std() + 1e-8))


def test_gae_hand_computed_with_a_truncation_and_a_termination(arm):
    # step 1 is truncated (bootstrap from its final observation, value 100), step 3 terminates
    rewards = np.array([[1.0], [2.0], [3.0], [4.0]])
    values = np.array([[10.0], [20.0], [30.0], [40.0]])
    next_values = np.array([[20.0], [100.0], [40.0], [50.0]])
    dones = np.array([[0.0], [1.0], [0.0], [1.0]])
    terminations = np.array([[0.0], [0.0], [0.0], [1.0]])
    adv, ret = arm.compute_gae(rewards, values, next_values, terminations, dones, gamma=0.5, gae_lambda=0.5)
    np.testing.assert_allclose(adv[:, 0], [9.0, 32.0, -16.0, -36.0])
    np.testing.assert_allclose(ret[:, 0], [19.0, 52.0, 14.0, 4.0])
    # --no-bootstrap-truncation: truncation counts as terminal
    adv, _ = arm.compute_gae(rewards, values, next_values, dones, dones, gamma=0.5, gae_lambda=0.5)
    np.testing.assert_allclose(adv[:, 0], [-3.5, -18.0, -16.0, -36.0])


def test_gae_keeps_environments_apart(arm):
    rng = np.random.default_rng(0)
    r, v, nv = rng.normal(size=(3, 6, 2))
    d = np.zeros((6, 2))
    d[2, 1] = 1.0
    both, _ = arm.compute_gae(r, v, nv, d, d, 0.9, 0.8)
    for i in range(2):
        alone, _ = arm.compute_gae(
            r[:, i : i + 1], v[:, i : i + 1], nv[:, i : i + 1], d[:, i : i + 1], d[:, i : i + 1], 0.9, 0.8
        )
        np.testing.assert_allclose(both[:, i], alone[:, 0])


def test_running_normalizers_match_the_whole_stream(arm):
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 5)) for n in (1, 7, 256, 3)]
    rms = RunningMeanStd(shape=(5,))
    for b in batches:
        rms.update(b)
    data = np.concatenate(batches)
    np.testing.assert_allclose(rms.mean, data.mean(0), rtol=1e-4)
    np.testing.assert_allclose(rms.var, data.var(0), rtol=1e-3)
    x = rng.normal(3.0, 2.0, size=(4, 5))
    x[0, 0] = 1e6  # far outside: clipped to 10
    out = arm.normalize_obs(x, rms, enabled=True)
    assert out.dtype == np.float32
    expected = np.clip((x - rms.mean) / np.sqrt(rms.var + 1e-8), -10, 10)
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    assert out[0, 0] == 10.0
    np.testing.assert_allclose(arm.normalize_obs(x, rms, enabled=False), x.astype(np.float32))
    # value targets: standardized with the running statistics, de-standardized back exactly
    returns = rng.normal(500.0, 80.0, size=1000)
    vrms = RunningMeanStd(shape=())
    vrms.update(returns)
    z = arm.normalize(returns, vrms)
    assert abs(z.mean()) < 1e-6 and abs(z.std() - 1) < 1e-3
    np.testing.assert_allclose(z * np.sqrt(vrms.var + 1e-8) + vrms.mean, returns)


def test_success_summary(arm):
    curve = [float("nan"), 0.0, 0.25, 0.5, 1.0]
    steps = [100, 200, 300, 400, 500]
    s = training_run.success_curve_summary(curve, steps, [0, 0, 1, 1, 1], final_episodes=2)
    assert s["final_success"] == 1.0 and s["final_success_episodes"] == 2
    assert s["auc"] == pytest.approx(1.75 / 5)
    assert s["steps_to_half"] == 400
    s = training_run.success_curve_summary([0.1, 0.2], [1, 2], [0, 1, 0], final_episodes=10)
    assert s["steps_to_half"] is None and s["final_success"] == pytest.approx(1 / 3)


def test_v2_names_map_to_v3_and_unknown_names_fail(arm, capsys):
    assert training_run.resolve_env_id("button-press-v2") == "button-press-v3"
    assert "button-press-v3" in capsys.readouterr().out
    assert training_run.resolve_env_id("drawer-close-v3") == "drawer-close-v3"
    with pytest.raises(SystemExit) as e:
        training_run.resolve_env_id("buton-press-v2")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "button-press-v3" in err


def test_episode_replay_restores_the_exact_mid_episode_state(arm):
    env = arm.make_env("button-press-v3", 3)()
    env.reset()
    rng = np.random.default_rng(0)
    for _ in range(620):  # past one episode end (500 steps), into the second episode
        _, _, term, trunc, _ = env.step(rng.uniform(-1, 1, 4).astype(np.float32))
        if term or trunc:
            env.reset()
    state = env.episode_state()
    fresh = arm.make_env("button-press-v3", 3)()
    fresh.reset()
    obs = fresh.restore_episode(state)
    assert len(state["actions"]) == 120
    for _ in range(400):  # both continue identically, through the next truncation and reset
        action = rng.uniform(-1, 1, 4).astype(np.float32)
        a, b = env.step(action), fresh.step(action)
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:4] == b[1:4] and a[4].get("episode_success") == b[4].get("episode_success")
        if a[2] or a[3]:
            np.testing.assert_array_equal(env.reset()[0], fresh.reset()[0])
    assert obs.shape == (39,)


@pytest.mark.parametrize(
    "success_steps,any_step,last_step",
    [
        ({2}, 1.0, 0.0),  # succeeds, then lets go (a spring-loaded button released): success flips back to 0
        ({2, 3}, 1.0, 1.0),  # succeeds and holds to the end
        ({3}, 1.0, 1.0),
        (set(), 0.0, 0.0),
    ],
)
def test_episode_success_any_step_and_last_step(arm, success_steps, any_step, last_step):
    class Scripted(gym.Env):
        observation_space = gym.spaces.Box(-1, 1, (1,))
        action_space = gym.spaces.Box(-1, 1, (4,))

        def reset(self, seed=None, options=None):
            self.t = 0
            return np.zeros(1), {}

        def step(self, action):
            self.t += 1
            return np.zeros(1), 0.0, False, self.t == 3, {"success": float(self.t in success_steps)}

        def get_checkpoint(self):
            return ("scripted", {})

    env = training_run.EpisodeRecorder(Scripted())
    for _ in range(2):  # the second episode starts afresh
        env.reset()
        infos = [env.step(np.zeros(4))[4] for _ in range(3)]
        assert infos[0] == infos[1] == {}  # mid-episode: nothing (the vector env would merge every key, every step)
        assert infos[2]["episode_success"] == any_step and infos[2]["episode_success_last_step"] == last_step
