# Discretized PPO on MetaWorld, no masking: the baseline arm of "Action-Token Pruning for Sample-Efficient
# RL Fine-Tuning of Robot Policies" (paper section 3), in the style of CleanRL's ppo_continuous_action.py.
# Every other arm (ppo_random_mask.py, ppo_utility_mask.py, ...) is a copy of this file that differs only
# where its idea lives: `diff ppo_vanilla.py ppo_<arm>.py` is that arm's whole idea.
import atexit
import csv
import difflib
import hashlib
import json
import os
import platform
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Optional

import gymnasium as gym
import imageio
import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
import tyro
from gymnasium.wrappers.utils import RunningMeanStd
from torch.utils.tensorboard import SummaryWriter

# Importing MuJoCo (through metaworld) loads the OpenGL backend that MUJOCO_GL names, and one that is missing fails
# there, with a traceback. Training renders nothing, so MuJoCo is imported without it: only --capture-video loads it.
mujoco_gl = os.environ.pop("MUJOCO_GL", None)
import metaworld  # noqa: E402,F401  (registers the "Meta-World/MT1" environments)
if mujoco_gl is not None:
    os.environ["MUJOCO_GL"] = mujoco_gl

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
    """run the update on CUDA (the paper used T4 GPUs; for these 2x64 MLPs one CPU core is usually faster). The
    rollout's batch-of-one policy calls always run on the CPU, in NumPy"""
    track: bool = False
    """if toggled, this experiment is also logged to Weights and Biases (WANDB_MODE=offline works)"""
    wandb_project_name: str = "action-token-pruning"
    """the wandb project name"""
    wandb_entity: Optional[str] = None
    """the entity (team) of the wandb project"""
    runs_dir: str = "runs"
    """the directory that holds one sub-directory per run"""
    resume: bool = False
    """continue this run from its last checkpoint (a run whose summary.json exists is reported as done)"""
    checkpoint_interval: int = 10
    """save a checkpoint every this many PPO iterations (and at the end)"""
    capture_video: bool = False
    """film the first sampled-policy episode of each evaluation as an MP4 in {run_dir}/videos (also to W&B with
    --track); needs an OpenGL backend: MUJOCO_GL=egl (the default here) or osmesa (README, "Videos")"""
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
    target_kl: Optional[float] = 0.02
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


def fail(message: str) -> None:
    """Bad input: one clear line on stderr and exit status 2, never a traceback."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def resolve_env_id(env_id: str) -> str:
    """Return the MetaWorld 3 name of a task; the paper's -v2 names map to -v3 (MetaWorld 3 renamed them all)."""
    names = sorted(metaworld.ALL_V3_ENVIRONMENTS)
    if env_id in names:
        return env_id
    if env_id.endswith("-v2") and env_id[:-3] + "-v3" in names:
        print(f"note: MetaWorld 3 renamed {env_id} to {env_id[:-3]}-v3; using {env_id[:-3]}-v3")
        return env_id[:-3] + "-v3"
    close = difflib.get_close_matches(env_id.replace("-v2", "-v3"), names, n=3, cutoff=0.4)
    fail(f"unknown MetaWorld task {env_id!r}; closest: {', '.join(close) or 'none'} (all {len(names)}: {' '.join(names)})")


