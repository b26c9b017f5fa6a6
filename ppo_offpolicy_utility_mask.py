# Discretized PPO on MetaWorld with learned action-token pruning whose action-utility critic is learned OFF-POLICY:
# a "beyond the paper" arm for "Action-Token Pruning for Sample-Efficient RL Fine-Tuning of Robot Policies", whose
# sections 6-7 name "off-policy or contrastive utility estimation" as the route to a learned selector. U(s)[d, :] is
# A_d(s, :), the per-dimension advantage heads of a branching dueling Q-network (Tavakoli et al. 2018, which the paper
# cites for its factored policy), Q(s, a) = V_q(s) + sum_d (A_d(s, a_d) - mean_k A_d(s, k)), trained by n-step double
# Q-learning on a replay buffer of the last --replay-rollouts rollouts with a target network; --utility-target success
# makes U(s)[d, k] the logit of a classifier of the episode's success from (s, a_d = k) instead. The masker, its modes,
# the budget schedule, the stored masks, the diagnostics and the outputs are the utility arm's, unchanged.
# A copy of ppo_utility_mask.py that differs only in how U is learned:
# `diff ppo_utility_mask.py ppo_offpolicy_utility_mask.py`.
import copy
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
    mask_mode: Literal["hard", "soft", "gumbel", "boost"] = "soft"
    """how the utility critic shapes the sampling distribution (sections 3 and 6, Table 4).
    hard: the lowest-utility bins (see --utility-threshold) get an effectively minus-infinity logit offset and are
    never sampled; soft (the paper's default): they get the finite penalty --soft-mask-penalty instead;
    gumbel (a directed, stochastic mask): exactly the budgeted number of bins, drawn without replacement by
    Gumbel-top-k with probabilities proportional to exp(-alpha * utility), get the soft penalty (alpha 0 is exactly the
    random arm); boost: nothing is removed, the logits get + beta * utility (beta ramped up over the warm-up)"""
    soft_mask_penalty: float = 5.0
    """the logit penalty of a soft-masked bin (the paper gives no value: 5 leaves a masked bin e^-5, about 0.7%,
    of its probability, so it is mostly removed yet still sampled now and then, and its logit still learns)"""

    # The action-utility critic, learned off-policy (paper sections 6-7 "off-policy or contrastive"; Tavakoli et al. 2018)
    utility_target: Literal["td", "success"] = "td"
    """what U learns. td: U(s)[d, :] = A_d(s, :), the advantage heads of the branching dueling Q-network
    Q(s, a) = V_q(s) + sum_d (A_d(s, a_d) - mean_k A_d(s, k)), trained by n-step double Q-learning on the replay buffer.
    success (contrastive): U(s)[d, k] is the logit of a classifier of whether the episode succeeds (at any step,
    MetaWorld's protocol) from (s, a_d = k), trained with binary cross-entropy on replayed transitions of finished
    episodes, half of each minibatch from successful and half from failed ones (no update until the buffer holds
    both: a one-class buffer teaches only how often each bin was taken)"""
    q_aggregation: Literal["sum", "bdq"] = "sum"
    """with --utility-target td, how the branches make Q. sum: one joint Q(s, a) = V_q(s) + sum_d (A_d(s, a_d) -
    mean_k A_d(s, k)), the additive credit of the utility arm (section 3) over joint actions, its target bootstrapped
    with the sum of the branches' maxima. bdq: Tavakoli et al.'s (2018) branching dueling Q-network as published:
    each branch its own Q_d(s, a_d) = V_q(s) + A_d(s, a_d) - mean_k A_d(s, k), one common target bootstrapped with the
    mean of the branches' maxima, the loss averaged over branches"""
    q_baseline: Literal["learned", "ppo"] = "ppo"
    """with --utility-target td, the state value inside Q. learned: the network's own V_q branch (Tavakoli et al.;
    the default until 2026-12-06). ppo: the PPO critic's V(s), fixed inside the TD update, so the advantage heads
    learn Q - V against the baseline PPO fits on every rollout. V is the behaviour policy's value, not the greedy
    one's: the bootstrap mixes the two. Chosen by short runs (button-press, --no-norm-obs, 300k steps, seeds 101-103,
    not the evaluation seeds) on advantage_agreement, the critic's held-out rank correlation with the GAE advantages,
    averaged over 150k-300k steps (masks acting), mean +- s.e. over the 3 seeds: ppo +0.011 +- 0.007, learned -0.091
    +- 0.022 (below zero on every seed: it anti-ranks once its masks act), learned with --q-aggregation bdq -0.015 +-
    0.039, learned with --unmasked-fraction 0.1 -0.103 +- 0.024, ppo with 0.1 +0.001 +- 0.007. Every number is small:
    none of these critics predicts much of a rollout's advantages; ppo's is the highest mean and the learned baseline
    the clearest anti-ranking. In the off-policy issue's Monte Carlo check a fresh critic anchored this way also ranked
    tokens best (0.35, double Q alone 0.21)"""
    unmasked_fraction: float = 0.0
    """an exploration floor: on this share of rollout steps (per environment, drawn at random) no mask is applied, so
    the bins the critic has written off still get the data that could correct it (stale heads otherwise mask away
    their own correction); 0 (the default) masks every step, as the on-policy arm does"""
    replay_rollouts: int = 30
    """R: the replay buffer holds the transitions of the last R rollouts (R x 2048 by default), the oldest replaced
    first; raw observations (float32), normalized with the current statistics when replayed. Defaults here were chosen
    on button-press, seed 1, 100k steps, --mask-budget 0 (the same PPO run for every setting, so the critics learn from
    identical data), by the Spearman correlation between sum_d of the taken bins' centered U and the GAE advantage on
    each fresh rollout before the critic trains on it, averaged over 50k-100k steps: R 30: 0.158, R 10: 0.145 (paired
    difference +0.013 +- 0.004); the on-policy utility arm's critic: 0.128. 30 rollouts take 23 MB of the checkpoint"""
    utility_n_step: int = 3
    """n of the n-step TD target sum_{j<n} gamma^j r_{t+j} + gamma^n Q_target(s_{t+n}, greedy a): an episode's end
    cuts the sum (bootstrapped from its final observation only if --bootstrap-truncation, as in PPO's GAE), and so
    does the rollout's end (at most n - 1 transitions per rollout get a shorter sum). The sum is not corrected for the
    replayed rollouts' older, masked behaviour policies. Measured at R 10 (see --replay-rollouts): n 3: 0.145; n 1:
    0.001 (one-step targets had not carried the reward into the advantages by 100k steps); n 10: ahead before 50k
    steps (+0.021 +- 0.006), behind after, when masks act (0.116, -0.029 +- 0.007)"""
    utility_updates_per_iteration: int = 128
    """gradient steps of the utility critic per PPO iteration, after PPO's update, each on a minibatch drawn
    uniformly from the replay buffer (128 x 256: each transition is replayed about 16 times while it is stored).
    Measured at R 10: 256 was ahead before 50k steps (+0.018 +- 0.004) and level after (-0.006 +- 0.005), at about
    0.35 s more per iteration (about 2.7 ms per step of 256 on one core)"""
    utility_minibatch_size: int = 256
    """the minibatch size of the utility critic's gradient steps (256 costs 1.5x a step of 64 here, for 4x the data)"""
    target_network_tau: float = 0.005
    """td: the target network moves this fraction of the way to the online network every --target-network-period
    gradient steps: Polyak averaging, a time constant of 200 steps (about 1.5 iterations); 1 with a period > 1 is
    DQN's periodic copy"""
    target_network_period: int = 1
    """td: gradient steps between target-network updates"""
    utility_threshold: float = 0.25
    """hard/soft modes (Table 3; the paper does not define it). Each dimension's utilities are standardized for the
    state so that the dimension's mean bin is at 0 and its top bin at 1: (U - mean) / (max - mean). A bin is eligible
    for removal only if this lies below -threshold (it falls short of the mean by more than `threshold` times the
    best bin's lead), and the budget caps how many of the lowest eligible bins go. So 0.5 removes fewer bins than
    0.25. Measured on a button-press critic at 60k steps: 29% of bins eligible at 0.25 (about the 25% budget) and 14%
    at 0.5. A z-score reading ((U - mean) / std below -threshold) was inert there: 39% and 30% eligible, both over
    the budget, so both thresholds removed exactly the budget. 0 turns the test off: exactly the budget goes, as
    in the random arm (the top bin still stays: it ranks last), for a utility-vs-random comparison at equal spend"""
    gumbel_alpha: float = 4.0
    """gumbel mode: sharpness of the preference for removing low-utility bins (0: uniform, the random arm)"""
    boost_beta: float = 2.0
    """boost mode: the weight of the additive logit bonus toward high-utility bins, ramped over the mask warm-up"""
    rank_states: int = 256
    """states of each batch on which the critic's and the policy's per-bin rankings are compared"""

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
    if (
        min(args.replay_rollouts, args.utility_n_step, args.utility_updates_per_iteration, args.target_network_period)
        < 1
    ):
        fail(
            "--replay-rollouts, --utility-n-step, --utility-updates-per-iteration and --target-network-period must be >= 1"
        )
    if args.utility_minibatch_size < 2:  # success mode draws half of each minibatch from each outcome
        fail(f"--utility-minibatch-size must be at least 2, got {args.utility_minibatch_size}")
    if args.utility_n_step > args.num_steps:
        fail(f"--utility-n-step {args.utility_n_step} is longer than a rollout (--num-steps {args.num_steps})")
    if not 0.0 <= args.unmasked_fraction <= 1.0:
        fail(f"--unmasked-fraction must be in [0, 1], got {args.unmasked_fraction}")
    if not 0.0 < args.target_network_tau <= 1.0:
        fail(f"--target-network-tau must be in (0, 1], got {args.target_network_tau}")


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


