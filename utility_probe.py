"""A Monte Carlo ground truth for action-token rankings: is any per-token signal good enough to rank tokens?

    python utility_probe.py runs/button-press-v3__ppo_utility_mask__1
    python utility_probe.py runs/button-press-v3__ppo_utility_mask__1/checkpoint_step151552.pt   # --keep-checkpoints-at
    python utility_probe.py RUN_DIR [RUN_DIR ...] --states 20 --state-stride 257 --rollouts 16 --horizon 20 \\
        --bins-per-dim 8 --out-dir reports/utility_probe
    python utility_probe.py --merge PROBE_OUT_DIR [PROBE_OUT_DIR ...] --out-dir DIR   # one table over earlier probes

Section 5.2 of the paper measures the utility critic only against the policy (Spearman about 0.31) and section 6
concludes that "the per-token signal is too weak to rank". Neither is a measurement of the tokens' true worth. This
probe estimates it. For a run's checkpoint, on a sample of states from the arm's own rollouts, each probed token
(dimension d, bin k) gets a Monte Carlo estimate of its action value:

    Q(s, d, k) = E[ sum_{t<H} gamma^t r_t + gamma^H V(s_H) ]   with a_d = k forced at the first step,

the other three dimensions of the first step and every later step sampled from the arm's own behaviour policy
(its masker included), H = --horizon, gamma and V the run's (V the value critic, de-normalized with the run's value
statistics, section 3 "Value normalization"). Within a (state, dimension), Q and the token's advantage differ by a
constant, so they rank the bins alike. Each signal's ranking of the probed bins is compared with Q's by
scipy.stats.spearmanr, per state and dimension:
- utility_critic: U(s)[d, :], for a checkpoint that has a "utility_critic" (ppo_utility_mask.py, ppo_loss_shaping.py,
  the off-policy arm). Which critic it is (on- or off-policy) is which arm the run is: tables name the arm.
- policy_log_prob: the policy's own, unmasked log pi_d(k | s) (section 5.2's comparison partner).
- random: standard normal scores, drawn afresh per state: what "no signal" looks like at this number of bins and
  states.
- mc_split_half: the Monte Carlo estimate's own noise: the Spearman correlation between the Q estimates of two
  disjoint halves of the rollouts. summary.json and the table add its Spearman-Brown correction 2r / (1 + r), the
  reliability of the full estimate (a negative r counts as 0, so its mean leans high where r hovers near 0), and the
  noise ceiling sqrt(reliability): roughly the correlation a perfect signal would reach against this noisy estimate
  (exact for Pearson correlation, approximate for Spearman).
Per signal: the mean over states of the per-state mean over the 4 dimensions, with a 95% percentile bootstrap
interval across states (scipy.stats.bootstrap, 2000 resamples, seed 0), and the same per dimension.

Choices:
- The behaviour policy is the arm's own, rebuilt from the module that config.json's "command" names (imported, its
  training loop runs only under __main__): observations normalized by module.normalize_obs with the checkpoint's
  statistics, bins mapped by module.Agent.bin_values, sampled by module.sample_action, and the arm's masker at the
  checkpoint's global_step, as its evaluate() applies it: module.utility_logit_offset(U(s), step, args) where the
  module has one (the utility arm; the off-policy arm is expected to keep that interface), the random arm's
  random_mask / mask_to_logit_offset, none otherwise (vanilla, loss shaping). A config with mask settings whose
  module has neither masker is refused rather than probed as an unmasked policy.
- The forced first-step token bypasses the mask: every token's value is estimated, including those the masker
  removes; whether the masker removes the right ones is the question.
- Common random numbers: the global NumPy generator is re-seeded with the same per-state seed before each token, so
  rollout r of every token of a state uses the same noise (first-step samples of the other dimensions, masks, every
  later step). Differences between tokens then come from the forced bin, not from sampling luck; the split halves
  use disjoint rollouts, so they stay independent. --independent-rollouts turns this off (to measure what it buys:
  on 4 states of a 1M-step vanilla button-press checkpoint at the defaults, split-half agreement 0.71 with common
  random numbers, 0.45 without).
- States: the checkpoint's first environment restored exactly (module.make_env(env_id, seed)() and
  EpisodeRecorder.restore_episode of the episode in progress, as --resume does), then walked forward with the behaviour policy;
  the probe states are the walk's steps 0, N, 2N, ... (N = --state-stride), across episode ends (the next episode
  starts as in training). The default N = 257, about half of a 500-step episode and prime to it, spreads the 20
  states over ~10 episodes (each with its own goal) at varied phases; consecutive states of one or two episodes
  (the earlier default, 25) are alike, so their bootstrap interval across states came out too narrow. The walk's random numbers are set apart from the probes', so the states do not depend on
  --rollouts, --horizon or --bins-per-dim.
- Many rollouts from one state: --rollouts copies of the environment walk in lockstep (each step checked equal across
  copies), each runs one rollout per token, batched through one NumPy policy call per step, and is restored between
  tokens: MuJoCo's whole integration state (mj_getState with mjSTATE_INTEGRATION: qpos, qvel, actuator activations,
  mocap, controls, the solver's warm start) plus a deep copy of the MetaWorld env's Python attributes (step counter
  curr_path_length, _prev_obs for the observation's frame stack, the goal, reward-shaping caches). Rollouts step the
  unwrapped MetaWorld env, whose step is what the wrappers pass on (none changes actions or rewards); the tests check
  that a restored state replays the wrapped env's trajectory bit for bit. MetaWorld's own get_env_state /
  set_env_state keep only qpos and qvel: restored that way, a button-press trajectory drifted by up to 0.036 in the
  observation within 30 steps (the mocap target, which the actions move, is not restored), and restoring MuJoCo's
  mjSTATE_FULLPHYSICS without the mocap and warm start fails the bit-for-bit test too.
- Episode ends: a rollout that reaches MetaWorld's 500-step truncation stops there and bootstraps V(final
  observation) if the run did (--bootstrap-truncation, its default) and nothing otherwise, as the arm's GAE does.
- Bins: --bins-per-dim evenly spaced bins of each dimension (always including both ends), 0 for all K.
- A (state, dimension) whose Q estimates are all equal (a dimension that changes nothing there) or whose signal is
  constant has no Spearman correlation: it is left out of the means and counted ("undefined").

Cost: states x 4 x bins x rollouts x horizon environment steps (fewer within `horizon` steps of an episode's end),
plus the walk (states x stride x rollouts) and, once per run, --rollouts environment copies (about 1 s each) that
replay the checkpoint's episode. At the defaults 4 x 8 x 16 x 20 = 10,240 steps per state, 204,800 for 20 states:
measured 3-5 s per state on a 1M-step button-press checkpoint, on 2 cores shared with other jobs (load 4-7), so
about 1.5 minutes per run. The defaults trade cost against the Monte Carlo noise: on that checkpoint they gave a
split-half agreement of 0.67-0.71 (reliability 0.70-0.79, noise ceiling about 0.83); --rollouts 32 halves the noise
variance at twice the cost. A short horizon leans on the value critic's bootstrap (section 3); a longer one leans
less on it and costs proportionally more. Time per state is reported (states.csv, summary.json, the table).

Writes to --out-dir (default reports/utility_probe/, git-ignored): probe.csv (run, arm, state, episode_step, dimension,
signal, spearman), states.csv (per state: episode step, environment steps, seconds), summary.json, probe.md (the
table), figures/probe_spearman.png and, per run, mc_<run>.npz (the probed bins, every rollout's return and the
signals' scores, for re-analysis). Bad input: one line on stderr, exit status 2.
"""

