"""The run plumbing every arm script shares, written once (as CleanRL keeps evaluation in cleanrl_utils).

An arm script keeps its algorithm in plain sight (Args, make_env, the networks, the masker, the rollout, GAE and the
PPO update) and hands this module what it needs, in a few one-line calls:

    run = TrainingRun(args, METRICS, make_env)           # the run folder, --resume, config.json, TensorBoard, W&B
    run.load_pretrained(agent, obs_rms)                  # --init-from: the pretrained actor (nothing without it)
    raw_obs, global_step = run.start(envs, agent=agent, optimizer=optimizer, obs_rms=obs_rms, value_rms=value_rms)
    for iteration in run.iterations():                   # Ctrl-C / SIGTERM end it with one line and the resume command
        ...                                              # the rollout calls run.record_episodes(global_step, done, infos)
        run.end_iteration(global_step, row, policy, loss_sums)  # metrics.csv, evaluation, progress, checkpoint
    run.finish()                                         # summary.json, written last

What lives here: the run folder and its resume logic, checkpoints (every object the arm names, the random states,
the environments' episodes in progress) with a fallback to the previous one, the CSV files and their truncation on
resume, the episode log and success curves, the progress line, signal handling, evaluation (with its own random
generator, so it never moves training's numbers) and its videos, config.json's metadata, summary.json, --init-from's
pretrained file (read and checked against the run before anything is written, loaded by run.load_pretrained), and the
bad-input helpers. This module imports nothing from the arm scripts.
"""

import atexit
import csv
import difflib
import hashlib
import io
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
from dataclasses import asdict

import gymnasium as gym
import imageio
import numpy as np
import torch
from gymnasium.wrappers.utils import RunningMeanStd
from torch.utils.tensorboard import SummaryWriter

# Importing MuJoCo (through metaworld) loads the OpenGL backend that MUJOCO_GL names, and one that is missing fails
# there, with a traceback. Training renders nothing, so MuJoCo is imported without it: only --capture-video loads it.
# Importing metaworld also registers the "Meta-World/MT1" environments that the arms' make_env builds.
mujoco_gl = os.environ.pop("MUJOCO_GL", None)
import metaworld  # noqa: E402

if mujoco_gl is not None:
    os.environ["MUJOCO_GL"] = mujoco_gl

# config.json fields that may change between the sessions of one run: where it lives and what it runs on
PLACEMENT_FIELDS = ("runs_dir", "cuda", "threads")
# Settings added after runs had been recorded without them, with the value those runs had: a config.json that
# lacks one recorded this value (grids.SETTINGS_ADDED_LATER is the same list, for the grids' and report's checks)
SETTINGS_ADDED_LATER = {
    "action_head": "categorical",
    "poisson_temperature": 2.5,
    "init_from": None,
    "critic_warmup_iterations": 0,
    "compile": False,
    "ref_kl_coef": 0.0,
}
# the off-policy arm's own (its configs, and only its, have utility_target), as its runs ran before each existed
OFFPOLICY_SETTINGS_ADDED_LATER = {"q_aggregation": "sum", "q_baseline": "learned", "unmasked_fraction": 0.0}


def with_settings_added_later(config: dict) -> dict:
    """A recorded config with every setting added since filled in with the value the run ran with."""
    added = {**SETTINGS_ADDED_LATER, **(OFFPOLICY_SETTINGS_ADDED_LATER if "utility_target" in config else {})}
    return {**added, **config}


# Flags that change only what a run shows, never what it computes: left out of config.json (its "command" keeps them)
DISPLAY_FLAGS = ("resume", "track", "capture_video", "capture_video_greedy", "keep_checkpoints_at")
# the columns of metrics.csv that this module fills in; the arm's METRICS names them with the arm's own
RUN_METRICS = (
    "iteration",
    "global_step",
    "episodes",
    "success_rate",
    "success_rate_last_step",
    "episodic_return",
    "sps",
    "update_seconds",
)
EVAL_COLUMNS = [
    "iteration",
    "global_step",
    "sampled_success",
    "sampled_success_last_step",
    "sampled_return",
    "greedy_success",
    "greedy_success_last_step",
    "greedy_return",
]
EPISODE_COLUMNS = ["global_step", "episodic_return", "episodic_length", "success", "success_last_step"]


# --- bad input ---------------------------------------------------------------------------------------------------


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
    fail(
        f"unknown MetaWorld task {env_id!r}; closest: {', '.join(close) or 'none'} (all {len(names)}: {' '.join(names)})"
    )