def mask_to_logit_offset(mask, args: Args):
    """The additive logit offset that applies a mask before the Categorical is formed: hard or soft."""
    return mask * -(HARD_MASK_PENALTY if args.mask_mode == "hard" else args.soft_mask_penalty)


class UtilityCritic(nn.Module):
    """The action-utility critic U(s) in R^(4 x K), learned off-policy: a branching dueling Q-network (Tavakoli et al.
    2018: a shared trunk, one state-value branch and one advantage branch per action dimension), whose advantage heads
    are U: U(s)[d, :] = A_d(s, :) (forward). `net` maps a state to the 4 x K advantages alone, so the rollout's NumPy
    copy scores a state at exactly the utility arm's cost; V_q(s) is one more linear layer on the trunk, used only by
    TD (value_and_advantages). Tavakoli et al. give each branch its own hidden layer; here the branches are the last
    linear layers of the utility arm's 2x64 tanh MLP. The advantage layer starts near zero, like the actor's: no bin
    looks better than another until learned."""

    def __init__(self, obs_dim: int, num_bins: int):
        super().__init__()
        self.num_bins = num_bins
        self.net = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, ACTION_DIMS * num_bins), std=0.01),
        )
        self.state_value = layer_init(nn.Linear(64, 1), std=1.0)
        # the unit of its outputs (TD: the value normalizer's std at the last update; checkpointed with the weights)
        self.register_buffer("output_scale", torch.ones(()))

    def forward(self, x):
        return self.net(x).view(-1, ACTION_DIMS, self.num_bins)

    @torch.no_grad()
    def set_output_scale(self, scale: float):
        """Express the outputs in units of `scale` without changing what they mean: PopArt's preservation of outputs
        (van Hasselt et al., 2016) for a scale without a shift. The TD targets are rewards divided by the value
        normalizer's current std, which grows ~30x over training; without this, every change of the std would leave
        the network predicting on the old scale while its targets, and the replayed transitions of every earlier
        iteration, move to the new one. Multiplying the value and advantage layers by old / new keeps Q in real units
        (and U's ranking, which the masker reads) exactly as it was."""
        ratio = float(self.output_scale) / scale
        for layer in (self.net[-1], self.state_value):
            layer.weight.mul_(ratio)
            layer.bias.mul_(ratio)
        self.output_scale.fill_(scale)

    def value_and_advantages(self, x):
        """V_q(s), shape (batch,), and the advantage heads A(s), shape (batch, 4, K), from one pass of the trunk."""
        hidden = self.net[:-1](x)
        return self.state_value(hidden).squeeze(-1), self.net[-1](hidden).view(-1, ACTION_DIMS, self.num_bins)


