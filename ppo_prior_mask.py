# Discretized PPO FINE-TUNING a pretrained token policy on MetaWorld with a token mask chosen by that policy, the PRIOR:
# at every step, for every environment, it removes the scheduled number of bins of each action dimension with the
# LOWEST probability under the frozen pretrained policy (--init-from, a pretrain_bc.py file) at that state. The paper
# holds that action elimination works "when a reliable signal marks unhelpful actions" and found the on-policy utility
# too weak; in fine-tuning such a signal comes for free, the pretrained policy's own probabilities (docs/finetuning.md).
# A copy of ppo_random_mask.py that differs only in which bins it masks: `diff ppo_random_mask.py ppo_prior_mask.py`.
import functools
import math
import os
import random
from dataclasses import dataclass
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
import tyro
from gymnasium.wrappers.utils import RunningMeanStd

from training_run import EpisodeRecorder, TrainingRun, fail

ACTION_DIMS = 4  # MetaWorld's Sawyer arm: x, y, z of the end effector and the gripper


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment; the run directory is runs/{env_id}__{exp_name}__{seed}"""
    seed: int = 1
    """seed of the experiment (sub-environment i uses seed + i, the evaluation env seed + 10000)"""
    threads: int = 1
    """torch threads per process (1 is fastest for these tiny networks and lets one process run per core)"""
    cuda: bool = False
    """run the update on CUDA, each gradient step captured once as a CUDA graph and replayed (training_run's
    MinibatchStep; docs/speed.md); the rollout's batch-of-one policy calls always run on the CPU, in NumPy. Many
    runs on one GPU need MPS. The CPU (the default) computes the same update"""
    compile: bool = False
    """compile each gradient step once with torch.compile and run the compiled code (CPU only, not with --cuda;
    training_run's MinibatchStep; docs/speed.md): the same update up to float rounding, so a setting of its own, never
    mixed with eager runs in one cell or one resumed run. The first step pays the compilation (cached on disk after)"""
    track: bool = False
    """if toggled, this experiment is also logged to Weights and Biases (WANDB_MODE=offline works)"""
    wandb_project_name: str = "action-token-pruning"
    """the wandb project name"""
    wandb_entity: str | None = None
    """the entity (team) of the wandb project"""
    runs_dir: str = "runs"
    """the directory that holds one sub-directory per run"""
    resume: bool = False
    """continue this run from its last checkpoint (a run whose summary.json exists is reported as done)"""
    checkpoint_interval: int = 10
    """save a checkpoint every this many PPO iterations (and at the end)"""
    keep_checkpoints_at: tuple[int, ...] = ()
    """also keep a copy of the checkpoint taken at the end of the iteration that reaches each of these steps, as
    {run_dir}/checkpoint_step{step}.pt (for utility_probe.py at several points of one run); changes nothing trained"""
    capture_video: bool = False
    """film the first sampled-policy episode of each evaluation as an MP4 in {run_dir}/videos (also to W&B with
    --track); needs an OpenGL backend: MUJOCO_GL=egl (the default here) or osmesa (docs/running.md, "Videos")"""
    capture_video_greedy: bool = False
    """with --capture-video, also film the first greedy episode of each evaluation"""

    # Environment
    env_id: str = "button-press-v3"
    """the MetaWorld MT1 task; the paper's -v2 names are accepted as their -v3 versions"""
    total_timesteps: int = 1_000_000
    """total environment steps of training"""
    num_envs: int = 1
    """the number of parallel training environments (the paper uses 1)"""
    bootstrap_truncation: bool = True
    """bootstrap V(final observation) when MetaWorld truncates an episode at 500 steps;
    --no-bootstrap-truncation treats truncation as a terminal state"""
    norm_obs: bool = True
    """standardize observations with a running mean/std. The paper's method (section 3) names only value-target
    normalization; its section 8 says observation normalization was added to stabilize the baseline"""
    norm_value: bool = True
    """standardize value targets with a running mean/std (section 3, "Value normalization")"""

    # Policy
    num_bins: int = 64
    """K: bins per action dimension, evenly spaced on [-1, 1] (section 3)"""
    action_head: Literal["categorical", "ordinal", "poisson"] = "categorical"
    """how the actor's outputs become each dimension's K logits: categorical (the paper's: K free logits), ordinal
    (Tang and Agrawal, 2020: K scores whose log-sigmoids, accumulated in bin order, give the logits) or poisson (Zhu
    et al., 2024: one rate per dimension, the bins' Poisson log-masses); see docs/flags.md, Action heads"""
    poisson_temperature: float = 2.5
    """with --action-head poisson: the fixed temperature that divides the Poisson log-masses (Zhu et al.'s code's
    default; larger is flatter)"""

    # Fine-tuning a pretrained policy (docs/finetuning.md)
    init_from: str | None = None
    """a pretrain_bc.py file: the actor starts from its weights (and a run that standardizes observations from the
    statistics it was trained with); refused unless it was made for this run's task, K, action head and observation size"""
    critic_warmup_iterations: int = 0
    """for this many first PPO iterations only the value network trains: the actor gets no gradient, so its weights
    and its Adam state stay as they were (the critic warm-up of VLA fine-tuning recipes); 0 trains both from the start"""
    ref_kl_coef: float = 0.0
    """with --init-from: the weight of a penalty on KL(pi || pi_pretrained) at each state, summed over the 4 action
    dimensions, toward the frozen pretrained policy (the regularizer of RLHF and VLA-RL fine-tuning, which holds the
    policy near the one it started from); 0 computes nothing"""

    # Masking (sections 3 and 4; Table 1)
    mask_budget: float = 0.25
    """fraction of each dimension's K bins removed once the warm-up is over (at least one bin always stays)"""
    mask_warmup_start: int = 50_000
    """no bin is removed before this environment step"""
    mask_warmup_end: int = 150_000
    """the number of removed bins per dimension grows linearly from 0 to the budget between the warm-up steps"""
    mask_mode: Literal["hard", "soft"] = "soft"
    """hard: a masked bin's logit gets an effectively minus-infinity offset, so it is never sampled;
    soft (the paper's default): it gets the finite penalty --soft-mask-penalty"""
    soft_mask_penalty: float = 5.0
    """the logit penalty of a soft-masked bin (the paper gives no value: 5 leaves a masked bin e^-5, about 0.7%,
    of its probability, so it is mostly removed yet still sampled now and then, and its logit still learns)"""

    # PPO (Table 1)
    learning_rate: float = 3e-4
    """the learning rate of the optimizer"""
    anneal_lr: bool = True
    """anneal the learning rate linearly to 0 over training (CleanRL's default; the paper does not say)"""
    num_steps: int = 2048
    """the number of steps per environment in each rollout"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda for the general advantage estimation"""
    minibatch_size: int = 64
    """the minibatch size; num_envs * num_steps must be a multiple of it"""
    update_epochs: int = 10
    """the K epochs to update the policy"""
    norm_adv: bool = True
    """toggles advantages normalization (per minibatch)"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient"""
    clip_vloss: bool = True
    """toggles whether or not to use a clipped loss for the value function, as per the paper."""
    ent_coef: float = 0.0
    """coefficient of the entropy bonus"""
    vf_coef: float = 0.5
    """coefficient of the value function loss"""
    max_grad_norm: float = 0.5
    """the maximum norm for the gradient clipping"""
    target_kl: float | None = 0.02
    """stop the update's remaining epochs once an epoch ends with approx_kl above this (the paper uses target-KL
    early stopping without a value; 0.02 is SB3's common choice for this scale of KL summed over 4 heads)"""

    # Evaluation and summary
    eval_interval: int = 100_000
    """evaluate every this many environment steps on a separate environment (0 disables)"""
    eval_episodes: int = 5
    """episodes per evaluation, once with the sampled policy and once greedily (argmax per dimension)"""
    success_window: int = 20
    """the training success curve at each iteration is the success rate of the last this many episodes"""
    final_episodes: int = 100
    """summary.json's final_success is the success rate of the last this many training episodes"""


def check_args(args: Args) -> None:
    """Reject bad values of this arm's own flags before anything is written (training_run checks the shared ones)."""
    if args.init_from is None:
        fail(
            "ppo_prior_mask.py masks the bins the pretrained policy finds least likely: pass --init-from FILE, a "
            "pretrain_bc.py file (docs/finetuning.md)"
        )


def make_env(env_id: str, seed: int, **render_kwargs):
    def thunk():
        # MetaWorld's MT1 (registered when training_run imports metaworld): the task's 50 goal variations drawn with
        # `seed`, one re-drawn at every reset; every episode is truncated at 500 steps and never terminates. Only a
        # --capture-video run's evaluation env renders (render_kwargs).
        env = gym.make("Meta-World/MT1", env_name=env_id, seed=seed, disable_env_checker=True, **render_kwargs)
        return EpisodeRecorder(env)  # episode success, and what --resume needs to rebuild an episode in progress

    return thunk


def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    """Factored-categorical actor (4 x K logits, one Categorical per action dimension) and a separate critic."""

    def __init__(self, obs_dim: int, num_bins: int, action_head: str = "categorical", poisson_temperature: float = 2.5):
        super().__init__()
        self.num_bins = num_bins
        self.action_head, self.poisson_temperature = action_head, poisson_temperature
        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 1), std=1.0),
        )
        self.actor = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, ACTION_DIMS * head_outputs(action_head, num_bins)), std=0.01),
        )
        # bin k of every dimension is the continuous action bin_values[k]: K values evenly spaced on [-1, 1]
        self.register_buffer("bin_values", torch.linspace(-1.0, 1.0, num_bins))

    def get_value(self, x):
        """V(s) on the normalized value scale (de-normalize with the value statistics for real returns)."""
        return self.critic(x).squeeze(-1)

    def get_logits(self, x):
        outputs = self.actor(x).view(-1, ACTION_DIMS, head_outputs(self.action_head, self.num_bins))
        return head_logits(outputs, self.action_head, self.num_bins, self.poisson_temperature)

    def get_log_probs(self, x, logit_offset):
        """log pi_d(k|s) for every action dimension d and bin k, shape (batch, 4, K), under the mask that produced
        the actions (logits + logit_offset, renormalized): PPO's ratios compare exactly the distributions that sampled
        the data (section 3, "Token masking")."""
        return (self.get_logits(x) + logit_offset).log_softmax(-1)