import argparse
import copy
import csv
import dataclasses
import importlib
import json
import shlex
import sys
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import scipy.stats  # noqa: E402
import torch  # noqa: E402
from gymnasium.wrappers.utils import RunningMeanStd  # noqa: E402

ROOT = Path(__file__).resolve().parent
DIMENSIONS = ("x", "y", "z", "gripper")  # MetaWorld's Sawyer arm: end-effector x, y, z and the gripper
SIGNALS = ("utility_critic", "policy_log_prob", "random")
MC_SPLIT_HALF = "mc_split_half"
BOOTSTRAP_REPS = 2000
BOOTSTRAP_SEED = 0
CI_SIZE = 0.95
DEFAULT_OUT_DIR = Path("reports/utility_probe")  # reports/ is git-ignored
# MuJoCo's whole integration state: everything mj_step reads (qpos, qvel, act, mocap, ctrl, applied forces, the
# solver's warm start, time). Derived quantities (positions of bodies and sites) are recomputed by every step.
PHYSICS_STATE = mujoco.mjtState.mjSTATE_INTEGRATION
# Attributes of a MetaWorld env that are not simulator state: the model (changed only at reset), the MjData (saved
# through PHYSICS_STATE), the renderer and constant descriptions. Everything else is deep-copied.
NOT_SIMULATOR_STATE = frozenset(
    {
        "model",
        "data",
        "mujoco_renderer",
        "observation_space",
        "action_space",
        "sawyer_observation_space",
        "goal_space",
        "_random_reset_space",
        "spec",
        "_ezpickle_args",
        "_ezpickle_kwargs",
    }
)


class ProbeError(Exception):
    """Bad input, reported as one line."""


# ---------------------------------------------------------------------------------------------------------------
# A run: its arm's module, settings and checkpoint


@dataclasses.dataclass
class ProbedRun:
    run_dir: Path
    arm: str  # the arm script's name without .py, e.g. ppo_utility_mask
    module: object
    config: dict
    checkpoint: dict
    checkpoint_path: Path

    @property
    def name(self) -> str:
        """The run directory's name; for a kept checkpoint (--keep-checkpoints-at) its step is appended."""
        if self.checkpoint_path.name == "checkpoint.pt":
            return self.run_dir.name
        return f"{self.run_dir.name}_step{int(self.checkpoint['global_step'])}"


def load_run(path: Path) -> ProbedRun:
    """The run's arm module (the script config.json's command names), its settings and its checkpoint: `path` is a
    run directory (its newest checkpoint.pt) or one of the checkpoint files in it (checkpoint_step<N>.pt, kept by
    the arms' --keep-checkpoints-at)."""
    path = Path(path)
    if path.is_file():
        run_dir, checkpoint_path = path.parent, path
    elif path.is_dir():
        run_dir, checkpoint_path = path, path / "checkpoint.pt"
    else:
        raise ProbeError(f"{path} is neither a run directory nor a checkpoint file")
    config_path = run_dir / "config.json"
    try:
        config = json.loads(config_path.read_text())
        script = shlex.split(config["command"])[0]
    except FileNotFoundError:
        raise ProbeError(f"{config_path} does not exist: {run_dir} is not a run directory") from None
    except (ValueError, KeyError, IndexError, TypeError):
        raise ProbeError(f'{config_path} is not a run\'s config.json (no readable "command")') from None
    name = Path(script).name
    if not (name.startswith("ppo_") and name.endswith(".py") and (ROOT / name).is_file()):
        raise ProbeError(f"{config_path}'s command starts with {script!r}, which is not an arm script in {ROOT}")
    if not checkpoint_path.is_file():
        raise ProbeError(f"{checkpoint_path} does not exist: the run has not saved a checkpoint")
    try:
        checkpoint = torch.load(checkpoint_path, weights_only=False, map_location="cpu")
        missing = [k for k in ("config", "agent", "obs_rms", "value_rms", "envs", "global_step") if k not in checkpoint]
    except Exception as e:  # torch raises many kinds for a damaged file
        raise ProbeError(
            f"cannot read {checkpoint_path} ({type(e).__name__}: {' '.join(str(e).split())[:200]})"
        ) from None
    if missing:
        raise ProbeError(f"{checkpoint_path} lacks {', '.join(missing)}: not a checkpoint of an arm script")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    module = importlib.import_module(name[: -len(".py")])
    return ProbedRun(run_dir, name[: -len(".py")], module, checkpoint["config"], checkpoint, checkpoint_path)