def dueling_q(value, advantages, actions, aggregation: str = "sum"):
    """Q(s, a) = V_q(s) + sum_d (A_d(s, a_d) - mean_k A_d(s, k)) for joint actions of shape (batch, 4): Tavakoli et
    al.'s dueling aggregation of each branch, summed over the 4 branches as the utility arm's additive credit sums U
    over dimensions (section 3). Subtracting each branch's mean bin makes V_q and the A_d identifiable; the masker
    centers U the same way, so it reads exactly the advantages that Q uses."""
    centered = advantages - advantages.mean(-1, keepdim=True)
    taken = centered.gather(-1, actions.unsqueeze(-1)).squeeze(-1)  # (batch, 4)
    if aggregation == "bdq":  # each branch's own Q_d(s, a_d), shape (batch, 4) (--q-aggregation bdq)
        return value.unsqueeze(-1) + taken
    return value + taken.sum(-1)


def td_targets(
    reward_sums,
    bootstrap_discounts,
    next_online_advantages,
    next_target_value,
    next_target_advantages,
    aggregation: str = "sum",
):
    """The n-step double Q-learning target r^(n) + gamma^m Q_target(s', a*) with a* = argmax_a Q_online(s', a): the
    online network picks the joint action and the target network evaluates it, which curbs the overestimation of a max
    over noisy estimates (van Hasselt et al. 2016; Tavakoli et al. 2018 train their branching networks this way). The
    argmax over all K^4 joint actions factorizes: V_q and the bin means do not depend on a, so a*_d = argmax_k
    A_d(s', k) in each dimension alone, and max_a Q(s', a) = V_q(s') + sum_d max_k (A_d(s', k) - mean_k A_d(s', k))."""
    greedy = next_online_advantages.argmax(-1)
    bootstrap = dueling_q(next_target_value, next_target_advantages, greedy, aggregation)
    if aggregation == "bdq":  # Tavakoli et al.: one target for every branch, from the mean of the branches' maxima
        bootstrap = bootstrap.mean(-1)
    return reward_sums + bootstrap_discounts * bootstrap