def head_outputs(action_head: str, num_bins: int) -> int:
    """The actor's outputs per action dimension: K for the categorical and ordinal heads, one rate for poisson."""
    return 1 if action_head == "poisson" else num_bins


@functools.lru_cache
def poisson_support(num_bins: int, device=None):
    """k = 1..K (bin i is k = i + 1, Zhu et al.'s support) and log k!, float32: NumPy arrays, or torch tensors kept
    on `device` (a CUDA graph being captured cannot copy them from the CPU)."""
    k = np.arange(1, num_bins + 1)
    support = k.astype(np.float32), np.array([math.lgamma(x + 1) for x in k], dtype=np.float32)
    return support if device is None else tuple(torch.from_numpy(a).to(device) for a in support)


def head_logits(outputs, action_head: str, num_bins: int, poisson_temperature: float):
    """Each dimension's K logits, shape (batch, 4, K), from the actor's outputs (batch, 4, head_outputs). Written
    once for NumPy arrays (the rollout's copy) and torch tensors (the update), so both compute the same logits.
    The paper's categorical head leaves the bins unordered; the other two know their order, the paper's explanation
    of its K = 256 drop ("fine, unordered discretization", section 5) put to the test (docs/flags.md, "Action heads")."""
    if action_head == "categorical":
        return outputs
    xp, softplus = (torch, nn.functional.softplus) if torch.is_tensor(outputs) else (np, lambda v: np.logaddexp(0, v))
    if action_head == "ordinal":
        # Tang and Agrawal (2020), eq. 4: logit_k = sum_{j <= k} log sigmoid(s_j) + sum_{j > k} log(1 - sigmoid(s_j));
        # all s_j near 0 (the 0.01-scale initialization) make every bin's logit K log(1/2): uniform, as categorical
        log_yes, log_no = -softplus(-outputs), -softplus(outputs)
        log_no_through = xp.cumsum(log_no, -1)
        return xp.cumsum(log_yes, -1) + log_no_through[..., -1:] - log_no_through
    # poisson (Zhu et al., 2024): logit_k = (k log(lambda) - lambda - log k!) / temperature, a unimodal shape. Their
    # lambda = softplus(output) starts every dimension at its lowest bin and moves about one bin per unit of output
    # (their K = 11); here lambda = (K + 1) sigmoid(output): the middle bin at initialization and the same speed in
    # action space at every K. Their code also feeds the result through an ordinal transform; this follows the paper.
    k, log_k_factorial = poisson_support(num_bins, outputs.device if xp is torch else None)
    log_rate = -softplus(-outputs) + math.log(num_bins + 1)  # log((K + 1) sigmoid(output)), shape (batch, 4, 1)
    return (k * log_rate - xp.exp(log_rate) - log_k_factorial) / poisson_temperature