# ---------------------------------------------------------------------------------------------------------------
# The arm's behaviour policy, in NumPy, batched


class BehaviourPolicy:
    """The arm's own sampling policy at a checkpoint, its masker included (module docstring, "Choices"), and the
    per-token signals it carries. Every method takes raw (unnormalized) observations of shape (batch, obs_dim)."""

    def __init__(self, module, checkpoint: dict):
        config = checkpoint["config"]
        self.module = module
        field_names = {f.name for f in dataclasses.fields(module.Args)}
        self.args = module.Args(**{k: v for k, v in config.items() if k in field_names})
        self.global_step = int(checkpoint["global_step"])
        self.num_bins = int(self.args.num_bins)
        obs_mean, obs_var, obs_count = checkpoint["obs_rms"]
        self.obs_rms = RunningMeanStd(shape=np.shape(obs_mean))
        self.obs_rms.mean, self.obs_rms.var, self.obs_rms.count = obs_mean, obs_var, obs_count
        value_mean, value_var, _ = checkpoint["value_rms"]
        # the critic predicts standardized returns when norm_value is on (section 3): de-normalize for real values
        self.value_mean, self.value_std = (
            (float(value_mean), float(np.sqrt(value_var + 1e-8))) if self.args.norm_value else (0.0, 1.0)
        )
        agent = module.Agent(len(obs_mean), self.num_bins, self.args.action_head, self.args.poisson_temperature)
        agent.load_state_dict(checkpoint["agent"])
        self.bin_values = agent.bin_values.numpy()
        self.actor, self.critic = module.numpy_actor(agent), module.numpy_mlp(agent.critic)
        self.utility = None
        if "utility_critic" in checkpoint:
            utility_critic = module.UtilityCritic(len(obs_mean), self.num_bins)
            utility_critic.load_state_dict(checkpoint["utility_critic"])
            self.utility = module.numpy_mlp(utility_critic.net)
        if hasattr(module, "utility_logit_offset"):
            if self.utility is None:
                raise ProbeError(f"{module.__name__} masks with a utility critic, but the checkpoint has none")
            self.masker = "utility"
        elif hasattr(module, "random_mask"):
            self.masker = "random"
        elif "mask_budget" in config:
            raise ProbeError(
                f"{module.__name__} has mask settings but neither utility_logit_offset nor random_mask: "
                f"its masker cannot be rebuilt"
            )
        else:
            self.masker = None

    def normalize(self, raw_obs):
        return self.module.normalize_obs(raw_obs, self.obs_rms, self.args.norm_obs)

    def _table(self, net, x):
        return net(x).reshape(-1, len(DIMENSIONS), self.num_bins)

    def logit_offset(self, x):
        """The masker's logit offset for normalized observations x, as the arm's evaluate() applies it."""
        if self.masker == "utility":
            return self.module.utility_logit_offset(self._table(self.utility, x), self.global_step, self.args)[0]
        if self.masker == "random":
            num_masked = self.module.masked_bins_per_dim(self.global_step, self.args)
            return self.module.mask_to_logit_offset(
                self.module.random_mask(len(x), self.num_bins, num_masked), self.args
            )
        return 0.0

    def sample(self, raw_obs):
        """One bin per dimension, shape (batch, 4), from the masked distribution (global NumPy generator)."""
        x = self.normalize(raw_obs)
        return self.module.sample_action(self.actor(x) + self.logit_offset(x))

    def value(self, raw_obs):
        """V(s) on the real return scale, shape (batch,)."""
        return self.critic(self.normalize(raw_obs))[:, 0].astype(np.float64) * self.value_std + self.value_mean

    def token_scores(self, raw_obs, rng: np.random.Generator) -> dict:
        """Each signal's score of every token at one state, shape (4, K): the utility critic (if the run has one),
        the policy's own unmasked log-probabilities and a random reference."""
        x = self.normalize(raw_obs[None])
        logits = self.actor(x)[0].astype(np.float64)
        scores = {"policy_log_prob": logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)}
        if self.utility is not None:
            scores["utility_critic"] = self._table(self.utility, x)[0]
        scores["random"] = rng.standard_normal(logits.shape)
        return scores


# ---------------------------------------------------------------------------------------------------------------
# Saving and restoring MetaWorld's simulator state


def save_simulator_state(env):
    """Everything a MetaWorld step depends on: MuJoCo's integration state and the env's Python-side state."""
    unwrapped = env.unwrapped
    physics = np.empty(mujoco.mj_stateSize(unwrapped.model, PHYSICS_STATE))
    mujoco.mj_getState(unwrapped.model, unwrapped.data, physics, PHYSICS_STATE)
    python = copy.deepcopy({k: v for k, v in vars(unwrapped).items() if k not in NOT_SIMULATOR_STATE})
    return physics, python