def success_loss(utility, actions, successes):
    """--utility-target success: the binary cross-entropy of each dimension's taken-bin logit U(s)[d, a_d] against
    whether the transition's episode succeeded (1) or failed (0), averaged over the 4 dimensions. Each dimension is its
    own classifier of (s, a_d), as the issue defines it; only the taken bins get gradient, as in the utility arm."""
    taken = utility.gather(-1, actions.unsqueeze(-1)).squeeze(-1)  # U(s)[d, a_d], shape (batch, 4)
    return nn.functional.binary_cross_entropy_with_logits(taken, successes.unsqueeze(-1).expand_as(taken))


def n_step_returns(rewards, no_bootstrap, dones, gamma: float, n: int):
    """The pieces of the n-step TD target of every step t of a rollout of shape (steps, envs), on the real reward
    scale: the discounted reward sum sum_{j<m} gamma^j r_{t+j}; the step t + m - 1 whose next observation (the final
    one at an episode's end) is bootstrapped; and the bootstrap discount gamma^m, 0 where that step terminated. m is n,
    or less where the episode ends first (dones[t + j] cuts the sum after r_{t+j}: the next episode's rewards never
    enter) or where the rollout ends (a window never reaches into the next rollout). no_bootstrap and dones are GAE's:
    under --no-bootstrap-truncation no_bootstrap is dones, so a truncation is terminal here as it is for PPO."""
    steps = len(rewards)
    reward_sums = np.zeros(rewards.shape)
    discounts = np.ones(rewards.shape)  # gamma to the number of rewards summed so far
    bootstrap_steps = np.repeat(np.arange(steps)[:, None], rewards.shape[1], 1)
    running = np.ones(rewards.shape, dtype=bool)  # windows that have met neither an episode's end nor the rollout's
    for j in range(n):
        w = slice(0, steps - j)  # the windows t whose step t + j lies in the rollout
        adding = running[w]
        reward_sums[w] += np.where(adding, discounts[w] * rewards[j:], 0.0)
        discounts[w] = np.where(adding, discounts[w] * gamma, discounts[w])
        bootstrap_steps[w] = np.where(adding, np.arange(j, steps)[:, None], bootstrap_steps[w])
        running[w] &= dones[j:] == 0
    terminated = np.take_along_axis(no_bootstrap, bootstrap_steps, 0)
    return reward_sums, bootstrap_steps, discounts * (1.0 - terminated)


def label_episode_outcomes(outcomes, slot: int, dones, successes):
    """--utility-target success: give every replayed transition its episode's outcome once the episode has ended.
    outcomes, shape (R, steps, envs), is NaN while a transition's episode is in progress; `slot` receives this rollout
    (the rollout it held is forgotten); successes are the outcomes of the episodes that ended in it, in
    np.nonzero(dones)'s order (by step, then by env: the order the rollout appended them to rollout_successes). An
    environment's unlabelled transitions up to an episode's end are exactly that episode's, whichever earlier rollouts
    it began in (slots not yet filled get labels too, unread: only filled slots are replayed, and filling resets them)."""
    outcomes[slot] = np.nan
    for t, i, success in zip(*np.nonzero(dones), successes):
        unlabelled = np.isnan(outcomes[:, :, i])
        unlabelled[slot, t + 1 :] = False  # this rollout's later steps belong to the next episode
        outcomes[:, :, i][unlabelled] = success