def reference_kl(log_probs, ref_log_probs):
    """KL(pi || pi_ref) at each state, summed over the action dimensions, from both policies' log-probs (batch, 4, K):
    sum_k pi(k) (log pi(k) - log pi_ref(k)). A bin the policy cannot sample (a hard mask) adds exactly 0."""
    return (log_probs.exp() * (log_probs - ref_log_probs)).sum((-2, -1))


def action_log_prob(log_probs, action):
    """log pi(a|s) of the factored policy: the sum over the independent per-dimension Categoricals (section 3)."""
    return log_probs.gather(-1, action.unsqueeze(-1)).sum((-2, -1))


def dimension_entropy(log_probs):
    """The entropy of each dimension's Categorical, shape (batch, 4); the policy's entropy is their sum."""
    return -(log_probs.exp() * log_probs).sum(-1)


def numpy_mlp(net: nn.Sequential):
    """A NumPy copy of a Linear/Tanh MLP for the rollout's batch-of-one calls, taken after each update: NumPy runs
    the 3 small layers in about 8 us, torch's per-operation dispatch needs about 45 us (docs/speed.md)."""
    layers = [
        (m.weight.detach().cpu().numpy().T.copy(), m.bias.detach().cpu().numpy().copy())
        for m in net
        if isinstance(m, nn.Linear)
    ]

    def forward(x):
        for i, (weight, bias) in enumerate(layers):
            x = x @ weight + bias
            if i < len(layers) - 1:
                x = np.tanh(x)
        return x

    return forward