def restore_simulator_state(env, state):
    """Put a MetaWorld env back into a state from save_simulator_state (the env the state came from: the model,
    which MetaWorld changes at each reset, is not saved)."""
    physics, python = state
    unwrapped = env.unwrapped
    mujoco.mj_setState(unwrapped.model, unwrapped.data, physics, PHYSICS_STATE)
    vars(unwrapped).update(copy.deepcopy(python))  # copied again: a step may change arrays in place


def simulator_step(env, action):
    """One step of the unwrapped MetaWorld env (what the wrappers pass on): (observation, reward, truncated)."""
    obs, reward, _terminated, truncated, _info = env.unwrapped.step(action)  # MetaWorld never terminates
    return obs, float(reward), bool(truncated)


# ---------------------------------------------------------------------------------------------------------------
# Rollouts


class LockstepEnvs:
    """Identical copies of one environment, one per rollout, that walk the same trajectory together and branch into
    one rollout each from a probe state (module docstring, "Many rollouts from one state")."""

    def __init__(self, envs, raw_obs):
        self.envs, self.raw_obs = list(envs), np.asarray(raw_obs)
        self.walk_steps = self.rollout_steps = 0  # environment steps taken, summed over the copies

    @classmethod
    def from_checkpoint(cls, module, env_id: str, seed: int, episode_in_progress: dict, copies: int):
        """`copies` environments in the exact state of a checkpoint's environment (EpisodeRecorder.restore_episode, as --resume)."""
        envs, observations = [], []
        for _ in range(copies):
            env = module.make_env(env_id, seed)()
            env.reset(seed=seed)
            observations.append(env.restore_episode(episode_in_progress))
            envs.append(env)
        lockstep = cls(envs, observations[0])
        lockstep._check_identical(observations, "after replaying the checkpoint's episode")
        return lockstep

    def _check_identical(self, observations, when: str):
        if any(not np.array_equal(o, observations[0]) for o in observations[1:]):
            raise RuntimeError(f"the environment copies diverged {when}: MuJoCo is not deterministic here")

    def episode_step(self) -> int:
        return int(self.envs[0].unwrapped.curr_path_length)

    def walk(self, policy: BehaviourPolicy, steps: int):
        """`steps` steps of the behaviour policy, the same action in every copy, through the full wrapper stack (a new
        episode begins as in training)."""
        for _ in range(steps):
            action = policy.bin_values[policy.sample(self.raw_obs[None])[0]]
            results = [env.step(action) for env in self.envs]
            self.walk_steps += len(self.envs)
            observations = [r[0] for r in results]
            if results[0][2] or results[0][3]:
                observations = [env.reset()[0] for env in self.envs]
            self._check_identical(observations, f"at episode step {self.episode_step()}")
            self.raw_obs = observations[0]

    def token_returns(
        self,
        policy: BehaviourPolicy,
        tokens,
        horizon: int,
        gamma: float,
        bootstrap_truncation: bool,
        seed: int,
        common_random_numbers: bool = True,
    ):
        """Discounted H-step returns plus the bootstrap, shape (len(tokens), copies): row i has the first step's
        dimension d forced to bin k for tokens[i] = (d, k), one rollout per copy. The global NumPy generator is seeded
        with `seed` before every token (common random numbers) or, without them, once before the first. The copies
        end where they began."""
        saved = [save_simulator_state(env) for env in self.envs]
        returns = np.zeros((len(tokens), len(self.envs)))
        np.random.seed(seed)
        for i, (dimension, forced_bin) in enumerate(tokens):
            if common_random_numbers:
                np.random.seed(seed)
            for env, state in zip(self.envs, saved):
                restore_simulator_state(env, state)
            obs = np.repeat(self.raw_obs[None], len(self.envs), axis=0)
            discount, truncated = 1.0, False
            for t in range(horizon):
                bins = policy.sample(obs)
                if t == 0:
                    bins[:, dimension] = forced_bin  # after sampling: the forced token bypasses the mask
                steps = [simulator_step(env, policy.bin_values[b]) for env, b in zip(self.envs, bins)]
                self.rollout_steps += len(self.envs)
                obs = np.stack([s[0] for s in steps])
                returns[i] += discount * np.array([s[1] for s in steps])
                discount *= gamma
                truncated = steps[0][2]  # every copy is at the same episode step, so all truncate together
                if truncated:
                    break
            if not truncated or bootstrap_truncation:
                returns[i] += discount * policy.value(obs)
        for env, state in zip(self.envs, saved):
            restore_simulator_state(env, state)
        return returns


def probed_bins(num_bins: int, bins_per_dim: int) -> np.ndarray:
    """`bins_per_dim` evenly spaced bin indices, both ends included (0: all K)."""
    if bins_per_dim == 0 or bins_per_dim >= num_bins:
        return np.arange(num_bins)
    return np.unique(np.round(np.linspace(0, num_bins - 1, bins_per_dim)).astype(int))


# ---------------------------------------------------------------------------------------------------------------
# Statistics