def utility_logit_offset(utility, global_step: int, args: Args, rng=np.random):
    """The masker (section 3, "Token masking"; section 6): the logit offset for the current --mask-mode at this step
    of the warm-up, and the mask of removed bins, from utilities of shape (batch, 4, K) (NumPy arrays: the masker
    runs in the rollout, beside the NumPy policy). The top-utility bin of a dimension is never removed in hard/soft
    mode. Boost removes nothing; its weight follows the same warm-up as every mask (0 before it, beta after)."""
    centered = utility - utility.mean(-1, keepdims=True)  # only the ordering within a dimension is identified
    if args.mask_mode == "boost":
        return mask_ramp(global_step, args) * args.boost_beta * centered, np.zeros(centered.shape, dtype=bool)
    num_masked = masked_bins_per_dim(global_step, args)
    if not num_masked:
        mask = np.zeros(centered.shape, dtype=bool)
    elif args.mask_mode == "gumbel":
        # Gumbel-top-k: the k largest of (-alpha * u + Gumbel noise) are k draws without replacement with p ~ exp(-alpha u)
        scores = -args.gumbel_alpha * centered + rng.gumbel(size=centered.shape)
        mask = (-scores).argsort(-1).argsort(-1) < num_masked
    else:
        mask = centered.argsort(-1).argsort(-1) < num_masked  # the num_masked lowest utilities of each dimension...
        if args.utility_threshold > 0:
            # ...that are eligible (see --utility-threshold). The top bin never is: its centered utility is the
            # dimension's maximum, >= 0 >= -threshold * maximum (and without the test it ranks last of K > num_masked).
            mask &= centered < -args.utility_threshold * centered.max(-1, keepdims=True)
    return mask_to_logit_offset(mask, args), mask


def rank_agreement(utility, logits, sampleable=None):
    """Mean over states and dimensions of the Spearman correlation between U(s)[d, :] and the policy's log-probs over
    the bins (section 5.2 reports about 0.31). Log-softmax is monotone in the logits, so their ranks are the same.
    With `sampleable` (bool, shape of utility), over those bins only, ranked among themselves: the critic's agreement
    with the policy where the policy can act on it, without the masked bins, whose low utility and (once masked,
    untrained) low logits agree by construction."""
    if sampleable is None:
        sampleable = torch.ones_like(utility, dtype=torch.bool)
    weight = sampleable.float()

    def centered_ranks(x):  # masked bins ranked last (infinity), then left out by the weight
        ranks = torch.where(sampleable, x, torch.inf).argsort(-1).argsort(-1).float()
        return (ranks - (ranks * weight).sum(-1, keepdim=True) / weight.sum(-1, keepdim=True)) * weight

    ranks_u, ranks_p = centered_ranks(utility), centered_ranks(logits)
    return ((ranks_u * ranks_p).sum(-1) / (ranks_u.norm(dim=-1) * ranks_p.norm(dim=-1))).mean()


def spearman(x, y):
    """Spearman's rank correlation of two vectors (continuous values: ties are negligible)."""
    rx, ry = (v.argsort().argsort().float() for v in (x, y))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return (rx * ry).sum() / (rx.norm() * ry.norm())