def numpy_actor(agent: nn.Module):
    """The rollout's policy: a NumPy copy of the actor and its head, normalized observations -> logits (batch, 4, K),
    the numbers agent.get_logits computes."""
    mlp = numpy_mlp(agent.actor)
    outputs_per_dim = head_outputs(agent.action_head, agent.num_bins)
    return lambda obs: head_logits(
        mlp(obs).reshape(len(obs), ACTION_DIMS, outputs_per_dim),
        agent.action_head,
        agent.num_bins,
        agent.poisson_temperature,
    )


def sample_action(logits, rng=np.random):
    """One bin index per action dimension, shape (batch, 4), from logits of shape (batch, 4, K). Gumbel-max:
    argmax(logits + Gumbel noise) is a sample of each dimension's Categorical(logits). `rng` is the training stream
    (NumPy's global one) unless evaluation passes its own generator, so evaluating never moves training's numbers."""
    return (logits + rng.gumbel(size=logits.shape)).argmax(-1)


HARD_MASK_PENALTY = 1e9  # "effectively minus infinity": exp() underflows to exactly 0, yet 0 * logit stays finite


def mask_ramp(global_step: int, args: Args) -> float:
    """The warm-up (section 4, Table 1): 0 before --mask-warmup-start, then linearly up to 1 at --mask-warmup-end."""
    if global_step < args.mask_warmup_start:
        return 0.0
    return min(1.0, (global_step - args.mask_warmup_start) / max(1, args.mask_warmup_end - args.mask_warmup_start))


def masked_bins_per_dim(global_step: int, args: Args) -> int:
    """The budget schedule: --mask-budget * K bins per dimension times the warm-up ramp; never all K bins."""
    return min(int(args.mask_budget * args.num_bins * mask_ramp(global_step, args) + 1e-9), args.num_bins - 1)


def prior_mask(prior_logits, num_masked: int):
    """True for the `num_masked` bins of every dimension with the lowest probability under the prior at the state, shape
    (batch, 4, K), from the prior's logits of that shape (NumPy arrays: the masker runs in the rollout, beside the NumPy
    policy). Within a dimension the logits rank the bins as their probabilities do; fewer than K bins go, so the
    prior's most likely bin always stays."""
    return prior_logits.argsort(-1).argsort(-1) < num_masked


def mask_to_logit_offset(mask, args: Args):
    """The additive logit offset that applies a mask before the Categorical is formed: hard or soft."""
    return mask * -(HARD_MASK_PENALTY if args.mask_mode == "hard" else args.soft_mask_penalty)