def check_args(args: Args) -> None:
    """Reject bad flag values before anything is written."""
    batch_size = args.num_envs * args.num_steps
    if args.num_bins < 2:
        fail(f"--num-bins must be at least 2, got {args.num_bins}")
    if min(args.num_envs, args.num_steps, args.minibatch_size, args.update_epochs, args.threads) < 1:
        fail("--num-envs, --num-steps, --minibatch-size, --update-epochs and --threads must be at least 1")
    if batch_size % args.minibatch_size:
        fail(f"the rollout (num_envs * num_steps = {batch_size}) is not a multiple of --minibatch-size {args.minibatch_size}")
    if args.total_timesteps < batch_size:
        fail(f"--total-timesteps {args.total_timesteps} is less than one rollout (num_envs * num_steps = {batch_size})")
    for name in ("gamma", "gae_lambda"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            fail(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(args, name)}")
    if not 0.0 < args.clip_coef < 1.0:
        fail(f"--clip-coef must be in (0, 1), got {args.clip_coef}")
    if args.learning_rate <= 0 or args.max_grad_norm <= 0 or (args.target_kl is not None and args.target_kl <= 0):
        fail("--learning-rate, --max-grad-norm and --target-kl must be positive")
    if min(args.checkpoint_interval, args.success_window, args.final_episodes) < 1 or args.eval_interval < 0 or args.eval_episodes < 1:
        fail("--checkpoint-interval, --success-window, --final-episodes, --eval-episodes must be >= 1, --eval-interval >= 0")
    if args.capture_video_greedy and not args.capture_video:
        fail("--capture-video-greedy adds the greedy episode to --capture-video's films; pass both")
    if args.capture_video and not args.eval_interval:
        fail("--capture-video films evaluation episodes, and --eval-interval 0 turns evaluation off")


class EpisodeLog(gym.Wrapper):
    """Bookkeeping of the current episode of one MetaWorld environment.

    Success follows MetaWorld's protocol: an episode succeeds if info["success"] was 1 at any step; it is
    reported as info["episode_success"] at the episode's end, beside RecordEpisodeStatistics' info["episode"].
    The paper never says which definition it scores, so info["episode_success_last_step"] also reports
    info["success"] at the episode's last step: a policy that presses the spring-loaded button and lets go
    succeeds under the first and fails under the second.
    For exact resumption it keeps MetaWorld's RNG checkpoint taken just before the episode's reset and every
    action since: `replay` rebuilds the exact mid-episode simulator state (MuJoCo is deterministic on CPU).
    """

    def reset(self, **kwargs):
        self.start = self.env.get_wrapper_attr("get_checkpoint")()
        self.actions, self.success = [], False
        return self.env.reset(**kwargs)

    def step(self, action):
        self.actions.append(np.array(action, copy=True))
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.success = self.success or bool(info["success"])
        if terminated or truncated:
            info["episode_success"] = float(self.success)
            info["episode_success_last_step"] = float(info["success"])
        return obs, reward, terminated, truncated, info

    def replay_state(self):
        return {"start": self.start, "actions": np.array(self.actions, dtype=np.float32)}

    def replay(self, state):
        self.env.get_wrapper_attr("load_checkpoint")([state["start"]])
        obs, _ = self.reset()
        for action in state["actions"]:
            obs, *_ = self.step(action)
        return obs


# --capture-video's camera: MetaWorld's "corner4" shows the gripper and the task's objects up close on every task;
# MuJoCo's renderer draws MetaWorld's corner cameras upside down, so each frame is turned by 180 degrees.
VIDEO_CAMERA, VIDEO_SIZE = "corner4", 240


def make_env(env_id: str, seed: int, render: bool = False):
    def thunk():
        # MetaWorld's MT1: the task's 50 goal variations drawn with `seed`, one re-drawn at every reset;
        # every episode is truncated at 500 steps and never terminates. Only a --capture-video run's evaluation
        # env renders (rendering draws no random number).
        video = dict(render_mode="rgb_array", camera_name=VIDEO_CAMERA, width=VIDEO_SIZE, height=VIDEO_SIZE) if render else {}
        env = gym.make("Meta-World/MT1", env_name=env_id, seed=seed, disable_env_checker=True, **video)
        if render:  # frames this small need no 4096-px shadow map: 1024 px costs 40% less on a CPU (llvmpipe)
            env.unwrapped.model.vis.quality.shadowsize = 1024
        return EpisodeLog(env)

    return thunk


def video_writer(path: str, env):
    """An MP4 of `env`'s frames (video_frame), one per step: real time at MetaWorld's 80 frames per second."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return imageio.get_writer(path, fps=env.metadata["render_fps"])


def video_frame(env):
    return env.render()[::-1, ::-1]  # turned right side up (VIDEO_CAMERA)


def check_video(env_id: str):
    """--capture-video: film one frame now, into a file that is thrown away, so that a missing or broken OpenGL backend
    stops the run with one line before anything is written, not with a traceback at its first evaluation."""
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless; MUJOCO_GL=osmesa (software) or glfw (a display) also work
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("ignore")  # GLFW warns before it fails on a machine without a display
        try:
            env = make_env(env_id, 0, render=True)()
            env.reset()
            with video_writer(os.path.join(tmp, "check.mp4"), env) as video:
                video.append_data(video_frame(env))
            env.close()
        except Exception as e:
            sys.unraisablehook = lambda _: None  # the half-made renderer fails again when collected: keep to one line
            fail(f"--capture-video cannot film with MUJOCO_GL={os.environ['MUJOCO_GL']} ({type(e).__name__}: "
                 f"{' '.join(str(e).split())}); on a headless Linux machine egl needs libegl1 and libgl1-mesa-dri, "
                 f"osmesa needs libosmesa6 (README, \"Videos\")")


def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    """Factored-categorical actor (4 x K logits, one Categorical per action dimension) and a separate critic."""

    def __init__(self, obs_dim: int, num_bins: int):
        super().__init__()
        self.num_bins = num_bins
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
            layer_init(nn.Linear(64, ACTION_DIMS * num_bins), std=0.01),
        )
        # bin k of every dimension is the continuous action bin_values[k]: K values evenly spaced on [-1, 1]
        self.register_buffer("bin_values", torch.linspace(-1.0, 1.0, num_bins))

    def get_value(self, x):
        """V(s) on the normalized value scale (de-normalize with the value statistics for real returns)."""
        return self.critic(x).squeeze(-1)

    def get_logits(self, x):
        return self.actor(x).view(-1, ACTION_DIMS, self.num_bins)

    def get_log_probs(self, x):
        """log pi_d(k|s) for every action dimension d and bin k, shape (batch, 4, K)."""
        return self.get_logits(x).log_softmax(-1)


def action_log_prob(log_probs, action):
    """log pi(a|s) of the factored policy: the sum over the independent per-dimension Categoricals (section 3)."""
    return log_probs.gather(-1, action.unsqueeze(-1)).sum((-2, -1))


def dimension_entropy(log_probs):
    """The entropy of each dimension's Categorical, shape (batch, 4); the policy's entropy is their sum."""
    return -(log_probs.exp() * log_probs).sum(-1)


def numpy_mlp(net: nn.Sequential):
    """A NumPy copy of a Linear/Tanh MLP for the rollout's batch-of-one calls, taken after each update: NumPy runs
    the 3 small layers in about 8 us, torch's per-operation dispatch needs about 45 us (README, "Speed")."""
    layers = [(m.weight.detach().cpu().numpy().T.copy(), m.bias.detach().cpu().numpy().copy())
              for m in net if isinstance(m, nn.Linear)]

    def forward(x):
        for i, (weight, bias) in enumerate(layers):
            x = x @ weight + bias
            if i < len(layers) - 1:
                x = np.tanh(x)
        return x

    return forward


def sample_action(logits, rng=np.random):
    """One bin index per action dimension, shape (batch, 4), from logits of shape (batch, 4, K). Gumbel-max:
    argmax(logits + Gumbel noise) is a sample of each dimension's Categorical(logits). `rng` is the training stream
    (NumPy's global one) unless evaluation passes its own generator, so evaluating never moves training's numbers."""
    return (logits + rng.gumbel(size=logits.shape)).argmax(-1)


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
    return ((per_minibatch - per_minibatch.mean(1, keepdim=True)) / (per_minibatch.std(1, keepdim=True) + 1e-8)).view(-1)


def normalize(x, rms: RunningMeanStd):
    return (x - rms.mean) / np.sqrt(rms.var + 1e-8)


def normalize_obs(raw_obs, obs_rms: RunningMeanStd, enabled: bool):
    """Standardized observations, clipped to [-10, 10] as gymnasium/CleanRL do, as float32. The statistics
    are updated once per rollout, after it: the policy acts on, and is then trained on, the same inputs."""
    obs = np.clip(normalize(raw_obs, obs_rms), -10.0, 10.0) if enabled else raw_obs
    return np.asarray(obs, dtype=np.float32)


def success_curve_summary(curve, steps, episode_successes, final_episodes):
    """summary.json's headline numbers from the training success curve (one point per iteration; NaN before
    any episode has finished counts as 0): final_success over the last `final_episodes` training episodes,
    auc the mean of the curve (its area normalized to 0..1; iterations are equally long), steps_to_half the
    first step at which the curve reaches 0.5 (None if never)."""
    curve = np.nan_to_num(np.asarray(curve, dtype=np.float64), nan=0.0)
    reached = np.flatnonzero(curve >= 0.5)
    last = episode_successes[-final_episodes:]
    return {
        "final_success": float(np.mean(last)) if len(last) else None,
        "final_success_episodes": len(last),
        "auc": float(curve.mean()) if len(curve) else 0.0,
        "steps_to_half": int(steps[reached[0]]) if len(reached) else None,
    }


def write_json(path, payload):
    """Write atomically: a reader (or a crash) never sees half a file."""
    with open(path + ".tmp", "w") as f:
        json.dump(payload, f, indent=2)
    os.replace(path + ".tmp", path)


# config.json fields that may change between the sessions of one run: where it lives and what it runs on
NOT_SETTINGS = ("runs_dir", "cuda", "threads")
# Args that change nothing a run computes, only what it shows: left out of config.json (its "command" keeps them)
NOT_RECORDED = ("resume", "track", "capture_video", "capture_video_greedy")


def changed_settings(recorded: dict, config: dict) -> list:
    """The settings of this invocation that differ from those a run recorded, each as 'name (recorded -> now)'."""
    return [f"{k} ({recorded.get(k)!r} -> {config[k]!r})" for k in config
            if k not in NOT_SETTINGS and recorded.get(k) != config[k]]


def save_checkpoint(run_dir: str, payload: dict):
    """Write checkpoint.pt atomically and keep the one before it as checkpoint.prev.pt, for load_checkpoint."""
    path = os.path.join(run_dir, "checkpoint.pt")
    torch.save(payload, path + ".tmp")
    if os.path.exists(path):
        os.replace(path, os.path.join(run_dir, "checkpoint.prev.pt"))
    os.replace(path + ".tmp", path)


def load_checkpoint(run_dir: str, device: torch.device):
    """The newest readable checkpoint of a run (None if it has none): checkpoint.pt, else, saying so, the one before
    it. A run whose checkpoints are all unreadable stops with one line saying what to do."""
    unreadable = []
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        path = os.path.join(run_dir, name)
        if os.path.exists(path):
            try:
                ckpt = torch.load(path, weights_only=False, map_location=device)
                ckpt["config"], ckpt["iteration"]
            except Exception as e:
                unreadable.append(f"{path} ({type(e).__name__}: {' '.join(str(e).split())})")
                continue
            if unreadable:
                print(f"warning: cannot read {unreadable[0]}; falling back to the previous checkpoint "
                      f"(iteration {ckpt['iteration']})", file=sys.stderr)
                os.replace(path, os.path.join(run_dir, "checkpoint.pt"))  # so the next save keeps it as the previous
            return ckpt
    if unreadable:
        fail(f"cannot read checkpoint {' nor '.join(unreadable)}; remove {run_dir} to start this run over")
    return None


def stop_on_signal(describe):
    """Ctrl-C (SIGINT) and SIGTERM (how containers and schedulers stop a process) end the run with one line, made by
    describe(), and exit status 128 + the signal (130, 143), instead of a traceback through MetaWorld's internals.
    Nothing is saved then: --resume continues from the last checkpoint and drops the rows written after it."""
    def handler(signum, _frame):
        # once: a second signal (timeout signals the process group, then a sweep passes its own stop on as SIGTERM)
        # must not interrupt the shutdown the first one started
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print(f"stopped by {signal.Signals(signum).name} {describe()}", file=sys.stderr, flush=True)
        sys.exit(128 + signum)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def code_revision() -> dict:
    """Which code made a run. git_revision: the commit, only when this script's folder is the top level of a git
    repository (a copy inside another repository would record that repository's commit), else "unknown";
    git_changes: with uncommitted changes to tracked files (or untracked project sources), the sha256 of their diff
    and their names, else None. code_sha256: the project sources this process runs (this script and any module it
    imported from its folder), hashed: the same on every machine, with or without git."""
    here = os.path.dirname(os.path.realpath(__file__))
    files = [getattr(m, "__file__", None) for m in list(sys.modules.values())]
    sources = sorted({os.path.realpath(f) for f in files if isinstance(f, str) and os.path.isabs(f) and os.path.isfile(f)
                      and os.path.dirname(os.path.realpath(f)) == here} | {os.path.realpath(__file__)})
    names = [os.path.basename(path) for path in sources]
    code = hashlib.sha256()
    for name, path in zip(names, sources):
        with open(path, "rb") as f:
            code.update(name.encode() + b"\0" + f.read() + b"\0")

    def git(*command):
        try:
            result = subprocess.run(["git", "-C", here, *command], capture_output=True)
        except OSError:
            return None
        return result.stdout.decode(errors="replace") if result.returncode == 0 else None

    revision, changes = "unknown", None
    top = git("rev-parse", "--show-toplevel")
    if top and os.path.realpath(top.strip()) == here and git("rev-parse", "HEAD"):
        revision = git("rev-parse", "HEAD").strip()
        changed = (git("diff", "HEAD", "--name-only") or "").split()
        untracked = (git("ls-files", "--others", "--exclude-standard", "--", *names) or "").split()
        if changed or untracked:
            diff = hashlib.sha256((git("diff", "HEAD", "--binary") or "").encode())
            for name in untracked:
                with open(os.path.join(here, name), "rb") as f:
                    diff.update(name.encode() + b"\0" + f.read())
            changes = {"diff_sha256": diff.hexdigest(), "files": sorted(changed + untracked)}
    return {"git_revision": revision, "git_changes": changes, "code_sha256": code.hexdigest(), "code_files": names}


def run_metadata(device: torch.device):
    """Package versions, the code revision, the command line, the host and the torch device, for config.json."""
    from importlib.metadata import version

    packages = ["torch", "numpy", "gymnasium", "metaworld", "mujoco", "tyro"]
    return {
        **code_revision(),
        "python": platform.python_version(),
        "packages": {p: version(p) for p in packages},
        "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
        "host": platform.node(),
        "device": str(device),
    }


# metrics.csv's columns, one row per iteration, each with its TensorBoard tag (CleanRL's names) or None
METRICS = {"iteration": None, "global_step": None, "episodes": None, "success_rate": "charts/success_rate",
           "success_rate_last_step": "charts/success_rate_last_step",
           "episodic_return": "charts/episodic_return", "policy_entropy": "charts/policy_entropy",
           "effective_bins": "charts/effective_bins", "approx_kl": "losses/approx_kl", "clipfrac": "losses/clipfrac",
           "explained_variance": "losses/explained_variance", "value_loss": "losses/value_loss",
           "policy_loss": "losses/policy_loss", "learning_rate": "charts/learning_rate", "epochs": None, "sps": "charts/SPS"}
EVAL_COLUMNS = ["iteration", "global_step", "sampled_success", "sampled_success_last_step", "sampled_return",
                "greedy_success", "greedy_success_last_step", "greedy_return"]


if __name__ == "__main__":
    args = tyro.cli(Args)
    args.env_id = resolve_env_id(args.env_id)
    check_args(args)
    batch_size = args.num_envs * args.num_steps
    num_iterations = args.total_timesteps // batch_size
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}"
    run_dir = os.path.join(args.runs_dir, run_name)
    ckpt_path = os.path.join(run_dir, "checkpoint.pt")
    config = {k: v for k, v in asdict(args).items() if k not in NOT_RECORDED}
    if args.cuda and not torch.cuda.is_available():
        fail("--cuda was given but torch sees no CUDA device")
    device = torch.device("cuda" if args.cuda else "cpu")
    if args.capture_video:
        check_video(args.env_id)
        print(f"filming evaluation episodes into {os.path.join(run_dir, 'videos')} (MUJOCO_GL={os.environ['MUJOCO_GL']})")

    # A finished run is reported, not repeated, and never stands in for other settings; an unfinished one continues
    # only when asked to.
    if os.path.exists(os.path.join(run_dir, "summary.json")):
        with open(os.path.join(run_dir, "config.json")) as f:
            changed = changed_settings(json.load(f), config)
        if changed:
            fail(f"{run_dir} holds a complete run with other settings: {', '.join(changed)}; use another --exp-name or --runs-dir")
        print(f"{run_dir} is already complete (summary.json exists); nothing to do")
        sys.exit(0)
    ckpt = load_checkpoint(run_dir, device) if args.resume else None
    if ckpt is not None:
        changed = changed_settings(ckpt["config"], config)
        if changed:
            fail(f"--resume with different settings than the checkpoint: {', '.join(changed)}; use another --exp-name")
    elif args.resume:
        print(f"no checkpoint in {run_dir}: starting a new run")
    elif os.path.isdir(run_dir) and os.listdir(run_dir):
        fail(f"{run_dir} already holds an unfinished run; pass --resume to continue it or remove the directory")
    os.makedirs(run_dir, exist_ok=True)
    if ckpt is None:  # a fresh start (also --resume before the first checkpoint): drop any partial outputs
        for name in os.listdir(run_dir):
            path = os.path.join(run_dir, name)
            if os.path.isfile(path):
                os.remove(path)
            elif name == "videos":
                shutil.rmtree(path)
    config_path = os.path.join(run_dir, "config.json")
    if ckpt is None or not os.path.exists(config_path):
        write_json(config_path, {**config, "run_name": run_name, **run_metadata(device), "resumed": []})
    else:  # keep how the run started; record each resumption (revision, command, host) beside it
        with open(config_path) as f:
            started = json.load(f)
        write_json(config_path, {**started, "resumed": started.get("resumed", []) + [run_metadata(device)]})

    print(f"run {run_name}: writing {run_dir}" + (" (resuming)" if ckpt is not None else ""), flush=True)
    if args.track:
        import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True, config=config,
                   name=run_name, id=run_name.replace("/", "-"), resume="allow", dir=run_dir, save_code=True)
    # purge_step drops the events a killed run logged after its last checkpoint
    writer = SummaryWriter(run_dir, purge_step=ckpt["global_step"] + 1 if ckpt else None)
    if ckpt is None:
        writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in config.items()))

    # Seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    eval_rng = np.random.default_rng(args.seed + 10_000)  # evaluation's own stream: it never perturbs training
    torch.set_num_threads(args.threads)

    # Environment setup
    envs = gym.vector.SyncVectorEnv(
        [make_env(args.env_id, args.seed + i) for i in range(args.num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        copy=False,  # no deep copy of each step's observations: the loop copies them into its buffers itself
    )
    eval_env = make_env(args.env_id, args.seed + 10_000, render=args.capture_video)()
    if args.capture_video:  # however the run ends, free its OpenGL context before MuJoCo shuts OpenGL down
        atexit.register(eval_env.close)
    obs_dim = envs.single_observation_space.shape[0]

    agent = Agent(obs_dim, args.num_bins).to(device)
    bin_values = agent.bin_values.cpu().numpy()
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)  # fused: 30% faster on CPU
    obs_rms = RunningMeanStd(shape=(obs_dim,))
    value_rms = RunningMeanStd(shape=())

    # Rollout storage; next_obs_buf[t] is the observation that followed step t (the final one at an episode's end)
    raw_obs_buf = np.zeros((args.num_steps, args.num_envs, obs_dim))
    obs_buf = np.zeros((args.num_steps, args.num_envs, obs_dim), dtype=np.float32)
    next_obs_buf = np.zeros((args.num_steps, args.num_envs, obs_dim), dtype=np.float32)
    actions_buf = np.zeros((args.num_steps, args.num_envs, ACTION_DIMS), dtype=np.int64)
    rewards = np.zeros((args.num_steps, args.num_envs))
    terminations = np.zeros((args.num_steps, args.num_envs))
    dones = np.zeros((args.num_steps, args.num_envs))

    raw_obs, _ = envs.reset(seed=args.seed)
    eval_env.reset(seed=args.seed + 10_000)
    start_iteration, global_step, wall_before = 1, 0, 0.0
    episode_returns, episode_successes, episode_last_step_successes = [], [], []
    curve_steps, curve, curve_last_step = [], [], []
    files = {name: os.path.join(run_dir, name) for name in ("metrics.csv", "episodes.csv", "eval.csv")}
    if ckpt is not None:
        agent.load_state_dict(ckpt["agent"])
        optimizer.load_state_dict(ckpt["optimizer"])
        obs_rms.mean, obs_rms.var, obs_rms.count = ckpt["obs_rms"]
        value_rms.mean, value_rms.var, value_rms.count = ckpt["value_rms"]
        raw_obs = np.stack([env.replay(state) for env, state in zip(envs.envs, ckpt["envs"])])
        if not np.array_equal(raw_obs, ckpt["raw_obs"]):
            print("warning: replaying the episodes in progress did not reproduce the checkpoint's observations "
                  "(another MuJoCo build?); continuing from the replayed state", file=sys.stderr)
        eval_env.get_wrapper_attr("load_checkpoint")([ckpt["eval_env"]])
        start_iteration, global_step, wall_before = ckpt["iteration"] + 1, ckpt["global_step"], ckpt["wall_seconds"]
        episode_returns, episode_successes, episode_last_step_successes = ckpt["episodes"]
        curve_steps, curve, curve_last_step = ckpt["curve"]
        for name, size in ckpt["file_sizes"].items():  # forget rows written after the checkpoint
            with open(files[name], "r+") as f:
                f.truncate(size)
        torch.set_rng_state(ckpt["rng"]["torch"])
        np.random.set_state(ckpt["rng"]["numpy"])
        random.setstate(ckpt["rng"]["python"])
        eval_rng.bit_generator.state = ckpt["rng"]["evaluation"]
        print(f"resuming {run_name} from iteration {ckpt['iteration']} (step {global_step:,})")
    csv_files = {name: open(path, "a", newline="") for name, path in files.items()}
    metrics_csv = csv.DictWriter(csv_files["metrics.csv"], fieldnames=list(METRICS))
    episodes_csv = csv.writer(csv_files["episodes.csv"])
    eval_csv = csv.DictWriter(csv_files["eval.csv"], fieldnames=EVAL_COLUMNS)
    if ckpt is None:
        metrics_csv.writeheader()
        episodes_csv.writerow(["global_step", "episodic_return", "episodic_length", "success", "success_last_step"])
        eval_csv.writeheader()
    next_obs = normalize_obs(raw_obs, obs_rms, args.norm_obs)

    def evaluate(greedy: bool):
        """Episodes on the separate evaluation env with frozen normalizer statistics: sampled or argmax. With
        --capture-video the first one is filmed to videos/{policy}-step{global_step}.mp4, and logged to W&B."""
        actor = numpy_mlp(agent.actor)
        policy = "greedy" if greedy else "sampled"
        video_path = os.path.join(run_dir, "videos", f"{policy}-step{global_step:07d}.mp4")
        film = args.capture_video and (args.capture_video_greedy or not greedy)
        successes, last_step_successes, returns = [], [], []
        for episode in range(args.eval_episodes):
            raw, _ = eval_env.reset()
            video = video_writer(video_path, eval_env) if film and episode == 0 else None
            done, total, info = False, 0.0, {}
            while not done:
                if video is not None:
                    video.append_data(video_frame(eval_env))
                logits = actor(normalize_obs(raw[None], obs_rms, args.norm_obs)).reshape(1, ACTION_DIMS, args.num_bins)
                action = logits.argmax(-1) if greedy else sample_action(logits, eval_rng)
                raw, reward, terminated, truncated, info = eval_env.step(bin_values[action[0]])
                total += float(reward)
                done = terminated or truncated
            successes.append(info["episode_success"])
            last_step_successes.append(info["episode_success_last_step"])
            returns.append(total)
            if video is not None:
                video.close()
                if args.track:  # at the step of the synced TensorBoard scalars' global_step
                    wandb.log({f"videos/{policy}": wandb.Video(video_path, format="mp4"), "global_step": global_step})
        return float(np.mean(successes)), float(np.mean(last_step_successes)), float(np.mean(returns))

    # Ctrl-C or SIGTERM ends the run with one line that says how to resume it
    last_checkpoint = f"iteration {ckpt['iteration']} (step {ckpt['global_step']:,})" if ckpt else "none yet"
    resume_command = shlex.join(["python", *sys.argv] + ([] if args.resume else ["--resume"]))
    iteration = start_iteration
    stop_on_signal(lambda: f"during iteration {iteration}/{num_iterations} (step {global_step:,}); last checkpoint: "
                           f"{last_checkpoint}, in {run_dir}; resume with: {resume_command}")
    start_time = time.time()
    for iteration in range(start_iteration, num_iterations + 1):
        iteration_start = time.time()
        if args.anneal_lr:
            frac = 1.0 - (iteration - 1.0) / num_iterations
            optimizer.param_groups[0]["lr"] = frac * args.learning_rate

        # Rollout: only the actor runs per step, in NumPy (a copy taken after the last update); values and log-probs
        # are computed once for the whole batch, in torch, below.
        actor = numpy_mlp(agent.actor)
        for step in range(args.num_steps):
            global_step += args.num_envs
            raw_obs_buf[step] = raw_obs
            obs_buf[step] = next_obs
            action = sample_action(actor(next_obs).reshape(-1, ACTION_DIMS, args.num_bins))
            actions_buf[step] = action

            raw_obs, reward, terminated, truncated, infos = envs.step(bin_values[action])
            next_obs = normalize_obs(raw_obs, obs_rms, args.norm_obs)
            next_obs_buf[step] = next_obs
            rewards[step] = reward
            done = np.logical_or(terminated, truncated)
            terminations[step] = terminated if args.bootstrap_truncation else done
            dones[step] = done
            if done.any():
                final = infos["final_info"]
                for i in np.flatnonzero(done):
                    next_obs_buf[step, i] = normalize_obs(infos["final_obs"][i], obs_rms, args.norm_obs)
                    episode_returns.append(float(final["episode"]["r"][i]))
                    episode_successes.append(float(final["episode_success"][i]))
                    episode_last_step_successes.append(float(final["episode_success_last_step"][i]))
                    episodes_csv.writerow([global_step, episode_returns[-1], int(final["episode"]["l"][i]),
                                           episode_successes[-1], episode_last_step_successes[-1]])

        if args.norm_obs:  # the next rollout is normalized with statistics that include this one
            obs_rms.update(raw_obs_buf.reshape(-1, obs_dim))
            next_obs = normalize_obs(raw_obs, obs_rms, args.norm_obs)

        # Values (de-normalized to the real scale), log-probs and entropies of the whole rollout in one pass
        b_obs = torch.as_tensor(obs_buf.reshape(-1, obs_dim), device=device)
        b_actions = torch.as_tensor(actions_buf.reshape(-1, ACTION_DIMS), device=device)
        v_mean, v_std = (float(value_rms.mean), float(np.sqrt(value_rms.var + 1e-8))) if args.norm_value else (0.0, 1.0)
        with torch.no_grad():
            b_log_probs = agent.get_log_probs(b_obs)
            b_logprobs, b_dim_entropy = action_log_prob(b_log_probs, b_actions), dimension_entropy(b_log_probs)
            values = (agent.get_value(b_obs).cpu().numpy() * v_std + v_mean).astype(np.float64).reshape(rewards.shape)
            next_values = (agent.get_value(torch.as_tensor(next_obs_buf, device=device)).cpu().numpy() * v_std + v_mean).astype(np.float64)
        advantages, returns = compute_gae(rewards, values, next_values, terminations, dones, args.gamma, args.gae_lambda)
        b_advantages = torch.as_tensor(advantages.reshape(-1), dtype=torch.float32, device=device)
        b_returns_real = returns.reshape(-1)
        b_values_real = values.reshape(-1)

        # The critic regresses standardized returns (section 3, "Value normalization"): update the statistics with
        # this batch's targets, then express targets and the old predictions on the new scale.
        if args.norm_value:
            value_rms.update(b_returns_real)
            v_mean, v_std = float(value_rms.mean), float(np.sqrt(value_rms.var + 1e-8))
        b_returns = torch.as_tensor((b_returns_real - v_mean) / v_std, dtype=torch.float32, device=device)
        b_values = torch.as_tensor((b_values_real - v_mean) / v_std, dtype=torch.float32, device=device)

        # Optimizing the policy and value network. Each epoch shuffles the batch once and cuts it into minibatch
        # views; per-minibatch advantage normalization and the clip statistics are computed for the whole epoch at
        # once (the same numbers, fewer small tensor operations: at minibatch 64 each costs more than its math).
        b_inds = np.arange(batch_size)
        clipfracs, loss_terms, epochs_run = [], [], 0
        for epoch in range(args.update_epochs):
            np.random.shuffle(b_inds)
            inds = torch.as_tensor(b_inds, device=device)
            e_advantages = b_advantages[inds]
            if args.norm_adv:
                e_advantages = normalize_per_minibatch(e_advantages, args.minibatch_size)
            epoch_batch = [t[inds] for t in (b_obs, b_actions, b_logprobs, b_returns, b_values)] + [e_advantages]
            minibatches = zip(*(t.split(args.minibatch_size) for t in epoch_batch))
            logratios = []
            for mb_obs, mb_actions, mb_logprobs, mb_returns, mb_values, mb_advantages in minibatches:
                log_probs = agent.get_log_probs(mb_obs)
                newlogprob = action_log_prob(log_probs, mb_actions)
                newvalue = agent.get_value(mb_obs)
                logratio = newlogprob - mb_logprobs
                ratio = logratio.exp()
                logratios.append(logratio.detach())

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
                if args.ent_coef:  # skipped at 0 (the default): autograd would still differentiate 0 * entropy
                    loss = loss - args.ent_coef * dimension_entropy(log_probs).sum(-1).mean()

                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm, foreach=True)
                optimizer.step()
                loss_terms.append(torch.stack([pg_loss.detach(), v_loss.detach()]))
            epochs_run += 1
            with torch.no_grad():
                # calculate approx_kl http://joschu.net/blog/kl-approx.html (of the epoch's last minibatch, as CleanRL)
                approx_kl = ((logratios[-1].exp() - 1) - logratios[-1]).mean()
                clipfracs.append(((torch.stack(logratios).exp() - 1.0).abs() > args.clip_coef).float().mean(1))
            if args.target_kl is not None and approx_kl > args.target_kl:
                break
        loss_sums = torch.stack(loss_terms).sum(0).cpu()

        # A NaN stops the run here, before anything of this iteration is saved: the last checkpoint stays good.
        if not torch.isfinite(loss_sums).all():
            kept = f"the last good checkpoint {ckpt_path} is kept" if os.path.exists(ckpt_path) else "no checkpoint was saved yet"
            print(f"error: non-finite loss at iteration {iteration} (step {global_step:,}); stopping ({kept})", file=sys.stderr)
            sys.exit(1)

        num_updates = epochs_run * (batch_size // args.minibatch_size)
        var_y = np.var(b_returns_real)
        explained_var = np.nan if var_y == 0 else 1 - np.var(b_returns_real - b_values_real) / var_y
        sps = batch_size / (time.time() - iteration_start)

        recent = episode_successes[-args.success_window :]
        success_rate = float(np.mean(recent)) if recent else float("nan")
        episodic_return = float(np.mean(episode_returns[-args.success_window :])) if recent else float("nan")
        curve_steps.append(global_step)
        curve.append(success_rate)
        # the same window scored by success at each episode's last step (EpisodeLog)
        success_rate_last_step = float(np.mean(episode_last_step_successes[-args.success_window :])) if recent else float("nan")
        curve_last_step.append(success_rate_last_step)
        row = {
            "iteration": iteration,
            "global_step": global_step,
            "episodes": len(episode_successes),
            "success_rate": success_rate,
            "success_rate_last_step": success_rate_last_step,
            "episodic_return": episodic_return,
            "policy_entropy": b_dim_entropy.sum(-1).mean().item(),
            "effective_bins": b_dim_entropy.exp().mean().item(),
            "approx_kl": approx_kl.item(),
            "clipfrac": torch.cat(clipfracs).mean().item(),
            "explained_variance": explained_var,
            "value_loss": loss_sums[1].item() / num_updates,
            "policy_loss": loss_sums[0].item() / num_updates,
            "learning_rate": optimizer.param_groups[0]["lr"],
            "epochs": epochs_run,
            "sps": sps,
        }
        metrics_csv.writerow(row)
        for name, tag in METRICS.items():
            if tag and not np.isnan(row[name]):
                writer.add_scalar(tag, row[name], global_step)

        # Periodic evaluation on a separate env, sampled (the paper's protocol) and greedy (argmax)
        if args.eval_interval and (global_step // args.eval_interval > (global_step - batch_size) // args.eval_interval
                                   or iteration == num_iterations):
            evaluation = {"iteration": iteration, "global_step": global_step}
            for policy in ("sampled", "greedy"):
                success, success_last_step, eval_return = evaluate(greedy=policy == "greedy")
                evaluation.update({f"{policy}_success": success, f"{policy}_success_last_step": success_last_step,
                                   f"{policy}_return": eval_return})
                writer.add_scalar(f"eval/{policy}_success_rate", success, global_step)
                writer.add_scalar(f"eval/{policy}_success_rate_last_step", success_last_step, global_step)
                writer.add_scalar(f"eval/{policy}_episodic_return", eval_return, global_step)
            eval_csv.writerow(evaluation)
            print(f"eval at step {global_step:,}, {args.eval_episodes} episodes per policy: sampled success "
                  f"{evaluation['sampled_success']:.2f} last step {evaluation['sampled_success_last_step']:.2f} return "
                  f"{evaluation['sampled_return']:.1f}; greedy success {evaluation['greedy_success']:.2f} last step "
                  f"{evaluation['greedy_success_last_step']:.2f} return {evaluation['greedy_return']:.1f}", flush=True)

        elapsed = wall_before + time.time() - start_time
        left = (num_iterations - iteration) * (time.time() - start_time) / (iteration - start_iteration + 1)
        print(f"iter {iteration}/{num_iterations} step {global_step:,} SPS {sps:,.0f} "
              f"success({len(recent)} ep) {success_rate:.2f} last step {success_rate_last_step:.2f} return {episodic_return:.1f} "
              f"entropy {row['policy_entropy']:.2f} eta {left / 60:.1f} min", flush=True)

        if iteration % args.checkpoint_interval == 0 or iteration == num_iterations:
            for f in csv_files.values():
                f.flush()
            writer.flush()
            save_checkpoint(run_dir, {
                "config": config,
                "iteration": iteration,
                "global_step": global_step,
                "wall_seconds": elapsed,
                "agent": agent.state_dict(),
                "optimizer": optimizer.state_dict(),
                "obs_rms": (obs_rms.mean, obs_rms.var, obs_rms.count),
                "value_rms": (value_rms.mean, value_rms.var, value_rms.count),
                "envs": [env.replay_state() for env in envs.envs],
                "eval_env": eval_env.get_wrapper_attr("get_checkpoint")(),
                "raw_obs": raw_obs,
                "episodes": (episode_returns, episode_successes, episode_last_step_successes),
                "curve": (curve_steps, curve, curve_last_step),
                "file_sizes": {name: os.path.getsize(path) for name, path in files.items()},
                "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                        "evaluation": eval_rng.bit_generator.state},
            })
            last_checkpoint = f"iteration {iteration} (step {global_step:,})"

    for f in csv_files.values():
        f.close()
    summary = {
        "run_name": run_name,
        **success_curve_summary(curve, curve_steps, episode_successes, args.final_episodes),
        **{f"{k}_last_step": v for k, v in success_curve_summary(
            curve_last_step, curve_steps, episode_last_step_successes, args.final_episodes).items() if k != "final_success_episodes"},
        "total_steps": global_step,
        "episodes": len(episode_successes),
        "wall_seconds": wall_before + time.time() - start_time,
    }
    write_json(os.path.join(run_dir, "summary.json"), summary)
    print(json.dumps(summary))
    envs.close()
    eval_env.close()
    writer.close()
    if args.track:
        wandb.finish()