def spearman_by_dimension(scores, estimates) -> np.ndarray:
    """Spearman correlation between two rankings of the same bins, per dimension: arrays of shape (4, bins) -> (4,).
    NaN where either is constant (no ranking to compare)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.stats.ConstantInputWarning)
        return np.array([scipy.stats.spearmanr(s, e).statistic for s, e in zip(scores, estimates)], dtype=float)


def split_half_agreement(returns) -> np.ndarray:
    """The Monte Carlo estimate's own noise: Spearman correlation, per dimension, between the mean returns of the
    first and the second half of the rollouts, for returns of shape (4, bins, rollouts)."""
    half = returns.shape[-1] // 2
    return spearman_by_dimension(returns[..., :half].mean(-1), returns[..., half : 2 * half].mean(-1))


def spearman_brown(split_half):
    """The reliability of an estimate from all rollouts, given the correlation of its two halves: 2r / (1 + r), with a
    negative r read as no reliability (0; 2r / (1 + r) would reach minus infinity at r = -1). NaN stays NaN."""
    split_half = np.clip(np.asarray(split_half, dtype=float), 0.0, None)
    return 2 * split_half / (1 + split_half)


def bootstrap_interval(values):
    """Mean and 95% percentile bootstrap interval across states of per-state values (NaN: left out)."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return {"mean": None, "ci": [None, None], "n": 0}
    if len(values) < 2 or np.all(values == values[0]):
        return {
            "mean": float(values.mean()),
            "ci": [float(values.mean())] * 2 if len(values) > 1 else [None, None],
            "n": len(values),
        }
    result = scipy.stats.bootstrap(
        (values,),
        np.mean,
        n_resamples=BOOTSTRAP_REPS,
        confidence_level=CI_SIZE,
        method="percentile",
        random_state=BOOTSTRAP_SEED,
    )
    return {
        "mean": float(values.mean()),
        "ci": [float(result.confidence_interval.low), float(result.confidence_interval.high)],
        "n": len(values),
    }


def state_means(per_dimension):
    """Per-state mean over the dimensions where it is defined, shape (states, 4) -> (states,)."""
    per_dimension = np.asarray(per_dimension, dtype=float)
    defined = ~np.isnan(per_dimension)
    sums = np.where(defined, per_dimension, 0.0).sum(-1)
    with np.errstate(invalid="ignore"):
        return np.where(defined.any(-1), sums / defined.sum(-1), np.nan)


def summarize_correlations(per_dimension) -> dict:
    """Mean with its bootstrap interval across states of the per-state mean, overall and per dimension; undefined
    (state, dimension) pairs are counted."""
    per_dimension = np.asarray(per_dimension, dtype=float)
    return {
        **bootstrap_interval(state_means(per_dimension)),
        "per_dimension": {name: bootstrap_interval(per_dimension[:, d]) for d, name in enumerate(DIMENSIONS)},
        "undefined": int(np.isnan(per_dimension).sum()),
    }


# ---------------------------------------------------------------------------------------------------------------
# Probing a run


@dataclasses.dataclass
class ProbeSettings:
    states: int = 20
    state_stride: int = 257
    rollouts: int = 16
    horizon: int = 20
    bins_per_dim: int = 8
    seed: int = 0
    common_random_numbers: bool = True


@dataclasses.dataclass
class RunProbe:
    """A probed run: returns has shape (states, 4, bins, rollouts); scores maps each signal to shape (states, 4, K);
    correlations maps each signal and MC_SPLIT_HALF to shape (states, 4); per state, its episode step, the
    environment steps its rollouts took and their seconds."""

    run: ProbedRun
    bins: np.ndarray
    returns: np.ndarray
    scores: dict
    correlations: dict
    episode_steps: list
    env_steps: list
    seconds: list
    walk_env_steps: int


def probe_run(run: ProbedRun, settings: ProbeSettings, log=print) -> RunProbe:
    """Probe `settings.states` states of a run's own rollouts (module docstring)."""
    policy = BehaviourPolicy(run.module, run.checkpoint)
    bins = probed_bins(policy.num_bins, settings.bins_per_dim)
    tokens = [(d, k) for d in range(len(DIMENSIONS)) for k in bins]
    gamma, bootstrap_truncation = float(run.config["gamma"]), bool(run.config.get("bootstrap_truncation", True))
    envs = LockstepEnvs.from_checkpoint(
        run.module, run.config["env_id"], int(run.config["seed"]), run.checkpoint["envs"][0], settings.rollouts
    )
    if "raw_obs" in run.checkpoint and not np.array_equal(envs.raw_obs, np.asarray(run.checkpoint["raw_obs"])[0]):
        print(
            f"warning: replaying {run.name}'s episode in progress did not reproduce its checkpoint's observation "
            f"(another MuJoCo build?); probing from the replayed state",
            file=sys.stderr,
        )
    # the walk draws from its own stream, set aside while the probes re-seed the global generator
    walk_rng_state = np.random.RandomState(settings.seed).get_state()
    returns = np.zeros((settings.states, len(DIMENSIONS), len(bins), settings.rollouts))
    scores = {name: [] for name in SIGNALS}
    episode_steps, env_steps, seconds = [], [], []
    for state in range(settings.states):
        if state:
            np.random.set_state(walk_rng_state)
            envs.walk(policy, settings.state_stride)
            walk_rng_state = np.random.get_state()
        start, steps_before = time.perf_counter(), envs.rollout_steps
        rollout_seed = int(np.random.SeedSequence([settings.seed, state]).generate_state(1)[0])
        returns[state] = envs.token_returns(
            policy, tokens, settings.horizon, gamma, bootstrap_truncation, rollout_seed, settings.common_random_numbers
        ).reshape(returns.shape[1:])
        for name, table in policy.token_scores(envs.raw_obs, np.random.default_rng([settings.seed, state])).items():
            scores[name].append(table)
        seconds.append(time.perf_counter() - start)
        env_steps.append(envs.rollout_steps - steps_before)
        episode_steps.append(envs.episode_step())
        log(
            f"{run.name}: state {state + 1}/{settings.states} (episode step {episode_steps[-1]}): "
            f"{env_steps[-1]:,} env steps, {seconds[-1]:.1f} s"
        )
    scores = {name: np.array(tables) for name, tables in scores.items() if tables}
    mean_returns = returns.mean(-1)
    correlations = {
        name: np.array([spearman_by_dimension(table[s][:, bins], mean_returns[s]) for s in range(settings.states)])
        for name, table in scores.items()
    }
    correlations[MC_SPLIT_HALF] = np.array([split_half_agreement(r) for r in returns])
    return RunProbe(
        run, bins, returns, scores, correlations, episode_steps, env_steps, seconds, walk_env_steps=envs.walk_steps
    )