def compute_gae(rewards, values, next_values, no_bootstrap, dones, gamma, gae_lambda):
    """Generalized advantage estimation over a rollout of shape (steps, envs), on the real reward scale.

    next_values[t] is V of the observation that followed step t (at an episode's end, its final observation);
    it is bootstrapped unless no_bootstrap[t] (a termination, or any episode end with
    --no-bootstrap-truncation); dones[t] (terminated or truncated) cuts the lambda-trace there.
    """
    advantages = np.zeros_like(rewards)
    lastgaelam = 0.0
    for t in reversed(range(len(rewards))):
        delta = rewards[t] + gamma * next_values[t] * (1.0 - no_bootstrap[t]) - values[t]
        lastgaelam = delta + gamma * gae_lambda * (1.0 - dones[t]) * lastgaelam
        advantages[t] = lastgaelam
    return advantages, advantages + values


def normalize_per_minibatch(advantages, minibatch_size: int):
    """CleanRL's per-minibatch advantage normalization for a whole shuffled epoch at once (advantages in minibatch
    order): each minibatch standardized with its own mean and std, in a handful of tensor operations, not per minibatch."""
    per_minibatch = advantages.view(-1, minibatch_size)
    return ((per_minibatch - per_minibatch.mean(1, keepdim=True)) / (per_minibatch.std(1, keepdim=True) + 1e-8)).view(
        -1
    )


def normalize(x, rms: RunningMeanStd):
    return (x - rms.mean) / np.sqrt(rms.var + 1e-8)


def normalize_obs(raw_obs, obs_rms: RunningMeanStd, enabled: bool):
    """Standardized observations, clipped to [-10, 10] as gymnasium/CleanRL do, as float32. The statistics
    are updated once per rollout, after it: the policy acts on, and is then trained on, the same inputs."""
    obs = np.clip(normalize(raw_obs, obs_rms), -10.0, 10.0) if enabled else raw_obs
    return np.asarray(obs, dtype=np.float32)


# metrics.csv's columns, one row per PPO iteration, each with its TensorBoard tag (CleanRL's names) or None;
# training_run fills in iteration, global_step, episodes, the success rates, episodic_return and sps
METRICS = {
    "iteration": None,
    "global_step": None,
    "episodes": None,
    "success_rate": "charts/success_rate",
    "success_rate_last_step": "charts/success_rate_last_step",
    "episodic_return": "charts/episodic_return",
    "policy_entropy": "charts/policy_entropy",
    "effective_bins": "charts/effective_bins",
    "approx_kl": "losses/approx_kl",
    "clipfrac": "losses/clipfrac",
    "explained_variance": "losses/explained_variance",
    "value_loss": "losses/value_loss",
    "policy_loss": "losses/policy_loss",
    "learning_rate": "charts/learning_rate",
    "epochs": None,
    "sps": "charts/SPS",
    "update_seconds": "charts/update_seconds",
    "sampling_entropy": "charts/sampling_entropy",
    "sampling_effective_bins": "charts/sampling_effective_bins",
    "mask_fraction": "charts/mask_fraction",
}