def compute_gae(rewards, values, next_values, terminations, dones, gamma, gae_lambda):
    """Generalized advantage estimation over a rollout of shape (steps, envs), on the real reward scale.

    next_values[t] is V of the observation that followed step t (at an episode's end, its final observation);
    it is bootstrapped unless step t terminated; dones[t] (terminated or truncated) cuts the lambda-trace there.
    """
    advantages = np.zeros_like(rewards)
    lastgaelam = 0.0
    for t in reversed(range(len(rewards))):
        delta = rewards[t] + gamma * next_values[t] * (1.0 - terminations[t]) - values[t]
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
    "utility_loss": "losses/utility_loss",
    "rank_agreement": "charts/rank_agreement",
    "rank_agreement_unmasked": "charts/rank_agreement_unmasked",
    "advantage_agreement": "charts/advantage_agreement",
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
    utility_critic = UtilityCritic(obs_dim, args.num_bins).to(device)
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)  # fused: 30% faster on CPU
    # The utility critic's own Adam (the learning rate and its annealing are PPO's, as for the utility arm's critic),
    # so PPO's optimizer and update are exactly vanilla's; the target network is a frozen copy moved by Polyak steps.
    utility_optimizer = optim.Adam(utility_critic.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)
    target_critic = copy.deepcopy(utility_critic).requires_grad_(False)
    # The replay buffer's own random numbers: the rollout and PPO's update draw theirs exactly as in the utility arm
    # (with nothing masked, --mask-budget 0, PPO runs exactly as there, whatever the utility critic does).
    replay_rng = np.random.default_rng(args.seed)
    floor_rng = np.random.default_rng(args.seed + 20_000)  # --unmasked-fraction's draws, apart from training's
    obs_rms = RunningMeanStd(shape=(obs_dim,))
    value_rms = RunningMeanStd(shape=())
    run.load_pretrained(agent, obs_rms)  # --init-from: the pretrained actor and its observation statistics (or nothing)
    # --ref-kl-coef: the pretrained policy, frozen (no gradient, in no optimizer), with its own observation statistics
    reference, reference_obs_rms = None, RunningMeanStd(shape=(obs_dim,))
    if args.ref_kl_coef:
        reference = Agent(obs_dim, args.num_bins, args.action_head, args.poisson_temperature).to(device)
        run.load_pretrained(reference.requires_grad_(False), reference_obs_rms)

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
    raw_next_obs_buf = np.zeros((args.num_steps, args.num_envs, obs_dim))  # next_obs_buf before normalization

    # The replay buffer: the last R rollouts, slot (iteration - 1) % R, each transition (in a rollout's step-then-env
    # order) with the pieces of its n-step target (n_step_returns) and, for --utility-target success, its episode's
    # outcome. Observations are stored raw and normalized with the current statistics when replayed, so the critic
    # always learns on inputs normalized as the masker's next calls will normalize them (a stored normalized one would
    # be stale by up to R rollouts of statistics); float32 is the networks' precision and halves the checkpoint.
    replay_buffer = {
        "obs": np.zeros((args.replay_rollouts, batch_size, obs_dim), dtype=np.float32),
        "actions": np.zeros((args.replay_rollouts, batch_size, ACTION_DIMS), dtype=np.int64),
        "reward_sums": np.zeros((args.replay_rollouts, batch_size)),
        "bootstrap_obs": np.zeros((args.replay_rollouts, batch_size, obs_dim), dtype=np.float32),
        "bootstrap_discounts": np.zeros((args.replay_rollouts, batch_size)),
        "episode_success": np.full((args.replay_rollouts, args.num_steps, args.num_envs), np.nan),
    }

    # Reset, or restore everything a checkpoint holds (each keyword is one of its entries)
    raw_obs, global_step = run.start(
        envs,
        agent=agent,
        utility_critic=utility_critic,
        optimizer=optimizer,
        obs_rms=obs_rms,
        value_rms=value_rms,
        utility_optimizer=utility_optimizer,
        target_critic=target_critic,
        replay_buffer=replay_buffer,
        replay_rng=replay_rng,
        floor_rng=floor_rng,
    )
    next_obs = normalize_obs(raw_obs, obs_rms, args.norm_obs)

    def evaluation_policy():
        """The arm's policy as evaluation runs it, with the current weights: (raw observation, greedy, generator) -> action."""
        actor, utility = numpy_actor(agent), numpy_mlp(utility_critic.net)

        def act(raw, greedy, rng):
            x = normalize_obs(raw[None], obs_rms, args.norm_obs)
            # the arm's policy includes its masker, at the current budget
            offset, _ = utility_logit_offset(utility(x).reshape(1, ACTION_DIMS, args.num_bins), global_step, args, rng)
            logits = actor(x) + offset
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

    def update_utility_critic(mb_obs, mb_actions, *mb_targets_from):
        """One gradient step of the utility critic on a replayed minibatch: (TD targets from the rewards, bootstrap
        observations and discounts, and under --q-baseline ppo the PPO critic's values at both ends) or (the episodes'
        outcomes). Returns its loss, detached. Like update_minibatch, it reads only its arguments and the networks
        (the target network moves in place), so --cuda can capture it as one CUDA graph."""
        if args.utility_target == "td":
            mb_reward_sums, mb_bootstrap_obs, mb_bootstrap_discounts, *mb_baselines = mb_targets_from
            with torch.no_grad():
                next_value, next_advantages = target_critic.value_and_advantages(mb_bootstrap_obs)
                if args.q_baseline == "ppo":
                    next_value = mb_baselines[1]
                targets = td_targets(
                    mb_reward_sums,
                    mb_bootstrap_discounts,
                    utility_critic(mb_bootstrap_obs),
                    next_value,
                    next_advantages,
                    args.q_aggregation,
                )
            value, advantages = utility_critic.value_and_advantages(mb_obs)
            if args.q_baseline == "ppo":
                value = mb_baselines[0]
            q = dueling_q(value, advantages, mb_actions, args.q_aggregation)
            # Huber (DQN's loss): quadratic for the usual TD errors (well under 1 on this scale), linear for a rare
            # large one (early on, or while the std moves), so no single transition dominates a step; under bdq
            # every branch regresses the common target and the loss is their mean
            u_loss = nn.functional.huber_loss(q, targets if q.dim() == 1 else targets.unsqueeze(-1).expand_as(q))
        else:
            u_loss = success_loss(utility_critic(mb_obs), mb_actions, mb_targets_from[0])
        utility_optimizer.zero_grad()
        u_loss.backward()
        nn.utils.clip_grad_norm_(utility_critic.parameters(), args.max_grad_norm, foreach=True)
        utility_optimizer.step()
        return (u_loss.detach(),)

    utility_step = run.minibatch_step(update_utility_critic, utility_optimizer)

    for iteration in run.iterations():
        agent.actor.requires_grad_(iteration > args.critic_warmup_iterations)  # no actor gradient in the critic warm-up
        if args.anneal_lr:
            frac = 1.0 - (iteration - 1.0) / num_iterations
            optimizer.param_groups[0]["lr"] = frac * args.learning_rate
            utility_optimizer.param_groups[0]["lr"] = frac * args.learning_rate

        # Rollout: only the actor runs per step, in NumPy (a copy taken after the last update); values and log-probs
        # are computed once for the whole batch, in torch, below.
        actor, utility = numpy_actor(agent), numpy_mlp(utility_critic.net)
        mask_counts = np.zeros((ACTION_DIMS, args.num_bins), dtype=np.int64)
        rollout_successes = []  # the outcomes of the episodes that end in this rollout, in order (success target)
        for step in range(args.num_steps):
            global_step += args.num_envs
            raw_obs_buf[step] = raw_obs
            obs_buf[step] = next_obs
            # the masker scores this state with U and prunes; the mask is stored to be re-applied in the update
            logit_offset, mask = utility_logit_offset(
                utility(next_obs).reshape(-1, ACTION_DIMS, args.num_bins), global_step, args
            )
            if args.unmasked_fraction:  # the exploration floor: these environments act unmasked at this step
                floor = (floor_rng.random(args.num_envs) < args.unmasked_fraction)[:, None, None]
                logit_offset, mask = np.where(floor, 0.0, logit_offset), mask & ~floor
            mask_counts += mask.sum(0)
            offsets_buf[step] = logit_offset
            action = sample_action(actor(next_obs) + logit_offset)
            actions_buf[step] = action

            raw_obs, reward, terminated, truncated, infos = envs.step(bin_values[action])
            next_obs = normalize_obs(raw_obs, obs_rms, args.norm_obs)
            next_obs_buf[step] = next_obs
            raw_next_obs_buf[step] = raw_obs
            rewards[step] = reward
            done = np.logical_or(terminated, truncated)
            no_bootstrap[step] = terminated if args.bootstrap_truncation else done
            dones[step] = done
            if done.any():  # the vector env has reset these envs: what followed the step is the episode's final obs
                for i in np.flatnonzero(done):
                    next_obs_buf[step, i] = normalize_obs(infos["final_obs"][i], obs_rms, args.norm_obs)
                    raw_next_obs_buf[step, i] = infos["final_obs"][i]
                    rollout_successes.append(float(infos["final_info"]["episode_success"][i]))
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
        with torch.no_grad():
            # The critic's held-out validity: does sum_d of the taken bins' centered U rank this rollout's transitions
            # as their GAE advantages do? Computed before the critic trains on the rollout (its update follows PPO's):
            # the criterion the replay defaults were chosen by (--replay-rollouts), now a metrics.csv column
            utility = utility_critic(b_obs)
            taken = (utility - utility.mean(-1, keepdim=True)).gather(-1, b_actions.unsqueeze(-1)).sum((-2, -1))
            advantage_agreement = spearman(taken, b_advantages).item()

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

        # The utility critic, learned off-policy. This rollout replaces the oldest of the replay buffer's R rollouts.
        slot = (iteration - 1) % args.replay_rollouts
        reward_sums, bootstrap_steps, bootstrap_discounts = n_step_returns(
            rewards, no_bootstrap, dones, args.gamma, args.utility_n_step
        )
        replay_buffer["obs"][slot] = raw_obs_buf.reshape(batch_size, obs_dim)
        replay_buffer["actions"][slot] = actions_buf.reshape(batch_size, ACTION_DIMS)
        replay_buffer["reward_sums"][slot] = reward_sums.reshape(-1)
        replay_buffer["bootstrap_obs"][slot] = raw_next_obs_buf[bootstrap_steps, np.arange(args.num_envs)].reshape(
            batch_size, obs_dim
        )
        replay_buffer["bootstrap_discounts"][slot] = bootstrap_discounts.reshape(-1)
        label_episode_outcomes(replay_buffer["episode_success"], slot, dones, rollout_successes)
        stored = min(iteration, args.replay_rollouts)

        def replayed(name):
            """A field of every stored transition, one row per transition (a field of width 1 as a vector)."""
            rows = replay_buffer[name][:stored].reshape(stored * batch_size, -1)
            return rows[:, 0] if rows.shape[1] == 1 else rows

        r_obs = torch.as_tensor(normalize_obs(replayed("obs"), obs_rms, args.norm_obs), device=device)
        r_actions = torch.as_tensor(replayed("actions"), device=device)
        if args.utility_target == "td":
            # TD targets in units of the value normalizer's std (v_std, updated with this batch's returns above, as PPO's
            # critic targets are): returns reach ~1e3 with rewards up to 10, so the targets are O(1) like the critic's.
            # Scaling alone (no mean subtracted) keeps the Bellman equation: Q / std is the Q-function of rewards / std.
            # Both networks move to the new unit first, their predictions unchanged in real units (set_output_scale).
            for critic in (utility_critic, target_critic):
                critic.set_output_scale(v_std)
            r_reward_sums = torch.as_tensor(replayed("reward_sums") / v_std, dtype=torch.float32, device=device)
            r_bootstrap_obs = torch.as_tensor(
                normalize_obs(replayed("bootstrap_obs"), obs_rms, args.norm_obs), device=device
            )
            r_bootstrap_discounts = torch.as_tensor(replayed("bootstrap_discounts"), dtype=torch.float32, device=device)
            samples = replay_rng.integers(
                0, stored * batch_size, (args.utility_updates_per_iteration, args.utility_minibatch_size)
            )
            if (
                args.q_baseline == "ppo"
            ):  # the PPO critic's values in Q's unit (returns / v_std): V / v_std + v_mean / v_std
                with torch.no_grad():
                    r_baseline = agent.get_value(r_obs) + v_mean / v_std
                    r_bootstrap_baseline = agent.get_value(r_bootstrap_obs) + v_mean / v_std
        else:
            # balanced minibatches of transitions from successful and from failed episodes: the logit then compares
            # the two classes' (s, a_d) at even odds, whatever the success rate; nothing to contrast until both exist
            outcomes = replayed("episode_success")
            r_successes = torch.as_tensor(outcomes, dtype=torch.float32, device=device)
            successful, failed = np.flatnonzero(outcomes == 1.0), np.flatnonzero(outcomes == 0.0)
            half = args.utility_minibatch_size // 2
            samples = np.zeros((0, args.utility_minibatch_size), dtype=np.int64)
            if len(successful) and len(failed):
                samples = np.concatenate(
                    [
                        replay_rng.choice(successful, (args.utility_updates_per_iteration, half)),
                        replay_rng.choice(
                            failed, (args.utility_updates_per_iteration, args.utility_minibatch_size - half)
                        ),
                    ],
                    1,
                )
        updates_before = (iteration - 1) * args.utility_updates_per_iteration  # the target network's period counts on
        # every replayed minibatch of this iteration gathered at once: fields first, then one tuple per update
        if args.utility_target == "td":
            fields = [r_obs, r_actions, r_reward_sums, r_bootstrap_obs, r_bootstrap_discounts]
            fields += [r_baseline, r_bootstrap_baseline] if args.q_baseline == "ppo" else []
        else:
            fields = [r_obs, r_actions, r_successes]
        samples = torch.as_tensor(samples, device=device)
        u_losses = []
        for update, replayed_minibatch in enumerate(zip(*(t[samples] for t in fields)), start=updates_before + 1):
            (u_loss,) = utility_step(*replayed_minibatch)
            if update % args.target_network_period == 0:
                with torch.no_grad():
                    for target, online in zip(target_critic.parameters(), utility_critic.parameters()):
                        target.mul_(1.0 - args.target_network_tau).add_(online, alpha=args.target_network_tau)
            u_losses.append(u_loss)
        utility_loss = torch.stack(u_losses).mean().cpu() if u_losses else torch.tensor(float("nan"))  # NaN: no update

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
            "utility_loss": utility_loss.item(),
            "advantage_agreement": advantage_agreement,
        }
        with torch.no_grad():  # a fixed stride of the batch's states: no random numbers, so no effect on training
            stride = max(1, batch_size // args.rank_states)
            rank_utility, rank_logits = utility_critic(b_obs[::stride]), agent.get_logits(b_obs[::stride])
            row["rank_agreement"] = rank_agreement(rank_utility, rank_logits).item()
            # the same over the bins the rollout's mask left in place at those states (boost masks none): the
            # agreement where the policy can act on the critic
            unmasked = (b_offsets[::stride] == 0) if args.mask_mode != "boost" else None
            row["rank_agreement_unmasked"] = rank_agreement(rank_utility, rank_logits, unmasked).item()
        # metrics.csv and TensorBoard, evaluation when due, the progress line, a checkpoint when due
        # NaN utility_loss: no update
        losses = torch.cat([loss_sums, utility_loss.reshape(1)]) if u_losses else loss_sums
        if args.ref_kl_coef:  # how far the policy has moved from the pretrained one, at this rollout's states
            row["ref_kl"] = reference_kl(b_log_probs, b_ref_log_probs).mean().item()
        run.end_iteration(global_step, row, evaluation_policy, losses=losses, mask_counts=mask_counts)

    run.finish()
