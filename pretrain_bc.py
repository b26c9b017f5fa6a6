# Behaviour cloning of MetaWorld's scripted expert into the arms' token policy: the pretraining half of the VLA
# pipeline the paper's title is about (RL fine-tuning of a pretrained token policy; docs/finetuning.md), at small
# scale. It collects --demos episodes of the task's scripted expert (metaworld.policies), discretizes the expert's
# actions into the arms' K bins per action dimension, trains the arms' actor by cross-entropy over the bins of each
# dimension (the VLA token loss), measures the sampled and the greedy policy's success on a separate environment seed,
# and writes ONE file (torch.save of a dict) that every arm loads with --init-from: the actor's weights, the
# observation statistics when observations are standardized, and the recipe (what it was made from, and how well it
# does; also written beside it as JSON, for tables that need no weights).
#
#     python pretrain_bc.py --env-id button-press-v3 --demos 25 --num-bins 256 --no-norm-obs --out results/pretrained/bp.pt
#     python ppo_vanilla.py --env-id button-press-v3 --num-bins 256 --no-norm-obs --init-from results/pretrained/bp.pt
#
# DART (Laskey et al., 2017): Gaussian noise of std --action-noise is added to the action the environment EXECUTES, so
# the demonstrations visit the states a slightly wrong policy reaches, while the label stays the expert's action at the
# visited state. Every collected episode is kept, failed ones included: the label is the expert's action wherever the
# noise led, and the states a noisy execution fails from are the ones a cloned policy must learn to recover from.
import os
import time
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.optim as optim
import tyro
from gymnasium.wrappers.utils import RunningMeanStd
from metaworld.policies import ENV_POLICY_MAP

from ppo_vanilla import Agent, make_env, normalize_obs, numpy_actor, sample_action
from training_run import code_revision, fail, resolve_env_id, save_atomically, write_json


@dataclass
class Args:
    out: str
    """where to write the pretrained file (a .pt; refused if it exists: fine-tuning runs name it by its path)"""
    env_id: str = "button-press-v3"
    """the MetaWorld MT1 task (its scripted expert, metaworld.policies, demonstrates it); -v2 names map to -v3"""
    seed: int = 1
    """seeds the demonstrations' environment and noise, the network's initialization and the minibatches; the success
    evaluation runs on environment seed + 10000 (as the arms' evaluation environment does)"""
    demos: int = 25
    """episodes of the expert to collect (500 steps each, MetaWorld's episode length); all of them are kept"""
    action_noise: float = 0.1
    """DART: std of the Gaussian noise added to the executed action (then clipped to [-1, 1]); the label stays the
    expert's noiseless action. 0 records the expert's own trajectories"""
    threads: int = 1
    """torch threads (1 is fastest for this 2x64 network)"""

    # The policy: the arms' actor, so that the file loads into any arm with the same flags
    num_bins: int = 64
    """K: bins per action dimension, evenly spaced on [-1, 1] (the arms' --num-bins; the fine-tuning issue uses 256)"""
    action_head: Literal["categorical", "ordinal", "poisson"] = "categorical"
    """the arms' --action-head: how the actor's outputs become each dimension's K logits"""
    poisson_temperature: float = 2.5
    """the arms' --poisson-temperature (with --action-head poisson)"""
    norm_obs: bool = True
    """standardize observations with the demonstrations' mean and std, as an arm's --norm-obs does (the file carries
    the statistics, and a fine-tuning run starts from them); --no-norm-obs, the paper's regime, trains on raw ones"""

    # Behaviour cloning
    train_steps: int = 20_000
    """Adam steps on minibatches drawn with replacement from all demonstration steps (the epochs this amounts to are
    recorded in the recipe). 5,000 underfit the categorical head at K = 256 as demonstrations grew (button-press, raw
    observations, seed 1: 50 demonstrations ended at token loss 1.40 and sampled last-step success 0.48; 20,000 steps
    at 1.02 and 1.00)"""
    batch_size: int = 256
    """the minibatch size"""
    learning_rate: float = 1e-3
    """Adam's learning rate, annealed linearly to 0 over --train-steps"""

    # Evaluation
    eval_episodes: int = 50
    """episodes of the sampled policy, and as many of the greedy one (argmax per dimension), on environment seed +
    10000; the recipe records their success at any step (MetaWorld's protocol) and at the last step"""