# ---------------------------------------------------------------------------------------------------------------
# Outputs


def summarize_probe(probe: RunProbe) -> dict:
    """summary.json's entry for one run: every signal's correlation with the Monte Carlo ranking, the estimate's own
    noise (split half, Spearman-Brown reliability, noise ceiling) and the cost."""
    split_half = probe.correlations[MC_SPLIT_HALF]
    reliability = spearman_brown(split_half)
    ceiling = np.sqrt(reliability)
    constant = int(np.sum(np.ptp(probe.returns.mean(-1), axis=-1) == 0))
    return {
        "run_dir": str(probe.run.run_dir),
        "checkpoint": probe.run.checkpoint_path.name,
        "arm": probe.run.arm,
        "env_id": probe.run.config["env_id"],
        "global_step": int(probe.run.checkpoint["global_step"]),
        "num_bins": int(probe.run.config["num_bins"]),
        "probed_bins": probe.bins.tolist(),
        "states": len(probe.seconds),
        "signals": {
            name: summarize_correlations(probe.correlations[name]) for name in SIGNALS if name in probe.correlations
        },
        "monte_carlo": {
            "split_half": summarize_correlations(split_half),
            "reliability_spearman_brown": summarize_correlations(reliability),
            "noise_ceiling": summarize_correlations(ceiling),
            "constant_pairs": constant,
        },
        "cost": {
            "env_steps_per_state": float(np.mean(probe.env_steps)),
            "seconds_per_state": float(np.mean(probe.seconds)),
            "walk_env_steps": probe.walk_env_steps,
        },
    }


def experiment_name(summary: dict) -> str:
    """The run's exp_name (one arm can run under several, e.g. two shaping coefficients), from its directory's name
    <env_id>__<exp_name>__<seed>[...]; the arm's name where the directory is named otherwise."""
    parts = Path(summary["run_dir"]).name.split("__")
    return parts[1] if len(parts) == 3 and parts[0] == summary["env_id"] else summary["arm"]


def across_runs(summaries) -> list:
    """The study's unit is the seed: per (task, exp_name, checkpoint step) with at least 2 probed runs, each signal's
    run-level mean Spearman (and the Monte Carlo estimate's split-half agreement and noise ceiling), averaged over the
    runs with a 95% percentile bootstrap interval across runs."""
    groups = {}
    for summary in summaries:
        groups.setdefault((summary["env_id"], experiment_name(summary), summary["global_step"]), []).append(summary)
    rows = []
    for (env_id, exp_name, step), members in sorted(groups.items()):
        if len(members) < 2:
            continue
        names = [n for n in SIGNALS if any(n in m["signals"] for m in members)]
        signals = {
            n: bootstrap_interval(
                [np.nan if m["signals"].get(n, {}).get("mean") is None else m["signals"][n]["mean"] for m in members]
            )
            for n in names
        }
        for name in ("split_half", "noise_ceiling"):  # the Monte Carlo estimate's own reliability, across runs too
            signals[name] = bootstrap_interval(
                [np.nan if m["monte_carlo"][name]["mean"] is None else m["monte_carlo"][name]["mean"] for m in members]
            )
        rows.append(
            {"env_id": env_id, "exp_name": exp_name, "global_step": step, "runs": len(members), "signals": signals}
        )
    return rows


def correlation_rows(probe: RunProbe):
    """probe.csv's rows for one run: one per state, dimension and signal (MC_SPLIT_HALF included)."""
    for name, table in probe.correlations.items():
        for state, per_dimension in enumerate(table):
            for d, value in enumerate(per_dimension):
                yield {
                    "run": probe.run.name,
                    "arm": probe.run.arm,
                    "state": state,
                    "episode_step": probe.episode_steps[state],
                    "dimension": DIMENSIONS[d],
                    "signal": name,
                    "spearman": "" if np.isnan(value) else f"{value:.6f}",
                }


def format_interval(summary: dict) -> str:
    if summary["mean"] is None:
        return "n/a"
    if summary["ci"][0] is None:
        return f"{summary['mean']:.3f}"
    return f"{summary['mean']:.3f} [{summary['ci'][0]:.3f}, {summary['ci'][1]:.3f}]"