def check_common_args(args) -> None:
    """Reject bad values of the flags every arm shares, before anything is written (an arm checks its own first)."""
    batch_size = args.num_envs * args.num_steps
    if args.num_bins < 2:
        fail(f"--num-bins must be at least 2, got {args.num_bins}")
    if min(args.num_envs, args.num_steps, args.minibatch_size, args.update_epochs, args.threads) < 1:
        fail("--num-envs, --num-steps, --minibatch-size, --update-epochs and --threads must be at least 1")
    if batch_size % args.minibatch_size:
        fail(
            f"the rollout (num_envs * num_steps = {batch_size}) is not a multiple of --minibatch-size {args.minibatch_size}"
        )
    if args.total_timesteps < batch_size:
        fail(f"--total-timesteps {args.total_timesteps} is less than one rollout (num_envs * num_steps = {batch_size})")
    for name in ("gamma", "gae_lambda"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            fail(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(args, name)}")
    if not 0.0 < args.clip_coef < 1.0:
        fail(f"--clip-coef must be in (0, 1), got {args.clip_coef}")
    if args.learning_rate <= 0 or args.max_grad_norm <= 0 or (args.target_kl is not None and args.target_kl <= 0):
        fail("--learning-rate, --max-grad-norm and --target-kl must be positive")
    if (
        min(args.checkpoint_interval, args.success_window, args.final_episodes) < 1
        or args.eval_interval < 0
        or args.eval_episodes < 1
    ):
        fail(
            "--checkpoint-interval, --success-window, --final-episodes, --eval-episodes must be >= 1, --eval-interval >= 0"
        )
    if any(not 0 < step <= args.total_timesteps for step in args.keep_checkpoints_at):
        fail(
            f"--keep-checkpoints-at takes steps in 1..--total-timesteps ({args.total_timesteps}), got "
            f"{' '.join(map(str, args.keep_checkpoints_at))}"
        )
    if not args.poisson_temperature > 0:
        fail(f"--poisson-temperature must be positive, got {args.poisson_temperature}")
    if args.critic_warmup_iterations < 0:
        fail(f"--critic-warmup-iterations must be >= 0, got {args.critic_warmup_iterations}")
    if not args.ref_kl_coef >= 0:
        fail(f"--ref-kl-coef must be >= 0, got {args.ref_kl_coef}")
    if args.ref_kl_coef and args.init_from is None:
        fail("--ref-kl-coef pulls the policy toward the pretrained one: pass --init-from FILE (docs/finetuning.md)")
    if args.capture_video_greedy and not args.capture_video:
        fail("--capture-video-greedy adds the greedy episode to --capture-video's films; pass both")
    if args.capture_video and not args.eval_interval:
        fail("--capture-video films evaluation episodes, and --eval-interval 0 turns evaluation off")
    # flags that several arms share: the masks' (random, utility and off-policy utility arms), the utility critic's
    if hasattr(args, "mask_budget"):
        if not 0.0 <= args.mask_budget < 1.0:
            fail(f"--mask-budget is a fraction of the bins in [0, 1), got {args.mask_budget}")
        if not 0 <= args.mask_warmup_start <= args.mask_warmup_end:
            fail(
                f"the mask warm-up needs 0 <= --mask-warmup-start <= --mask-warmup-end, got {args.mask_warmup_start}, {args.mask_warmup_end}"
            )
        if args.soft_mask_penalty <= 0:
            fail(f"--soft-mask-penalty must be positive, got {args.soft_mask_penalty}")
    if hasattr(args, "utility_threshold") and (
        args.utility_threshold < 0 or args.gumbel_alpha < 0 or args.boost_beta < 0
    ):
        fail("--utility-threshold, --gumbel-alpha and --boost-beta must be >= 0")
    if hasattr(args, "rank_states") and args.rank_states < 1:
        fail(f"--rank-states must be at least 1, got {args.rank_states}")
    if os.path.exists(args.runs_dir) and not os.path.isdir(args.runs_dir):
        fail(f"--runs-dir {args.runs_dir} is a file, not a directory")
    if args.compile and args.cuda:
        fail("--compile compiles the CPU update and --cuda replays each step as a CUDA graph; pass one of them")
    if args.cuda and not torch.cuda.is_available():
        fail("--cuda was given but torch sees no CUDA device")


# --- the environment's episode in progress -------------------------------------------------------------------------


class EpisodeRecorder(gym.Wrapper):
    """Records the current episode of one MetaWorld environment, for two readers.

    The success log: success follows MetaWorld's protocol, an episode succeeds if info["success"] was 1 at any step;
    it is reported as info["episode_success"] at the episode's end, beside RecordEpisodeStatistics' info["episode"].
    The paper never says which definition it scores, so info["episode_success_last_step"] also reports
    info["success"] at the episode's last step: a policy that presses the spring-loaded button and lets go succeeds
    under the first and fails under the second.
    Exact resumption: it keeps MetaWorld's random state (its "checkpoint", in MetaWorld's API) taken just before the
    episode's reset and every action since; `restore_episode` rebuilds the exact mid-episode simulator state from
    them (MuJoCo is deterministic on one CPU build).
    Its info holds only what the run reads: nothing mid-episode, and at the episode's end the entries above.
    MetaWorld's seven per-step diagnostics (grasp_reward, near_object, ...) are read by nothing here, and the vector
    env would merge every one of them into arrays at every step: ~10-15 us of a ~300 us step (issue 42).
    """

    def reset(self, **kwargs):
        self.start = self.env.get_wrapper_attr("get_checkpoint")()
        self.actions, self.success = [], False
        self.last_obs, info = self.env.reset(**kwargs)
        return self.last_obs, info

    def step(self, action):
        self.actions.append(np.array(action, copy=True))
        self.last_obs, reward, terminated, truncated, info = self.env.step(action)
        self.success = self.success or bool(info["success"])
        if not (terminated or truncated):
            return self.last_obs, reward, terminated, truncated, {}
        ended = {"episode_success": float(self.success), "episode_success_last_step": float(info["success"])}
        if "episode" in info:  # RecordEpisodeStatistics' return and length (MetaWorld's MT1 wraps every env in it)
            ended["episode"] = info["episode"]
        return self.last_obs, reward, terminated, truncated, ended

    def episode_state(self) -> dict:
        """What restore_episode needs: MetaWorld's random state at the episode's reset and the actions since."""
        return {"start": self.start, "actions": np.array(self.actions, dtype=np.float32)}

    def restore_episode(self, state: dict):
        """Rebuild the episode in progress of episode_state(): reset from its random state, replay its actions."""
        self.env.get_wrapper_attr("load_checkpoint")([state["start"]])
        obs, _ = self.reset()
        for action in state["actions"]:
            obs, *_ = self.step(action)
        return obs


# --- videos (--capture-video) ----------------------------------------------------------------------------------------

# The camera: MetaWorld's "corner4" shows the gripper and the task's objects up close on every task; MuJoCo's renderer
# draws MetaWorld's corner cameras upside down, so each frame is turned by 180 degrees.
VIDEO_CAMERA, VIDEO_SIZE = "corner4", 240
VIDEO_RENDER = dict(render_mode="rgb_array", camera_name=VIDEO_CAMERA, width=VIDEO_SIZE, height=VIDEO_SIZE)


def make_video_env(make_env, env_id: str, seed: int):
    """The arm's environment, rendering (rendering draws no random number)."""
    env = make_env(env_id, seed, **VIDEO_RENDER)()
    env.unwrapped.model.vis.quality.shadowsize = (
        1024  # small frames need no 4096-px shadow map: 40% less CPU (llvmpipe)
    )
    return env


def video_writer(path: str, env):
    """An MP4 of `env`'s frames (video_frame), one per step: real time at MetaWorld's 80 frames per second."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return imageio.get_writer(path, fps=env.metadata["render_fps"])


def video_frame(env):
    return env.render()[::-1, ::-1]  # turned right side up (VIDEO_CAMERA)


def check_video(make_env, env_id: str):
    """--capture-video: film one frame now, into a file that is thrown away, so that a missing or broken OpenGL backend
    stops the run with one line before anything is written, not with a traceback at its first evaluation."""
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless; MUJOCO_GL=osmesa (software) or glfw (a display) also work
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("ignore")  # GLFW warns before it fails on a machine without a display
        try:
            env = make_video_env(make_env, env_id, 0)
            env.reset()
            with video_writer(os.path.join(tmp, "check.mp4"), env) as video:
                video.append_data(video_frame(env))
            env.close()
        except Exception as e:
            sys.unraisablehook = lambda _: None  # the half-made renderer fails again when collected: keep to one line
            fail(
                f"--capture-video cannot film with MUJOCO_GL={os.environ['MUJOCO_GL']} ({type(e).__name__}: "
                f"{' '.join(str(e).split())}); on a headless Linux machine egl needs libegl1 and libgl1-mesa-dri, "
                f'osmesa needs libosmesa6 (docs/running.md, "Videos")'
            )


# --- files ---------------------------------------------------------------------------------------------------------


def write_json(path, payload):
    """Write atomically: a reader (or a crash) never sees half a file."""
    with open(path + ".tmp", "w") as f:
        json.dump(payload, f, indent=2)
    os.replace(path + ".tmp", path)


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


def changed_settings(recorded: dict, config: dict) -> list:
    """The settings of this invocation that differ from those a run recorded, each as 'name (recorded -> now)'."""
    recorded = with_settings_added_later(recorded)
    return [
        f"{k} ({recorded.get(k)!r} -> {config[k]!r})"
        for k in config
        if k not in PLACEMENT_FIELDS and recorded.get(k) != config[k]
    ]


def save_atomically(payload: dict, path: str, previous: str | None = None):
    """torch.save to path + ".tmp", then rename into place (a crash never leaves half a file at `path`); the file
    that was at `path` becomes `previous` when one is named."""
    torch.save(payload, path + ".tmp")
    if previous is not None and os.path.exists(path):
        os.replace(path, previous)
    os.replace(path + ".tmp", path)


def save_run_checkpoint(run_dir: str, payload: dict):
    """Write checkpoint.pt atomically and keep the one before it as checkpoint.prev.pt, for load_run_checkpoint."""
    save_atomically(payload, os.path.join(run_dir, "checkpoint.pt"), os.path.join(run_dir, "checkpoint.prev.pt"))


def load_run_checkpoint(run_dir: str, device: torch.device):
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
                print(
                    f"warning: cannot read {unreadable[0]}; falling back to the previous checkpoint "
                    f"(iteration {ckpt['iteration']})",
                    file=sys.stderr,
                )
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


def code_revision(script: str) -> dict:
    """Which code made a run. git_revision: the commit, only when the script's folder is the top level of a git
    repository (a copy inside another repository would record that repository's commit), else "unknown";
    git_changes: with uncommitted changes to tracked files (or untracked project sources), the sha256 of their diff
    and their names, else None. code_sha256: the project sources this process runs (the script and every module it
    imported from its folder, this one included), hashed: the same on every machine, with or without git."""
    here = os.path.dirname(os.path.realpath(script))
    files = [getattr(m, "__file__", None) for m in list(sys.modules.values())]
    sources = sorted(
        {
            os.path.realpath(f)
            for f in files
            if isinstance(f, str)
            and os.path.isabs(f)
            and os.path.isfile(f)
            and os.path.dirname(os.path.realpath(f)) == here
        }
        | {os.path.realpath(script)}
    )
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


def run_metadata(script: str, device: torch.device):
    """Package versions, the code revision, the command line, the host and the torch device, for config.json."""
    from importlib.metadata import version

    packages = ["torch", "numpy", "gymnasium", "metaworld", "mujoco", "tyro"]
    return {
        **code_revision(script),
        "python": platform.python_version(),
        "packages": {p: version(p) for p in packages},
        "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
        "host": platform.node(),
        "device": str(device),
    }


# --- checkpointed state ------------------------------------------------------------------------------------------------


def state_of(obj):
    """What a checkpoint keeps of one of the arm's objects (start's keyword arguments)."""
    if isinstance(obj, RunningMeanStd):
        return (obj.mean, obj.var, obj.count)
    if isinstance(obj, np.random.Generator):
        return obj.bit_generator.state
    if isinstance(obj, dict):
        return dict(obj)
    return obj.state_dict()  # torch modules and optimizers


def restore_state(obj, state):
    """Put state_of(obj) back into obj, in place (the arm keeps its references)."""
    if isinstance(obj, RunningMeanStd):
        obj.mean, obj.var, obj.count = state
    elif isinstance(obj, np.random.Generator):
        obj.bit_generator.state = state
    elif isinstance(obj, dict):
        obj.clear()
        obj.update(state)
    else:
        obj.load_state_dict(state)


# --- a pretrained policy (--init-from) ----------------------------------------------------------------------------

OBSERVATION_SIZES = {}  # env_id -> the size of its observations, measured once per process (building MT1 takes seconds)


def observation_size(make_env, env_id: str) -> int:
    """The size of the observations the arm's environment gives on this task, before the arm builds its own."""
    if env_id not in OBSERVATION_SIZES:
        env = make_env(env_id, 0)()
        OBSERVATION_SIZES[env_id] = env.observation_space.shape[0]
        env.close()
    return OBSERVATION_SIZES[env_id]


def read_pretrained(path: str, args, obs_dim: int) -> dict:
    """The pretrain_bc.py file `path` (torch.save of a dict: "actor", the actor's state_dict; "obs_rms", the observation
    statistics it was trained with or None; "recipe", what it was made from), checked against this run's settings: a
    file that cannot be read, or was made for another task, K, head or observation size, stops the run with one line.
    Adds "sha256", the file's hash, which config.json records beside the recipe.

    What the file must share with the run: the task, the vocabulary, the head, the input size, and whether inputs are
    standardized (an actor trained on raw observations reads standardized ones as noise, and the reverse); with the
    Poisson head also its temperature, which shapes the logits the weights were trained to produce."""
    try:
        with open(path, "rb") as f:
            content = f.read()
        payload = torch.load(io.BytesIO(content), map_location="cpu", weights_only=True)
        payload["actor"], payload["obs_rms"]
        recipe = dict(payload["recipe"])
    except Exception as e:
        fail(
            f"--init-from {path} is not a readable pretrain_bc.py file ({type(e).__name__}: {' '.join(str(e).split())})"
        )
    run_values = {
        "env_id": args.env_id,
        "num_bins": args.num_bins,
        "action_head": args.action_head,
        "obs_dim": obs_dim,
        "norm_obs": args.norm_obs,
    }
    if args.action_head == "poisson":
        run_values["poisson_temperature"] = args.poisson_temperature
    differ = [
        f"{name} {recipe.get(name)!r} (this run: {value!r})"
        for name, value in run_values.items()
        if recipe.get(name) != value
    ]
    if differ:
        fail(
            f"--init-from {path} was pretrained with {', '.join(differ)}; pretrain for this run's settings with "
            f"pretrain_bc.py (docs/finetuning.md)"
        )
    return {**payload, "sha256": hashlib.sha256(content).hexdigest()}


# --- the run ---------------------------------------------------------------------------------------------------------

# Dynamo's compilations in this process (each frame it traces, each backward it compiles): MinibatchStep reads it
# around its calls to notice a recompilation, which would mean the compiled step's guards failed mid-run
DYNAMO_COMPILATIONS = [0]


def _count_compilation(_callback_args):
    DYNAMO_COMPILATIONS[0] += 1


def dynamo_compilations() -> int:
    """How many times Dynamo has started compiling in this process, counted from the first call of this function."""
    import torch._dynamo.callback

    handler = torch._dynamo.callback.callback_handler
    if _count_compilation not in handler.start_callbacks:
        handler.register_start_callback(_count_compilation)
    return DYNAMO_COMPILATIONS[0]


class MinibatchStep:
    """One gradient step on a minibatch, as an arm writes it: `step(*minibatch)` computes the losses, calls backward,
    clips and steps its optimizer(s), and returns detached tensors (losses, statistics). It must read nothing but its
    arguments, the networks and the optimizers' state, and never ask the GPU for a value (no .item(), no branch on a
    tensor): what a CUDA graph and a compiled graph need.

    On the CPU the step runs as written. With --cuda the first call captures the whole step (forward, backward,
    gradient clipping, fused Adam) as one CUDA graph, and every call replays it after copying the minibatch into the
    graph's static input buffers: one launch instead of ~100 small kernels, each costing more to launch than to run on
    a 2x64 MLP (issue 24: ~1.2 s per eager 10-epoch GPU update vs ~0.1 s replayed). A graph replays the exact kernels
    it captured, so the learning rate becomes a GPU tensor the graph reads (the arm keeps setting param_groups' "lr"
    as a number; each call copies it over), and Adam runs with capturable=True. Capturing needs a few eager warm-up
    steps; they run on copies' worth of state: parameters and optimizer moments are put back afterwards, so the
    captured run takes exactly the steps it would have taken eagerly, in the same order.

    With --compile (CPU only) the first call compiles the step with torch.compile and every call runs the compiled
    code: the forward pass and the losses as one generated kernel sequence, its backward likewise, with fewer of
    PyTorch's per-operation costs, which dominate at minibatch 64 (docs/speed.md). Compiled code is guarded by the
    values it was traced with, and a learning rate read as a number would be one of them: annealing would recompile it
    every iteration. So the learning rate is a tensor here too, put into param_groups for the call and the number put
    back after it (checkpoints and metrics.csv keep a number). The first call is the run's first step, compiled and
    taken (no warm-up), so the compiled run takes the same steps as an eager one, up to float rounding (the compiled
    kernels sum in another order). A recompilation later in the run is counted (`recompilations`) and reported once."""

    WARMUP_STEPS = 3  # PyTorch's recipe: run the step a few times on a side stream before capturing it

    def __init__(self, step, *optimizers, device: torch.device, compile: bool = False):
        self.step, self.optimizers, self.device, self.compile = step, optimizers, device, compile
        self.graph = self.compiled = self.trainable = None  # trainable: which parameters the last step trained
        self.compile_seconds, self.recompilations = None, 0
        self.first_call = None  # when the iteration's first step began (TrainingRun's update_seconds), then reset

    def __call__(self, *minibatch):
        if self.first_call is None:
            self.first_call = time.perf_counter()
        if self.device.type == "cuda":
            return self._replay(minibatch)
        if self.compile:
            return self._run_compiled(minibatch)
        return self.step(*minibatch)

    def _learning_rate_tensors(self):
        """Give every parameter group a learning-rate tensor (holding its current number) for compiled code to read."""
        self.groups = [group for optimizer in self.optimizers for group in optimizer.param_groups]
        self.lr_tensors = [torch.tensor(float(group["lr"]), device=self.device) for group in self.groups]
        self.lr_values = {id(lr): float(group["lr"]) for group, lr in zip(self.groups, self.lr_tensors)}

    def _copy_learning_rates(self):
        for group, lr in zip(self.groups, self.lr_tensors):
            if group["lr"] != self.lr_values[id(lr)]:  # a new learning rate (annealing): one small copy, no sync
                lr.fill_(group["lr"])
                self.lr_values[id(lr)] = group["lr"]

    def _run_compiled(self, minibatch):
        if self.compiled is None:
            dynamo_compilations()  # counting from here on
            self._learning_rate_tensors()
            self.compiled = torch.compile(self.step)
        # the end of a critic warm-up (--critic-warmup-iterations) gives the actor its gradients back: the step traced
        # without them is due for one new graph, which is no failed guard
        trainable = [p.requires_grad for group in self.groups for p in group["params"]]
        expected_compilation = self.trainable is not None and trainable != self.trainable
        self.trainable = trainable
        numbers = [group["lr"] for group in self.groups]
        self._copy_learning_rates()
        for group, lr in zip(self.groups, self.lr_tensors):
            group["lr"] = lr
        compilations, started = DYNAMO_COMPILATIONS[0], time.perf_counter()
        try:
            outputs = self.compiled(*minibatch)
        finally:
            for group, number in zip(self.groups, numbers):
                group["lr"] = number
        if self.compile_seconds is None:  # the first call: compiled (or loaded from the inductor cache), one step taken
            self.compile_seconds = time.perf_counter() - started
            print(
                f"compiled {getattr(self.step, '__name__', 'the minibatch step')} in {self.compile_seconds:.1f} s "
                f"({DYNAMO_COMPILATIONS[0] - compilations} graphs and resumptions)",
                flush=True,
            )
        elif DYNAMO_COMPILATIONS[0] != compilations and not expected_compilation:
            self.recompilations += 1
        return outputs

    def _replay(self, minibatch):
        # a graph replays the gradients it captured: one captured while the actor was frozen (--critic-warmup-iterations)
        # would keep it frozen, so a change of which parameters train captures the step anew
        if self.graph is None or self.trainable != [p.requires_grad for p in self.params]:
            self._capture(minibatch)
        self._copy_learning_rates()
        torch._foreach_copy_(self.static_inputs, minibatch)
        self.graph.replay()
        return tuple(output.clone() for output in self.static_outputs)  # the next replay overwrites the outputs

    def _capture(self, minibatch):
        self._learning_rate_tensors()
        for group, lr in zip(self.groups, self.lr_tensors):
            group["capturable"], group["lr"] = True, lr
        params = self.params = [p for group in self.groups for p in group["params"]]
        self.trainable = [p.requires_grad for p in params]
        saved_params = [p.detach().clone() for p in params]
        saved_state = {
            p: {k: v.clone() for k, v in optimizer.state[p].items() if torch.is_tensor(v)}
            for optimizer in self.optimizers
            for p in optimizer.state
        }
        self.static_inputs = [t.clone() for t in minibatch]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.WARMUP_STEPS):
                self.step(*self.static_inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_outputs = self.step(*self.static_inputs)
        # put back what the warm-up steps changed, in place (the graph holds these tensors' addresses)
        with torch.no_grad():
            for p, saved in zip(params, saved_params):
                p.copy_(saved)
            for optimizer in self.optimizers:
                for p, state in optimizer.state.items():
                    for k, v in state.items():
                        if torch.is_tensor(v) and p in saved_state:
                            v.copy_(saved_state[p][k])
                        elif torch.is_tensor(v):  # the warm-up created this state: a fresh Adam's is zeros
                            v.zero_()
        for group, lr in zip(self.groups, self.lr_tensors):
            group["lr"] = self.lr_values[id(lr)]  # a number again, for checkpoints and metrics.csv


class TrainingRun:
    """One run of an arm script: its folder runs/{env_id}__{exp_name}__{seed}, and everything written there."""

    def __init__(self, args, metrics: dict, make_env, masks: bool = False):
        """Check the shared flags, then prepare the run folder, before the arm builds anything: report a complete
        run and exit, refuse other settings, load the checkpoint for --resume, write config.json, open TensorBoard
        (and W&B with --track). `metrics` are metrics.csv's columns with their TensorBoard tags (or None); an arm
        that `masks` tokens also gets mask_counts.csv (end_iteration's mask_counts)."""
        args.env_id = resolve_env_id(args.env_id)
        check_common_args(args)
        self.args, self.metrics, self.make_env = args, metrics, make_env
        self.script = getattr(sys.modules["__main__"], "__file__", None) or sys.argv[0]  # the arm script
        self.batch_size = args.num_envs * args.num_steps
        self.num_iterations = args.total_timesteps // self.batch_size
        self.name = f"{args.env_id}__{args.exp_name}__{args.seed}"
        self.dir = os.path.join(args.runs_dir, self.name)
        self.ckpt_path = os.path.join(self.dir, "checkpoint.pt")
        self.device = torch.device("cuda" if args.cuda else "cpu")
        self.minibatch_steps = []  # the arm's gradient steps (minibatch_step), timed for metrics.csv's update_seconds
        self.warned_recompilation = False
        self.config = {k: v for k, v in asdict(args).items() if k not in DISPLAY_FLAGS}
        if args.capture_video:
            check_video(make_env, args.env_id)
            print(
                f"filming evaluation episodes into {os.path.join(self.dir, 'videos')} (MUJOCO_GL={os.environ['MUJOCO_GL']})"
            )

        # A finished run is reported, not repeated, and never stands in for other settings; an unfinished one
        # continues only when asked to.
        if os.path.exists(os.path.join(self.dir, "summary.json")):
            with open(os.path.join(self.dir, "config.json")) as f:
                changed = changed_settings(json.load(f), self.config)
            if changed:
                fail(
                    f"{self.dir} holds a complete run with other settings: {', '.join(changed)}; use another --exp-name or --runs-dir"
                )
            print(f"{self.dir} is already complete (summary.json exists); nothing to do")
            sys.exit(0)
        self.ckpt = load_run_checkpoint(self.dir, self.device) if args.resume else None
        if self.ckpt is not None:
            changed = changed_settings(self.ckpt["config"], self.config)
            if changed:
                fail(
                    f"--resume with different settings than the checkpoint: {', '.join(changed)}; use another --exp-name"
                )
        elif args.resume:
            print(f"no checkpoint in {self.dir}: starting a new run")
        elif os.path.isdir(self.dir) and os.listdir(self.dir):
            fail(f"{self.dir} already holds an unfinished run; pass --resume to continue it or remove the directory")
        self.pretrained = None  # --init-from's file, read and checked before anything is written (load_pretrained)
        if args.init_from is not None:
            self.pretrained = read_pretrained(args.init_from, args, observation_size(make_env, args.env_id))
        os.makedirs(self.dir, exist_ok=True)
        if self.ckpt is None:  # a fresh start (also --resume before the first checkpoint): drop any partial outputs
            for name in os.listdir(self.dir):
                path = os.path.join(self.dir, name)
                if os.path.isfile(path):
                    os.remove(path)
                elif name == "videos":
                    shutil.rmtree(path)
        config_path = os.path.join(self.dir, "config.json")
        # the pretrained file's recipe and hash: what the run started from (metadata: the setting is --init-from's path)
        pretrained = (
            {}
            if self.pretrained is None
            else {"pretrained": {**self.pretrained["recipe"], "sha256": self.pretrained["sha256"]}}
        )
        if self.ckpt is None or not os.path.exists(config_path):
            write_json(
                config_path,
                {
                    **self.config,
                    "run_name": self.name,
                    **run_metadata(self.script, self.device),
                    **pretrained,
                    "resumed": [],
                },
            )
        else:  # keep how the run started; record each resumption (revision, command, host) beside it
            with open(config_path) as f:
                started = json.load(f)
            if pretrained and started.get("pretrained", {}).get("sha256") != self.pretrained["sha256"]:
                print(
                    f"warning: {args.init_from} is not the file this run started from (sha256 differs); the run "
                    f"continues from its checkpoint, which holds everything it took from that file",
                    file=sys.stderr,
                )
            write_json(
                config_path,
                {**started, "resumed": started.get("resumed", []) + [run_metadata(self.script, self.device)]},
            )
        print(f"run {self.name}: writing {self.dir}" + (" (resuming)" if self.ckpt is not None else ""), flush=True)

        if args.track:
            import wandb

            wandb.init(
                project=args.wandb_project_name,
                entity=args.wandb_entity,
                sync_tensorboard=True,
                config=self.config,
                name=self.name,
                id=self.name.replace("/", "-"),
                resume="allow",
                dir=self.dir,
                save_code=True,
            )
        # purge_step drops the events a killed run logged after its last checkpoint
        self.writer = SummaryWriter(self.dir, purge_step=self.ckpt["global_step"] + 1 if self.ckpt else None)
        if self.ckpt is None:
            self.writer.add_text(
                "hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in self.config.items())
            )
        self.csv_headers = {"metrics.csv": list(metrics), "episodes.csv": EPISODE_COLUMNS, "eval.csv": EVAL_COLUMNS}
        if masks:  # how often each (dimension, bin) was masked in each iteration's rollout: the pruned-token heat maps
            self.csv_headers["mask_counts.csv"] = ["iteration", "global_step", "masks"] + [
                f"d{d}_b{k}" for d in range(4) for k in range(args.num_bins)
            ]  # MetaWorld's 4 action dimensions

    def load_pretrained(self, agent, obs_rms):
        """--init-from (nothing without it): the pretrained actor's weights into agent.actor and, when the run
        standardizes observations, the statistics it was trained with into obs_rms. Called before start(), whose
        checkpoint, when resuming, replaces both with what the run had reached."""
        if self.pretrained is None:
            return
        try:
            agent.actor.load_state_dict(self.pretrained["actor"])
        except RuntimeError as e:  # a recipe that does not describe its own weights
            fail(f"--init-from {self.args.init_from}: its weights do not fit this actor ({' '.join(str(e).split())})")
        if self.args.norm_obs:
            stats = self.pretrained["obs_rms"]
            # copies: the prior arm's frozen statistics and the run's moving ones must not share memory
            obs_rms.mean, obs_rms.var, obs_rms.count = (
                stats["mean"].numpy().copy(),
                stats["var"].numpy().copy(),
                float(stats["count"]),
            )

    def minibatch_step(self, step, *optimizers):
        """The arm's gradient step on one minibatch (`step`, stepping `optimizers`) as this run executes it: as
        written on the CPU; with --compile, compiled once; with --cuda, captured once as a CUDA graph and replayed
        (MinibatchStep)."""
        self.minibatch_steps.append(MinibatchStep(step, *optimizers, device=self.device, compile=self.args.compile))
        return self.minibatch_steps[-1]

    def start(self, envs, **state):
        """Reset the environments (or, resuming, rebuild their episodes in progress) and the evaluation environment,
        restore `state` (the arm's networks, optimizers, normalizers, ...: each keyword is a checkpoint entry) and
        the random states from the checkpoint, and open the CSV files. Returns (raw observations, global step)."""
        args, ckpt = self.args, self.ckpt
        self.envs, self.state = envs, state
        self.eval_env = (make_video_env if args.capture_video else lambda make_env, *a: make_env(*a)())(
            self.make_env, args.env_id, args.seed + 10_000
        )
        if args.capture_video:  # however the run ends, free its OpenGL context before MuJoCo shuts OpenGL down
            atexit.register(self.eval_env.close)
        self.eval_rng = np.random.default_rng(args.seed + 10_000)  # evaluation's own stream: it never perturbs training
        raw_obs, _ = envs.reset(seed=args.seed)
        self.eval_env.reset(seed=args.seed + 10_000)
        self.start_iteration, self.global_step, self.wall_before = 1, 0, 0.0
        self.episode_returns, self.episode_successes, self.episode_last_step_successes = [], [], []
        self.curve_steps, self.curve, self.curve_last_step = [], [], []
        paths = {name: os.path.join(self.dir, name) for name in self.csv_headers}
        if ckpt is not None:
            for name, obj in state.items():
                restore_state(obj, ckpt[name])
            raw_obs = np.stack([env.restore_episode(s) for env, s in zip(envs.envs, ckpt["envs"])])
            if not np.array_equal(raw_obs, ckpt["raw_obs"]):
                print(
                    "warning: replaying the episodes in progress did not reproduce the checkpoint's observations "
                    "(another MuJoCo build?); continuing from the replayed state",
                    file=sys.stderr,
                )
            self.eval_env.get_wrapper_attr("load_checkpoint")([ckpt["eval_env"]])
            self.start_iteration, self.global_step, self.wall_before = (
                ckpt["iteration"] + 1,
                ckpt["global_step"],
                ckpt["wall_seconds"],
            )
            self.episode_returns, self.episode_successes, self.episode_last_step_successes = ckpt["episodes"]
            self.curve_steps, self.curve, self.curve_last_step = ckpt["curve"]
            for name, size in ckpt["file_sizes"].items():  # forget rows written after the checkpoint
                with open(paths[name], "r+") as f:
                    f.truncate(size)
            torch.set_rng_state(ckpt["rng"]["torch"])
            np.random.set_state(ckpt["rng"]["numpy"])
            random.setstate(ckpt["rng"]["python"])
            self.eval_rng.bit_generator.state = ckpt["rng"]["evaluation"]
            print(f"resuming {self.name} from iteration {ckpt['iteration']} (step {self.global_step:,})")
        self.csv_paths = paths
        self.csv_files = {name: open(path, "a", newline="") for name, path in paths.items()}
        self.csv_writers = {name: csv.writer(f) for name, f in self.csv_files.items()}
        if ckpt is None:
            for name, header in self.csv_headers.items():
                self.csv_writers[name].writerow(header)
        self.last_checkpoint = f"iteration {ckpt['iteration']} (step {ckpt['global_step']:,})" if ckpt else "none yet"
        return raw_obs, self.global_step

    def iterations(self):
        """The PPO iterations still to run, from the checkpoint's next one: times each (for the SPS column), and
        turns Ctrl-C and SIGTERM into one line saying where the run stopped and the command that resumes it."""
        resume_command = shlex.join(["python", *sys.argv] + ([] if self.args.resume else ["--resume"]))
        self.iteration = self.start_iteration
        stop_on_signal(
            lambda: (
                f"during iteration {self.iteration}/{self.num_iterations} (step {self.global_step:,}); last "
                f"checkpoint: {self.last_checkpoint}, in {self.dir}; resume with: {resume_command}"
            )
        )
        self.start_time = time.time()
        for self.iteration in range(self.start_iteration, self.num_iterations + 1):  # noqa: B020 (the run's counter)
            self.iteration_start = time.time()
            yield self.iteration

    def record_episodes(self, global_step: int, done, infos: dict):
        """Log the episodes that ended at this step (`done` per environment; the vector env's final_info): episodes.csv
        and the success curves."""
        final = infos["final_info"]
        for i in np.flatnonzero(done):
            self.episode_returns.append(float(final["episode"]["r"][i]))
            self.episode_successes.append(float(final["episode_success"][i]))
            self.episode_last_step_successes.append(float(final["episode_success_last_step"][i]))
            self.csv_writers["episodes.csv"].writerow(
                [
                    global_step,
                    self.episode_returns[-1],
                    int(final["episode"]["l"][i]),
                    self.episode_successes[-1],
                    self.episode_last_step_successes[-1],
                ]
            )

    def end_iteration(self, global_step: int, row: dict, policy, losses, mask_counts=None):
        """After the update: stop on a non-finite loss, write metrics.csv's row (the arm's `row` plus the columns of
        RUN_METRICS) and its TensorBoard scalars (and mask_counts.csv's: how often each (dimension, bin) was masked
        in the rollout, shape (4, K)), evaluate when due, print the progress line, save a checkpoint when due.
        `policy()` builds the arm's policy for evaluation: (raw observation, greedy, generator) -> action."""
        args, iteration = self.args, self.iteration
        self.global_step = global_step
        # A NaN stops the run here, before anything of this iteration is saved: the last checkpoint stays good.
        if not torch.isfinite(torch.as_tensor(losses)).all():
            kept = (
                f"the last good checkpoint {self.ckpt_path} is kept"
                if os.path.exists(self.ckpt_path)
                else "no checkpoint was saved yet"
            )
            print(
                f"error: non-finite loss at iteration {iteration} (step {global_step:,}); stopping ({kept})",
                file=sys.stderr,
            )
            sys.exit(1)
        sps = self.batch_size / (time.time() - self.iteration_start)
        # the update's share of the iteration: from its first gradient step to here (the losses above were read back,
        # so under --cuda the GPU work is done)
        started = [step.first_call for step in self.minibatch_steps if step.first_call is not None]
        update_seconds = time.perf_counter() - min(started) if started else float("nan")
        for step in self.minibatch_steps:
            step.first_call = None
            if step.recompilations and not self.warned_recompilation:  # once: a guard that fails keeps failing
                print(
                    f"warning: the compiled {step.step.__name__} was compiled again during iteration {iteration}; "
                    f"the run goes on (correct, slower); TORCH_LOGS=recompiles names the guard that failed",
                    file=sys.stderr,
                    flush=True,
                )
                self.warned_recompilation = True

        recent = self.episode_successes[-args.success_window :]
        success_rate = float(np.mean(recent)) if recent else float("nan")
        # the same window scored by success at each episode's last step (EpisodeRecorder)
        success_rate_last_step = (
            float(np.mean(self.episode_last_step_successes[-args.success_window :])) if recent else float("nan")
        )
        episodic_return = float(np.mean(self.episode_returns[-args.success_window :])) if recent else float("nan")
        self.curve_steps.append(global_step)
        self.curve.append(success_rate)
        self.curve_last_step.append(success_rate_last_step)
        row = {
            **row,
            "iteration": iteration,
            "global_step": global_step,
            "episodes": len(self.episode_successes),
            "success_rate": success_rate,
            "success_rate_last_step": success_rate_last_step,
            "episodic_return": episodic_return,
            "sps": sps,
            "update_seconds": update_seconds,
        }
        self.csv_writers["metrics.csv"].writerow([row[name] for name in self.metrics])
        if mask_counts is not None:
            self.csv_writers["mask_counts.csv"].writerow(
                [iteration, global_step, self.batch_size] + mask_counts.flatten().tolist()
            )
        for name, tag in self.metrics.items():
            if tag and not np.isnan(row[name]):
                self.writer.add_scalar(tag, row[name], global_step)

        # Periodic evaluation on a separate env, sampled (the paper's protocol) and greedy (argmax)
        if args.eval_interval and (
            global_step // args.eval_interval > (global_step - self.batch_size) // args.eval_interval
            or iteration == self.num_iterations
        ):
            self.evaluate(policy())

        elapsed = self.wall_before + time.time() - self.start_time
        left = (
            (self.num_iterations - iteration) * (time.time() - self.start_time) / (iteration - self.start_iteration + 1)
        )
        print(
            f"iter {iteration}/{self.num_iterations} step {global_step:,} SPS {sps:,.0f} "
            f"success({len(recent)} ep) {success_rate:.2f} last step {success_rate_last_step:.2f} return {episodic_return:.1f} "
            f"entropy {row['policy_entropy']:.2f} eta {left / 60:.1f} min",
            flush=True,
        )
        if iteration % args.checkpoint_interval == 0 or iteration == self.num_iterations:
            self.save_checkpoint(elapsed)
        if any(global_step - self.batch_size < step <= global_step for step in args.keep_checkpoints_at):
            save_atomically(
                self.checkpoint_payload(elapsed), os.path.join(self.dir, f"checkpoint_step{global_step}.pt")
            )

    def evaluate(self, act):
        """Episodes on the separate evaluation env with frozen normalizer statistics, sampled and greedy (argmax),
        drawing from evaluation's own generator: eval.csv, TensorBoard, one printed line. With --capture-video the
        first episode of each is filmed to videos/{sampled,greedy}-step{global_step}.mp4, and logged to W&B."""
        args, global_step = self.args, self.global_step
        evaluation = {"iteration": self.iteration, "global_step": global_step}
        for mode in ("sampled", "greedy"):
            greedy = mode == "greedy"
            video_path = os.path.join(self.dir, "videos", f"{mode}-step{global_step:07d}.mp4")
            film = args.capture_video and (args.capture_video_greedy or not greedy)
            successes, last_step_successes, returns = [], [], []
            for episode in range(args.eval_episodes):
                raw, _ = self.eval_env.reset()
                video = video_writer(video_path, self.eval_env) if film and episode == 0 else None
                done, total, info = False, 0.0, {}
                while not done:
                    if video is not None:
                        video.append_data(video_frame(self.eval_env))
                    raw, reward, terminated, truncated, info = self.eval_env.step(act(raw, greedy, self.eval_rng))
                    total += float(reward)
                    done = terminated or truncated
                successes.append(info["episode_success"])
                last_step_successes.append(info["episode_success_last_step"])
                returns.append(total)
                if video is not None:
                    video.close()
                    if args.track:  # at the step of the synced TensorBoard scalars' global_step
                        import wandb

                        wandb.log({f"videos/{mode}": wandb.Video(video_path, format="mp4"), "global_step": global_step})
            evaluation.update(
                {
                    f"{mode}_success": float(np.mean(successes)),
                    f"{mode}_success_last_step": float(np.mean(last_step_successes)),
                    f"{mode}_return": float(np.mean(returns)),
                }
            )
            self.writer.add_scalar(f"eval/{mode}_success_rate", evaluation[f"{mode}_success"], global_step)
            self.writer.add_scalar(
                f"eval/{mode}_success_rate_last_step", evaluation[f"{mode}_success_last_step"], global_step
            )
            self.writer.add_scalar(f"eval/{mode}_episodic_return", evaluation[f"{mode}_return"], global_step)
        self.csv_writers["eval.csv"].writerow([evaluation[name] for name in EVAL_COLUMNS])
        print(
            f"eval at step {global_step:,}, {args.eval_episodes} episodes per policy: sampled success "
            f"{evaluation['sampled_success']:.2f} last step {evaluation['sampled_success_last_step']:.2f} return "
            f"{evaluation['sampled_return']:.1f}; greedy success {evaluation['greedy_success']:.2f} last step "
            f"{evaluation['greedy_success_last_step']:.2f} return {evaluation['greedy_return']:.1f}",
            flush=True,
        )

    def save_checkpoint(self, elapsed: float):
        save_run_checkpoint(self.dir, self.checkpoint_payload(elapsed))
        self.last_checkpoint = f"iteration {self.iteration} (step {self.global_step:,})"

    def checkpoint_payload(self, elapsed: float) -> dict:
        """Everything --resume needs to continue exactly (CSV files flushed first, their sizes recorded)."""
        for f in self.csv_files.values():
            f.flush()
        self.writer.flush()
        return {
            "config": self.config,
            "iteration": self.iteration,
            "global_step": self.global_step,
            "wall_seconds": elapsed,
            **{name: state_of(obj) for name, obj in self.state.items()},
            "envs": [env.episode_state() for env in self.envs.envs],
            "eval_env": self.eval_env.get_wrapper_attr("get_checkpoint")(),
            "raw_obs": np.stack([env.last_obs for env in self.envs.envs]),
            "episodes": (self.episode_returns, self.episode_successes, self.episode_last_step_successes),
            "curve": (self.curve_steps, self.curve, self.curve_last_step),
            "file_sizes": {name: os.path.getsize(path) for name, path in self.csv_paths.items()},
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(),
                "python": random.getstate(),
                "evaluation": self.eval_rng.bit_generator.state,
            },
        }

    def finish(self):
        """summary.json, written last: its presence means the run is complete."""
        for f in self.csv_files.values():
            f.close()
        summary = {
            "run_name": self.name,
            **success_curve_summary(self.curve, self.curve_steps, self.episode_successes, self.args.final_episodes),
            **{
                f"{k}_last_step": v
                for k, v in success_curve_summary(
                    self.curve_last_step, self.curve_steps, self.episode_last_step_successes, self.args.final_episodes
                ).items()
                if k != "final_success_episodes"
            },
            "total_steps": self.global_step,
            "episodes": len(self.episode_successes),
            "wall_seconds": self.wall_before + time.time() - self.start_time,
        }
        write_json(os.path.join(self.dir, "summary.json"), summary)
        print(json.dumps(summary))
        self.envs.close()
        self.eval_env.close()
        self.writer.close()
        if self.args.track:
            import wandb

            wandb.finish()