def check_args(args: Args) -> None:
    """Reject bad values before anything is collected (one line, exit status 2)."""
    args.env_id = resolve_env_id(args.env_id)
    if args.env_id not in ENV_POLICY_MAP:
        fail(f"MetaWorld has no scripted expert for {args.env_id} (metaworld.policies.ENV_POLICY_MAP)")
    if os.path.exists(args.out):
        fail(
            f"--out {args.out} exists; remove it or choose another path (fine-tuning runs name a pretrained file by its path)"
        )
    if min(args.demos, args.train_steps, args.batch_size, args.eval_episodes, args.threads) < 1:
        fail("--demos, --train-steps, --batch-size, --eval-episodes and --threads must be at least 1")
    if args.num_bins < 2:
        fail(f"--num-bins must be at least 2, got {args.num_bins}")
    if args.action_noise < 0 or args.learning_rate <= 0 or args.poisson_temperature <= 0:
        fail("--action-noise must be >= 0, --learning-rate and --poisson-temperature positive")


def expert_policy(env_id: str):
    """The task's scripted expert: (raw observation) -> continuous action clipped to [-1, 1], the range the environment
    clips to (the experts' proportional controllers ask for more, and metaworld warns about it at every step)."""
    policy = ENV_POLICY_MAP[env_id]()

    def act(raw_obs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.clip(policy.get_action(raw_obs), -1.0, 1.0)

    return act


def collect_demonstrations(args: Args, rng: np.random.Generator):
    """--demos episodes of the expert, the executed action carrying DART's noise. Returns the raw observations
    (steps, obs_dim), the expert's labels (steps, 4) in [-1, 1], and each episode's success at any step and at its
    last step (the EpisodeRecorder's, as the arms score theirs)."""
    env = make_env(args.env_id, args.seed)()
    expert = expert_policy(args.env_id)
    observations, labels, successes, last_step_successes = [], [], [], []
    raw_obs, _ = env.reset(seed=args.seed)
    for _ in range(args.demos):
        done = False
        while not done:
            action = expert(raw_obs)
            observations.append(raw_obs)
            labels.append(action)
            executed = np.clip(action + args.action_noise * rng.standard_normal(action.shape), -1.0, 1.0)
            raw_obs, _, terminated, truncated, info = env.step(executed)
            done = terminated or truncated
        successes.append(info["episode_success"])
        last_step_successes.append(info["episode_success_last_step"])
        raw_obs, _ = env.reset()
    env.close()
    return np.array(observations), np.array(labels), successes, last_step_successes


def discretize(actions, bin_values):
    """Each continuous action component's nearest bin, shape (steps, 4): the token the arms' policy would have to emit
    to execute it (bin k of every dimension is the action bin_values[k], the arms' K values evenly spaced on [-1, 1])."""
    return np.abs(actions[..., None] - bin_values).argmin(-1)


def token_loss(agent: Agent, obs, labels):
    """The VLA token loss: the cross-entropy of each dimension's label under its Categorical over the K bins, averaged
    over the minibatch and the 4 dimensions (nats per token)."""
    return -agent.get_log_probs(obs).gather(-1, labels.unsqueeze(-1)).mean()


def evaluate(agent: Agent, args: Args, obs_rms: RunningMeanStd) -> dict:
    """Success of the sampled policy (the paper's protocol) and of the greedy one, at any step and at the last step,
    over --eval-episodes each on environment seed + 10000, sampling from its own generator."""
    env = make_env(args.env_id, args.seed + 10_000)()
    rng = np.random.default_rng(args.seed + 10_000)
    actor, bin_values = numpy_actor(agent), agent.bin_values.numpy()
    raw_obs, _ = env.reset(seed=args.seed + 10_000)
    success = {}
    for mode in ("sampled", "greedy"):
        any_step, last_step = [], []
        for _ in range(args.eval_episodes):
            done = False
            while not done:
                logits = actor(normalize_obs(raw_obs[None], obs_rms, args.norm_obs))
                action = logits.argmax(-1) if mode == "greedy" else sample_action(logits, rng)
                raw_obs, _, terminated, truncated, info = env.step(bin_values[action[0]])
                done = terminated or truncated
            any_step.append(info["episode_success"])
            last_step.append(info["episode_success_last_step"])
            raw_obs, _ = env.reset()
        success[mode] = {"any": float(np.mean(any_step)), "last": float(np.mean(last_step))}
    env.close()
    return success


if __name__ == "__main__":
    args = tyro.cli(Args)
    check_args(args)
    start = time.time()

    # Seeding
    rng = np.random.default_rng(args.seed)  # the demonstrations' noise
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    # Demonstrations, their observation statistics and their tokens
    raw_obs, expert_actions, demo_successes, demo_last_step_successes = collect_demonstrations(args, rng)
    obs_dim = raw_obs.shape[1]
    print(
        f"{args.demos} expert episodes of {args.env_id} (action noise {args.action_noise}): {len(raw_obs):,} steps, "
        f"success {np.mean(demo_successes):.2f}, last step {np.mean(demo_last_step_successes):.2f} "
        f"({time.time() - start:.0f} s)",
        flush=True,
    )
    obs_rms = RunningMeanStd(shape=(obs_dim,))
    if args.norm_obs:
        obs_rms.update(raw_obs)
    agent = Agent(obs_dim, args.num_bins, args.action_head, args.poisson_temperature)
    obs = torch.as_tensor(normalize_obs(raw_obs, obs_rms, args.norm_obs))
    labels = torch.as_tensor(discretize(expert_actions, agent.bin_values.numpy()))

    # Behaviour cloning: the actor only (the critic is the fine-tuning run's to train)
    optimizer = optim.Adam(agent.actor.parameters(), lr=args.learning_rate)
    generator = torch.Generator().manual_seed(args.seed)
    for step in range(1, args.train_steps + 1):
        optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - (step - 1) / args.train_steps)
        batch = torch.randint(len(obs), (args.batch_size,), generator=generator)
        loss = token_loss(agent, obs[batch], labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 1000 == 0 or step == args.train_steps:
            print(f"step {step}/{args.train_steps} token loss {loss.item():.4f}", flush=True)
    with torch.no_grad():  # the final loss and token accuracy over every demonstration step
        bc_loss = token_loss(agent, obs, labels).item()
        token_accuracy = (agent.get_logits(obs).argmax(-1) == labels).float().mean().item()

    success = evaluate(agent, args, obs_rms)
    recipe = {
        "env_id": args.env_id,
        "num_bins": args.num_bins,
        "action_head": args.action_head,
        "poisson_temperature": args.poisson_temperature,
        "obs_dim": obs_dim,
        "norm_obs": args.norm_obs,
        "demos": args.demos,
        "action_noise": args.action_noise,
        "failed_demos_kept": True,
        "demo_steps": len(obs),
        "demo_success": float(np.mean(demo_successes)),
        "demo_success_last_step": float(np.mean(demo_last_step_successes)),
        "train_steps": args.train_steps,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "epochs": args.train_steps * args.batch_size / len(obs),
        "bc_loss": bc_loss,
        "token_accuracy": token_accuracy,
        "eval_episodes": args.eval_episodes,
        "eval_seed": args.seed + 10_000,
        "success": success,
        "seed": args.seed,
        **code_revision(__file__),
    }
    payload = {
        "actor": {name: tensor.detach().clone() for name, tensor in agent.actor.state_dict().items()},
        # the statistics exactly as RunningMeanStd holds them (float64), for the arms' obs_rms
        "obs_rms": {
            "mean": torch.from_numpy(obs_rms.mean),
            "var": torch.from_numpy(obs_rms.var),
            "count": float(obs_rms.count),
        }
        if args.norm_obs
        else None,
        "recipe": recipe,
    }
    if os.path.dirname(args.out):
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
    save_atomically(payload, args.out)
    # the recipe alone, readable without torch (calibration)
    write_json(os.path.splitext(args.out)[0] + ".json", recipe)
    print(
        f"token loss {bc_loss:.4f}, token accuracy {token_accuracy:.3f}; {args.eval_episodes} episodes each: sampled "
        f"success {success['sampled']['any']:.2f} last step {success['sampled']['last']:.2f}, greedy "
        f"{success['greedy']['any']:.2f} last step {success['greedy']['last']:.2f}; wrote {args.out} "
        f"({time.time() - start:.0f} s)"
    )