def markdown_report(summaries, settings: ProbeSettings) -> str:
    sampling = (
        "common random numbers across the tokens of a state"
        if settings.common_random_numbers
        else "independent rollouts per token"
    )
    lines = [
        "# Utility probe: per-token signals against a Monte Carlo ranking",
        "",
        f"Settings: {settings.states} states {settings.state_stride} steps apart, {settings.rollouts} rollouts per "
        f"token, horizon {settings.horizon} plus the value critic's bootstrap, "
        f"{'all' if settings.bins_per_dim == 0 else settings.bins_per_dim} bins per dimension, seed "
        f"{settings.seed}, {sampling}.",
        "",
        "Each cell: the mean over states of the per-state mean (over the dimensions) Spearman correlation with the "
        f"Monte Carlo ranking of the probed bins, with a {CI_SIZE:.0%} bootstrap interval across states "
        f"({BOOTSTRAP_REPS} resamples, seed {BOOTSTRAP_SEED}); per dimension the same over states. `undefined`: "
        "(state, dimension) pairs without a correlation (a constant ranking), left out. The Monte Carlo rows are "
        "its own noise: the split-half agreement, its Spearman-Brown reliability and the noise ceiling "
        "sqrt(reliability), about the best a perfect signal could reach against this estimate.",
        "",
    ]
    pooled = across_runs(summaries)
    if pooled:
        lines += [
            "## Across runs",
            "",
            "Per task, exp_name and checkpoint step with at least 2 probed runs (seeds): the mean over runs of each run's "
            f"mean Spearman (the first column of its own table below), with a {CI_SIZE:.0%} bootstrap interval across "
            "runs; the Monte Carlo estimate's split-half agreement (its reliability per checkpoint: low where the "
            "tokens barely differ, and there the noise ceiling overstates what a signal could reach) and noise "
            "ceiling likewise.",
            "",
            "| task | exp_name | step | runs | "
            + " | ".join(n.replace("_", " ") for n in SIGNALS)
            + " | split-half | noise ceiling |",
            "|---|---|---|---|" + "---|" * (len(SIGNALS) + 2),
        ]
        for row in pooled:
            lines.append(
                f"| {row['env_id']} | {row['exp_name']} | {row['global_step']:,} | {row['runs']} | "
                + " | ".join(format_interval(row["signals"][n]) if n in row["signals"] else "n/a" for n in SIGNALS)
                + f" | {format_interval(row['signals']['split_half'])}"
                + f" | {format_interval(row['signals']['noise_ceiling'])} |"
            )
        lines.append("")
    for summary in summaries:
        lines += [
            f"## {Path(summary['run_dir']).name} ({summary.get('checkpoint', 'checkpoint.pt')})",
            "",
            f"Arm `{summary['arm']}`, {summary['env_id']}, checkpoint at step {summary['global_step']:,}, "
            f"K = {summary['num_bins']}, bins probed: {', '.join(map(str, summary['probed_bins']))}. Cost: "
            f"{summary['cost']['env_steps_per_state']:,.0f} environment steps and "
            f"{summary['cost']['seconds_per_state']:.1f} s per state "
            f"(plus {summary['cost']['walk_env_steps']:,} steps walking between states).",
            "",
            "| signal | mean Spearman [95% CI] | " + " | ".join(DIMENSIONS) + " | undefined |",
            "|---|---|" + "---|" * len(DIMENSIONS) + "---|",
        ]
        rows = [
            (f"utility critic of {summary['arm']}" if name == "utility_critic" else name.replace("_", " "), value)
            for name, value in summary["signals"].items()
        ]
        rows += [
            (f"Monte Carlo: {name.replace('_', ' ')}", summary["monte_carlo"][name])
            for name in ("split_half", "reliability_spearman_brown", "noise_ceiling")
        ]
        for label, value in rows:
            lines.append(
                f"| {label} | {format_interval(value)} | "
                + " | ".join(format_interval(value["per_dimension"][d]) for d in DIMENSIONS)
                + f" | {value['undefined']} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot_probes(probes, path: Path):
    """Per run: every state's mean Spearman correlation per signal (points), the mean with its bootstrap interval, and
    the Monte Carlo estimate's noise ceiling (dashed; its interval shaded)."""
    fig, axes = plt.subplots(1, len(probes), figsize=(4.5 * len(probes), 4.2), squeeze=False, sharey=True)
    rng = np.random.default_rng(0)  # jitter only
    for ax, probe in zip(axes[0], probes):
        names = [n for n in SIGNALS if n in probe.correlations] + [MC_SPLIT_HALF]
        for i, name in enumerate(names):
            values = state_means(probe.correlations[name])
            values = values[~np.isnan(values)]
            ax.scatter(i + rng.uniform(-0.15, 0.15, len(values)), values, s=12, alpha=0.5, color=f"C{i}")
            summary = bootstrap_interval(values)
            if summary["ci"][0] is not None:
                ax.errorbar(
                    i + 0.3,
                    summary["mean"],
                    yerr=[[summary["mean"] - summary["ci"][0]], [summary["ci"][1] - summary["mean"]]],
                    fmt="o",
                    color="black",
                    capsize=4,
                )
        ceiling = summarize_probe(probe)["monte_carlo"]["noise_ceiling"]
        if ceiling["mean"] is not None:
            ax.axhline(ceiling["mean"], color="gray", linestyle="--", label="noise ceiling")
            if ceiling["ci"][0] is not None:
                ax.axhspan(*ceiling["ci"], color="gray", alpha=0.15)
            ax.legend(loc="lower right", fontsize=8)
        ax.axhline(0.0, color="black", linewidth=0.5)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(
            [
                f"U ({probe.run.arm})"
                if n == "utility_critic"
                else "MC split half"
                if n == MC_SPLIT_HALF
                else n.replace("_", "\n")
                for n in names
            ],
            fontsize=8,
        )
        ax.set_title(f"{probe.run.name}\nstep {int(probe.run.checkpoint['global_step']):,}", fontsize=9)
        ax.set_ylim(-1.05, 1.05)
    axes[0][0].set_ylabel("Spearman vs Monte Carlo ranking\n(per state, mean over dimensions)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(probes, settings: ProbeSettings, out_dir: Path) -> Path:
    """probe.csv, states.csv, summary.json, probe.md, figures/probe_spearman.png and mc_<run>.npz in out_dir."""
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    with open(out_dir / "probe.csv", "w", newline="") as f:
        writer = csv.DictWriter(
            f, fieldnames=["run", "arm", "state", "episode_step", "dimension", "signal", "spearman"]
        )
        writer.writeheader()
        for probe in probes:
            writer.writerows(correlation_rows(probe))
    with open(out_dir / "states.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "state", "episode_step", "env_steps", "seconds"])
        for probe in probes:
            for state, (episode_step, steps, seconds) in enumerate(
                zip(probe.episode_steps, probe.env_steps, probe.seconds)
            ):
                writer.writerow([probe.run.name, state, episode_step, steps, f"{seconds:.3f}"])
    for probe in probes:
        np.savez_compressed(
            out_dir / f"mc_{probe.run.name}.npz",
            bins=probe.bins,
            returns=probe.returns,
            episode_steps=np.array(probe.episode_steps),
            **{f"scores_{name}": table for name, table in probe.scores.items()},
        )
    plot_probes(probes, out_dir / "figures" / "probe_spearman.png")
    return write_summaries(
        [summarize_probe(probe) for probe in probes],
        settings,
        out_dir,
        "\n![per-state Spearman](figures/probe_spearman.png)\n",
    )


def write_summaries(summaries, settings: ProbeSettings, out_dir: Path, figures: str = "") -> Path:
    """summary.json (settings, each run's summary, the across-runs table) and probe.md (then `figures`) in out_dir."""
    (out_dir / "summary.json").write_text(
        json.dumps(
            {"settings": dataclasses.asdict(settings), "runs": summaries, "across_runs": across_runs(summaries)},
            indent=2,
        )
    )
    path = out_dir / "probe.md"
    path.write_text(markdown_report(summaries, settings) + figures)
    return path


def merge_probes(probe_dirs, out_dir: Path) -> Path:
    """summary.json and probe.md over the runs of several earlier probes (e.g. one per run, run in parallel), which
    must share their settings; their per-state CSVs and figures stay in their own folders."""
    settings, summaries = None, []
    for probe_dir in probe_dirs:
        try:
            data = json.loads((Path(probe_dir) / "summary.json").read_text())
        except (OSError, ValueError) as e:
            raise ProbeError(f"no readable summary.json in {probe_dir} ({e.__class__.__name__})") from None
        if settings is not None and data["settings"] != settings:
            raise ProbeError(
                f"{probe_dir} was probed with other settings ({data['settings']}) than the first ({settings})"
            )
        settings = data["settings"]
        summaries += data["runs"]
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_summaries(summaries, ProbeSettings(**settings), out_dir)


# ---------------------------------------------------------------------------------------------------------------
# Command line


class OneLineParser(argparse.ArgumentParser):
    """Bad flags: one line and exit status 2, like every other bad input."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def check_settings(settings: ProbeSettings):
    if min(settings.states, settings.state_stride, settings.horizon) < 1:
        raise ProbeError("--states, --state-stride and --horizon must be at least 1")
    if settings.rollouts < 2:
        raise ProbeError(
            f"--rollouts must be at least 2 (the split-half agreement needs two halves), got {settings.rollouts}"
        )
    if settings.bins_per_dim == 1 or settings.bins_per_dim < 0:
        raise ProbeError(f"--bins-per-dim must be 0 (all K) or at least 2 (a ranking), got {settings.bins_per_dim}")


def main(argv=None) -> int:
    defaults = ProbeSettings()
    parser = OneLineParser(prog="utility_probe.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "run_dirs",
        nargs="+",
        type=Path,
        help="run directories (each with config.json and "
        "checkpoint.pt) of any arm, or checkpoint files in them (checkpoint_step<N>.pt, kept by "
        "--keep-checkpoints-at)",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=DEFAULT_OUT_DIR,
        help=f"where the outputs go (default {DEFAULT_OUT_DIR}/, git-ignored)",
    )
    parser.add_argument("--states", type=int, default=defaults.states, help="probe states per run (%(default)s)")
    parser.add_argument(
        "--state-stride",
        type=int,
        default=defaults.state_stride,
        help="behaviour-policy steps between probe states (%(default)s)",
    )
    parser.add_argument(
        "--rollouts",
        type=int,
        default=defaults.rollouts,
        help="Monte Carlo rollouts per token, split in two halves for the noise estimate (%(default)s)",
    )
    parser.add_argument(
        "--horizon",
        type=int,
        default=defaults.horizon,
        help="environment steps per rollout before the value critic's bootstrap (%(default)s)",
    )
    parser.add_argument(
        "--bins-per-dim",
        type=int,
        default=defaults.bins_per_dim,
        help="evenly spaced bins probed per dimension, 0 for all K (%(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="seed of the walk and the rollouts (%(default)s)"
    )
    parser.add_argument(
        "--independent-rollouts", action="store_true", help="no common random numbers across the tokens of a state"
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="the positional folders are earlier probes' output folders (each with summary.json, same "
        "settings): write one summary.json and probe.md over all their runs, probing nothing",
    )
    args = parser.parse_args(argv)
    if args.merge:
        try:
            path = merge_probes(args.run_dirs, args.out_dir)
        except ProbeError as e:
            print(f"utility_probe.py: error: {e}", file=sys.stderr)
            return 2
        print(f"wrote {path}")
        return 0
    settings = ProbeSettings(
        args.states,
        args.state_stride,
        args.rollouts,
        args.horizon,
        args.bins_per_dim,
        args.seed,
        not args.independent_rollouts,
    )
    try:
        check_settings(settings)
        runs = [load_run(run_dir) for run_dir in args.run_dirs]
        for run in runs:
            if settings.bins_per_dim > int(run.config["num_bins"]):
                raise ProbeError(
                    f"--bins-per-dim {settings.bins_per_dim} exceeds {run.name}'s K = {run.config['num_bins']}"
                )
        probes = [probe_run(run, settings) for run in runs]
        path = write_outputs(probes, settings, args.out_dir)
    except ProbeError as e:
        print(f"utility_probe.py: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