if __name__ == "__main__":
    args = tyro.cli(Args)
    check_args(args)
    # metrics.csv's columns: the arm's, and with --ref-kl-coef the policy's KL from the pretrained one
    metrics = {**METRICS, "ref_kl": "losses/ref_kl"} if args.ref_kl_coef else METRICS
    # checks the flags; the run folder, --resume, config.json, ...
    run = TrainingRun(args, metrics, make_env, masks=True)
    device = run.device
    batch_size = args.num_envs * args.num_steps
    num_iterations = args.total_timesteps // batch_size

    # Seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    # Environment setup
    envs = gym.vector.SyncVectorEnv(
        [make_env(args.env_id, args.seed + i) for i in range(args.num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        copy=False,  # no deep copy of each step's observations: the loop copies them into its buffers itself
    )
    obs_dim = envs.single_observation_space.shape[0]

    agent = Agent(obs_dim, args.num_bins, args.action_head, args.poisson_temperature).to(device)
    bin_values = agent.bin_values.cpu().numpy()
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)  # fused: 30% faster on CPU
    obs_rms = RunningMeanStd(shape=(obs_dim,))
    value_rms = RunningMeanStd(shape=())
    run.load_pretrained(agent, obs_rms)  # --init-from: the pretrained actor and its observation statistics (or nothing)
    # --ref-kl-coef: the pretrained policy, frozen (no gradient, in no optimizer), with its own observation statistics
    reference, reference_obs_rms = None, RunningMeanStd(shape=(obs_dim,))
    if args.ref_kl_coef:
        reference = Agent(obs_dim, args.num_bins, args.action_head, args.poisson_temperature).to(device)
        run.load_pretrained(reference.requires_grad_(False), reference_obs_rms)
    # The prior: the same pretrained policy, frozen (no gradient, in no optimizer), with the observation statistics it
    # was trained with, which stay as they are while the run's own move on: its probabilities at a state never change
    prior = Agent(obs_dim, args.num_bins, args.action_head, args.poisson_temperature).to(device).requires_grad_(False)
    prior_obs_rms = RunningMeanStd(shape=(obs_dim,))
    run.load_pretrained(prior, prior_obs_rms)

    # Rollout storage; next_obs_buf[t] is the observation that followed step t (the final one at an episode's end)
    raw_obs_buf = np.zeros((args.num_steps, args.num_envs, obs_dim))
    obs_buf = np.zeros((args.num_steps, args.num_envs, obs_dim), dtype=np.float32)
    next_obs_buf = np.zeros((args.num_steps, args.num_envs, obs_dim), dtype=np.float32)
    actions_buf = np.zeros((args.num_steps, args.num_envs, ACTION_DIMS), dtype=np.int64)
    rewards = np.zeros((args.num_steps, args.num_envs))
    no_bootstrap = np.zeros((args.num_steps, args.num_envs))  # 1 where V(next observation) is not bootstrapped
    dones = np.zeros((args.num_steps, args.num_envs))
    # each step's mask
    offsets_buf = np.zeros((args.num_steps, args.num_envs, ACTION_DIMS, args.num_bins), dtype=np.float32)

    # Reset, or restore everything a checkpoint holds (each keyword is one of its entries)
    raw_obs, global_step = run.start(
        envs,
        agent=agent,
        optimizer=optimizer,
        obs_rms=obs_rms,
        value_rms=value_rms,
        prior=prior,
        prior_obs_rms=prior_obs_rms,
    )
    next_obs = normalize_obs(raw_obs, obs_rms, args.norm_obs)
    prior_actor = numpy_actor(prior)  # the rollout's copy of the prior, taken once (after a resume restored it)

    def evaluation_policy():
        """The arm's policy as evaluation runs it, with the current weights: (raw observation, greedy, generator) -> action."""
        actor = numpy_actor(agent)

        def act(raw, greedy, rng):
            logits = actor(normalize_obs(raw[None], obs_rms, args.norm_obs))
            # the arm's policy includes its mask: the prior's least likely bins at this state, at the current budget
            mask = prior_mask(
                prior_actor(normalize_obs(raw[None], prior_obs_rms, args.norm_obs)),
                masked_bins_per_dim(global_step, args),
            )
            logits = logits + mask_to_logit_offset(mask, args)
            return bin_values[(logits.argmax(-1) if greedy else sample_action(logits, rng))[0]]

        return act

    def update_minibatch(
        mb_obs, mb_actions, mb_offsets, mb_logprobs, mb_returns, mb_values, mb_advantages, mb_ref_log_probs=None
    ):
        """One PPO gradient step on a minibatch (the clipped surrogate, the value loss, Adam): returns the
        minibatch's losses and log-ratios, detached. It reads only its arguments and the networks, so that --cuda can
        capture it as one CUDA graph (training_run.MinibatchStep); on the CPU it runs as written."""
        log_probs = agent.get_log_probs(mb_obs, mb_offsets)
        newlogprob = action_log_prob(log_probs, mb_actions)
        newvalue = agent.get_value(mb_obs)
        logratio = newlogprob - mb_logprobs
        ratio = logratio.exp()

        # Policy loss
        pg_loss1 = -mb_advantages * ratio
        pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
        pg_loss = torch.max(pg_loss1, pg_loss2).mean()

        # Value loss (on the normalized scale)
        if args.clip_vloss:
            v_loss_unclipped = (newvalue - mb_returns) ** 2
            v_clipped = mb_values + torch.clamp(newvalue - mb_values, -args.clip_coef, args.clip_coef)
            v_loss_clipped = (v_clipped - mb_returns) ** 2
            v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
        else:
            v_loss = 0.5 * ((newvalue - mb_returns) ** 2).mean()

        loss = pg_loss + v_loss * args.vf_coef
        if args.ref_kl_coef:  # the pull toward the frozen pretrained policy (docs/finetuning.md)
            loss = loss + args.ref_kl_coef * reference_kl(log_probs, mb_ref_log_probs).mean()
        if args.ent_coef:  # skipped at 0 (the default): autograd would still differentiate 0 * entropy
            loss = loss - args.ent_coef * dimension_entropy(log_probs).sum(-1).mean()

        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm, foreach=True)
        optimizer.step()
        return torch.stack([pg_loss.detach(), v_loss.detach()]), logratio.detach()

    # the gradient step as written, compiled (--compile) or as a CUDA graph (--cuda)
    ppo_step = run.minibatch_step(update_minibatch, optimizer)

    for iteration in run.iterations():
        agent.actor.requires_grad_(iteration > args.critic_warmup_iterations)  # no actor gradient in the critic warm-up
        if args.anneal_lr:
            frac = 1.0 - (iteration - 1.0) / num_iterations
            optimizer.param_groups[0]["lr"] = frac * args.learning_rate

        # Rollout: only the actor runs per step, in NumPy (a copy taken after the last update); values and log-probs
        # are computed once for the whole batch, in torch, below.
        actor = numpy_actor(agent)
        mask_counts = np.zeros((ACTION_DIMS, args.num_bins), dtype=np.int64)
        for step in range(args.num_steps):
            global_step += args.num_envs
            raw_obs_buf[step] = raw_obs
            obs_buf[step] = next_obs
            # the prior's least likely bins at this state, for every environment, stored to be re-applied in the update
            mask = prior_mask(
                prior_actor(normalize_obs(raw_obs, prior_obs_rms, args.norm_obs)),
                masked_bins_per_dim(global_step, args),
            )
            mask_counts += mask.sum(0)
            offsets_buf[step] = logit_offset = mask_to_logit_offset(mask, args)
            action = sample_action(actor(next_obs) + logit_offset)
            actions_buf[step] = action

            raw_obs, reward, terminated, truncated, infos = envs.step(bin_values[action])
            next_obs = normalize_obs(raw_obs, obs_rms, args.norm_obs)
            next_obs_buf[step] = next_obs
            rewards[step] = reward
            done = np.logical_or(terminated, truncated)
            no_bootstrap[step] = terminated if args.bootstrap_truncation else done
            dones[step] = done
            if done.any():  # the vector env has reset these envs: what followed the step is the episode's final obs
                for i in np.flatnonzero(done):
                    next_obs_buf[step, i] = normalize_obs(infos["final_obs"][i], obs_rms, args.norm_obs)
                run.record_episodes(global_step, done, infos)

        if args.norm_obs:  # the next rollout is normalized with statistics that include this one
            obs_rms.update(raw_obs_buf.reshape(-1, obs_dim))
            next_obs = normalize_obs(raw_obs, obs_rms, args.norm_obs)

        # Values (de-normalized to the real scale), log-probs and entropies of the whole rollout in one pass
        b_obs = torch.as_tensor(obs_buf.reshape(-1, obs_dim), device=device)
        b_actions = torch.as_tensor(actions_buf.reshape(-1, ACTION_DIMS), device=device)
        b_offsets = torch.as_tensor(offsets_buf.reshape(-1, ACTION_DIMS, args.num_bins), device=device)
        v_mean, v_std = (float(value_rms.mean), float(np.sqrt(value_rms.var + 1e-8))) if args.norm_value else (0.0, 1.0)
        with torch.no_grad():
            b_log_probs = agent.get_log_probs(b_obs, b_offsets)
            # the policy's own entropy (unmasked, comparable to vanilla's) and that of the masked distribution that sampled
            b_logprobs, b_dim_entropy = (
                action_log_prob(b_log_probs, b_actions),
                dimension_entropy(agent.get_log_probs(b_obs, 0.0)),
            )
            b_sampling_dim_entropy = dimension_entropy(b_log_probs)
            values = (agent.get_value(b_obs).cpu().numpy() * v_std + v_mean).astype(np.float64).reshape(rewards.shape)
            next_values = (
                agent.get_value(torch.as_tensor(next_obs_buf, device=device)).cpu().numpy() * v_std + v_mean
            ).astype(np.float64)
        if args.ref_kl_coef:  # the pretrained policy at the rollout's states, read through its own statistics
            ref_obs = normalize_obs(raw_obs_buf.reshape(-1, obs_dim), reference_obs_rms, args.norm_obs)
            ref_logits = reference.get_logits(torch.as_tensor(ref_obs, dtype=torch.float32, device=device))
            b_ref_log_probs = ref_logits.log_softmax(-1)
        advantages, returns = compute_gae(
            rewards, values, next_values, no_bootstrap, dones, args.gamma, args.gae_lambda
        )
        b_advantages = torch.as_tensor(advantages.reshape(-1), dtype=torch.float32, device=device)
        real_returns, real_values = returns.reshape(-1), values.reshape(-1)

        # The critic regresses standardized returns (section 3, "Value normalization"): update the statistics with
        # this batch's targets, then express targets and the old predictions on the new scale.
        if args.norm_value:
            value_rms.update(real_returns)
            v_mean, v_std = float(value_rms.mean), float(np.sqrt(value_rms.var + 1e-8))
        b_returns = torch.as_tensor((real_returns - v_mean) / v_std, dtype=torch.float32, device=device)
        b_values = torch.as_tensor((real_values - v_mean) / v_std, dtype=torch.float32, device=device)

        # Optimizing the policy and value network. Each epoch shuffles the batch once and cuts it into minibatch
        # views; per-minibatch advantage normalization and the clip statistics are computed for the whole epoch at
        # once (the same numbers, fewer small tensor operations: at minibatch 64 each costs more than its math).
        b_inds = np.arange(batch_size)
        clipfracs, loss_terms, epochs_run = [], [], 0
        for _ in range(args.update_epochs):
            np.random.shuffle(b_inds)
            inds = torch.as_tensor(b_inds, device=device)
            e_advantages = b_advantages[inds]
            if args.norm_adv:
                e_advantages = normalize_per_minibatch(e_advantages, args.minibatch_size)
            epoch_batch = [t[inds] for t in (b_obs, b_actions, b_offsets, b_logprobs, b_returns, b_values)] + [
                e_advantages
            ]
            if args.ref_kl_coef:
                epoch_batch.append(b_ref_log_probs[inds])
            logratios = []
            for minibatch in zip(*(t.split(args.minibatch_size) for t in epoch_batch)):
                losses, logratio = ppo_step(*minibatch)
                loss_terms.append(losses)
                logratios.append(logratio)
            epochs_run += 1
            with torch.no_grad():
                # calculate approx_kl http://joschu.net/blog/kl-approx.html (of the epoch's last minibatch, as CleanRL)
                approx_kl = ((logratios[-1].exp() - 1) - logratios[-1]).mean()
                clipfracs.append(((torch.stack(logratios).exp() - 1.0).abs() > args.clip_coef).float().mean(1))
            if args.target_kl is not None and approx_kl > args.target_kl:
                break
        loss_sums = torch.stack(loss_terms).sum(0).cpu()

        num_updates = epochs_run * (batch_size // args.minibatch_size)
        var_y = np.var(real_returns)
        explained_var = np.nan if var_y == 0 else 1 - np.var(real_returns - real_values) / var_y
        row = {
            "policy_entropy": b_dim_entropy.sum(-1).mean().item(),
            "effective_bins": b_dim_entropy.exp().mean().item(),
            "approx_kl": approx_kl.item(),
            "clipfrac": torch.cat(clipfracs).mean().item(),
            "explained_variance": explained_var,
            "value_loss": loss_sums[1].item() / num_updates,
            "policy_loss": loss_sums[0].item() / num_updates,
            "learning_rate": optimizer.param_groups[0]["lr"],
            "epochs": epochs_run,
            "sampling_entropy": b_sampling_dim_entropy.sum(-1).mean().item(),
            "sampling_effective_bins": b_sampling_dim_entropy.exp().mean().item(),
            "mask_fraction": mask_counts.sum() / (batch_size * ACTION_DIMS * args.num_bins),
        }
        if args.ref_kl_coef:  # how far the policy has moved from the pretrained one, at this rollout's states
            row["ref_kl"] = reference_kl(b_log_probs, b_ref_log_probs).mean().item()
        # metrics.csv and TensorBoard, evaluation when due, the progress line, a checkpoint when due
        run.end_iteration(global_step, row, evaluation_policy, losses=loss_sums, mask_counts=mask_counts)

    run.finish()
