"""The experiment grids of the paper, defined once: benchmark.sh (one machine) and modal_launch.py (Modal) both
expand them from here, so a cell means the same run everywhere.

A *cell* is an arm script plus its flags under one exp_name; a *run* is a cell on one task and one seed, and its
directory is `{runs_dir}/{env_id}__{exp_name}__{seed}` (the layout every arm script writes). A cell that appears in
several grids (e.g. ppo_utility_mask on button-press in Tables 2, 3 and 4) is the same run directory and runs once.

    python grids.py presets                                  # the named grids and their sizes
    python grids.py list --preset table3                     # the runs of a grid: name, script, flags
    python grids.py commands --preset table2 --runs-dir runs # one shell command per run
    python grids.py commands --arms ppo_vanilla,ppo_random_mask --tasks reach-v3 --seeds 1,2 \\
        --total-timesteps 20000 --exp-suffix _smoke -- --eval-interval 0   # a custom grid; flags after -- go to every run
    python grids.py pretrain --preset finetune               # the pretrain_bc.py commands its --init-from files need
    python grids.py pretrain --calibration                   # the fine-tuning issue's pretraining calibration

Every command passes --resume, which is always safe with these scripts: a complete run (summary.json) exits 0 at
once, a run with a checkpoint continues exactly, and one without starts fresh.

A run directory that already holds summary.json counts as complete only if the settings in its config.json are the
ones the grid would give the run (run_status): a 4,096-step smoke run in the grid's directory is not one of its 1M-step
runs. `grids.py jobs` says so per run, and benchmark.sh neither counts nor runs such a directory.
"""

import argparse
import contextlib
import importlib
import io
import json
import os
import re
import shlex
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

SEEDS = (1, 2, 3)
PRIMARY_TASK = "button-press-v3"  # the only task that separates the arms (paper section 4); Tables 3 and 4 use it
TABLE2_TASKS = ("reach-v3", "button-press-v3", "drawer-close-v3", "pick-place-v3")

# Flags a grid sets itself; passing them as extra flags would make a command disagree with its run directory.
GRID_FLAGS = ("--env-id", "--seed", "--exp-name", "--runs-dir", "--resume", "--threads")


# config.json keys that record how and where a run happened (run_metadata in the arm scripts) and what it started from
# ("pretrained": the recipe and hash of the --init-from file, whose path is the setting), not what it computed
METADATA_KEYS = (
    "run_name",
    "git_revision",
    "git_changes",
    "code_sha256",
    "code_files",
    "python",
    "packages",
    "command",
    "host",
    "device",
    "resumed",
    "pretrained",
)
# Settings added after runs had been recorded without them, with the value those runs had (as training_run.py's)
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


# Settings that say where a run ran, not what it computed: a run may move directories, machines or devices
PLACEMENT_FIELDS = ("runs_dir", "cuda", "threads")


class _Absent:
    def __repr__(self):
        return "(absent)"


ABSENT = _Absent()  # the value of a setting that one side does not record

# The states of a grid's run directory that `grids.py jobs` reports (run_status)
NEW, RESUME, COMPLETE, DIFFERS = "new", "resume", "complete", "differs"


class GridError(ValueError):
    """Bad grid input; the command-line front ends print it as one line and exit 2."""


@dataclass(frozen=True)
class Cell:
    """An arm script with its flags, under the exp_name that names its run directories."""

    exp_name: str
    script: str
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Run:
    """One cell on one task and one seed: one run directory."""

    cell: Cell
    env_id: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.env_id}__{self.cell.exp_name}__{self.seed}"

    def argv(self, runs_dir: str, threads: int = 1, cuda: bool = False) -> list[str]:
        """The script and its arguments (without the interpreter)."""
        return [
            self.cell.script,
            "--env-id",
            self.env_id,
            "--seed",
            str(self.seed),
            "--exp-name",
            self.cell.exp_name,
            *self.cell.flags,
            "--threads",
            str(threads),
            *(["--cuda"] if cuda else []),
            "--runs-dir",
            runs_dir,
            "--resume",
        ]

    def command(self, runs_dir: str, python: str = "python", threads: int = 1, cuda: bool = False) -> str:
        """The shell command that runs (or resumes, or confirms complete) this run, from the repository root."""
        return shlex.join([python, *self.argv(runs_dir, threads, cuda)])

    def settings(self, runs_dir: str) -> dict:
        """The settings the script's config.json would record for this run: its Args as tyro parses argv, in JSON's
        types, without the placement fields (imports the script)."""
        import tyro

        script, *argv = self.argv(runs_dir)
        module = import_script(script)
        from training_run import DISPLAY_FLAGS  # the arms' shared plumbing, importable once a script is

        try:
            with (
                warnings.catch_warnings(),
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
            ):
                warnings.simplefilter("ignore")
                args = tyro.cli(module.Args, args=argv)
        except SystemExit:
            raise GridError(
                f"{self.name}: {script} does not accept its flags ({shlex.join(argv)}); see python {script} --help"
            ) from None
        config = {k: v for k, v in asdict(args).items() if k not in DISPLAY_FLAGS}  # as the scripts write it
        return run_settings(json.loads(json.dumps(config)))

    def status(self, runs_dir: str) -> tuple[str, str]:
        """(state, detail) of this run's directory: COMPLETE (summary.json and the grid's settings), DIFFERS
        (summary.json but other settings, or none readable; detail names them), RESUME (a checkpoint) or NEW."""
        run_dir = Path(runs_dir) / self.name
        if (run_dir / "summary.json").exists():
            try:
                recorded = json.loads((run_dir / "config.json").read_text())
                if not isinstance(recorded, dict):
                    raise ValueError("not a JSON object")
            except (OSError, UnicodeDecodeError, ValueError) as e:
                return DIFFERS, f"its config.json cannot be read ({type(e).__name__}), so its settings are unknown"
            expected = self.settings(runs_dir)
            differences = setting_differences(recorded, expected, keys=list(expected))
            return (DIFFERS, describe_differences(differences)) if differences else (COMPLETE, "")
        return (RESUME, "") if (run_dir / "checkpoint.pt").exists() else (NEW, "")


def run_settings(config: dict, ignore: tuple = ()) -> dict:
    """The settings a config.json records: every field of the script's Args except the placement fields (and
    `ignore`), without the metadata."""
    config = with_settings_added_later(config)  # a run recorded before a setting existed had its default
    return {k: v for k, v in config.items() if k not in METADATA_KEYS + PLACEMENT_FIELDS + tuple(ignore)}


def setting_differences(recorded: dict, expected: dict, keys=None) -> list[tuple[str, object, object]]:
    """(field, recorded value, expected value) of each field, of `keys` or else of either dict, whose values differ;
    ABSENT where a dict lacks the field."""
    keys = list(dict.fromkeys([*recorded, *expected])) if keys is None else keys
    return [
        (k, recorded.get(k, ABSENT), expected.get(k, ABSENT))
        for k in keys
        if recorded.get(k, ABSENT) != expected.get(k, ABSENT)
    ]


def describe_differences(differences: list, recorded: str = "recorded", expected: str = "grid") -> str:
    """'total_timesteps: recorded 4096, grid 1000000; mask_mode: recorded "hard", grid "soft"' (one line; values as
    config.json writes them)."""
    text = lambda value: repr(value) if value is ABSENT else json.dumps(value)  # noqa: E731
    return "; ".join(f"{k}: {recorded} {text(a)}, {expected} {text(b)}" for k, a, b in differences)


def import_script(script: str):
    """An arm script as a module (its training loop is under __main__); Python imports each one once."""
    root = str(Path(__file__).resolve().parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):  # stdout is benchmark.sh's job list
        warnings.simplefilter("ignore")
        return importlib.import_module(Path(script).stem)


# The cells. Flags are only those that differ from the scripts' defaults (the paper's Table 1).
VANILLA = Cell("ppo_vanilla", "ppo_vanilla.py")
RANDOM = Cell("ppo_random_mask", "ppo_random_mask.py")
UTILITY = Cell("ppo_utility_mask", "ppo_utility_mask.py")  # additive (VDN) credit: the paper's final method
# the off-policy arm as the off-policy issue fixed it; the baseline named, so the cell outlives a change of default
# --keep-checkpoints-at (a display flag: not part of the cell's settings) keeps the checkpoints the off-policy issue's
# Monte Carlo probe reads at 150k and 300k steps, beside the final one
OFFPOLICY = Cell(
    "ppo_offpolicy_utility_mask_ppo-baseline",
    "ppo_offpolicy_utility_mask.py",
    ("--q-baseline", "ppo", "--keep-checkpoints-at", "150000", "300000"),
)


def broadcast(suffix: str = "", *flags: str) -> Cell:
    """Table 3's cells: "broadcast/default config unless noted", so every ablation row keeps broadcast credit."""
    return Cell(f"ppo_utility_mask_broadcast{suffix}", "ppo_utility_mask.py", ("--credit", "broadcast", *flags))


TABLE3_CELLS = (
    broadcast(),  # the K = 64, soft-mask and threshold-0.25 "default" rows are all this one cell
    *(broadcast(f"_k{k}", "--num-bins", str(k)) for k in (32, 128, 256)),
    broadcast("_hard", "--mask-mode", "hard"),
    broadcast("_threshold0.5", "--utility-threshold", "0.5"),
    # "warm-up 150k" read as: no mask before 150k steps, then the same 100k-step ramp to the budget (ends at 250k)
    broadcast("_warmup150k", "--mask-warmup-start", "150000", "--mask-warmup-end", "250000"),
    UTILITY,  # the "additive credit" row is the headline utility cell
)

TABLE4_CELLS = (
    VANILLA,
    RANDOM,
    UTILITY,
    Cell("ppo_random_mask_budget0.1", "ppo_random_mask.py", ("--mask-budget", "0.1")),
    Cell("ppo_random_mask_budget0.4", "ppo_random_mask.py", ("--mask-budget", "0.4")),
    Cell("ppo_utility_mask_gumbel_budget0.1", "ppo_utility_mask.py", ("--mask-mode", "gumbel", "--mask-budget", "0.1")),
    Cell("ppo_utility_mask_gumbel_budget0.4", "ppo_utility_mask.py", ("--mask-mode", "gumbel", "--mask-budget", "0.4")),
    Cell("ppo_utility_mask_boost", "ppo_utility_mask.py", ("--mask-mode", "boost")),
    Cell("ppo_loss_shaping_tau0", "ppo_loss_shaping.py", ("--shaping-tau", "0")),
    Cell("ppo_loss_shaping", "ppo_loss_shaping.py"),  # tau 4, the script's default
)


# The choices the paper leaves open, each changed alone on button-press, where our vanilla learns ~3x faster than the
# paper's (first 0.5 success at ~100k steps against 321k): which of them, if any, accounts for the gap.
REGIME_CELLS = (
    VANILLA,
    Cell("ppo_vanilla_kl0.01", "ppo_vanilla.py", ("--target-kl", "0.01")),
    Cell("ppo_vanilla_no-anneal", "ppo_vanilla.py", ("--no-anneal-lr",)),
    Cell("ppo_vanilla_no-bootstrap", "ppo_vanilla.py", ("--no-bootstrap-truncation",)),
    Cell("ppo_vanilla_no-norm-obs", "ppo_vanilla.py", ("--no-norm-obs",)),
)


# Where masking has room to act (survey.py over all 50 MetaWorld MT1 tasks, vanilla at its defaults, seed 1 to ~500k
# steps and seed 2 on the candidates to ~710k: results/survey-vanilla_2026-11-25): the 12 tasks on which vanilla first
# reaches 0.5 success between ~250k and ~700k steps, the regime in which the paper's button-press separated its arms
# (vanilla reached 0.5 at 321k there). First step to 0.5, any-step / last-step success, by seed:
HEADROOM_TASKS = (
    "handle-pull-v3",  # 444k / 449k, 311k / 311k: both seeds and definitions agree (the study's first task)
    "handle-pull-side-v3",  # 412k / 481k, 279k / 326k (the study's second task)
    "button-press-topdown-wall-v3",  # 293k / 541k, 262k / 508k: last-step success ~250k later
    "box-close-v3",  # 381k / 428k; seed 2 never by 711k (bimodal)
    "sweep-v3",  # 330k / 346k
    "lever-pull-v3",  # 279k, 668k; last-step success never reaches 0.5: the lever is let go
    "coffee-push-v3",  # 369k; last-step never
    "peg-unplug-side-v3",  # 410k; last-step never
    "push-v3",  # 467k; last-step never (by 500k)
    "hand-insert-v3",  # 471k; last-step never (by 500k)
    "peg-insert-side-v3",  # 500k; last-step never (by 500k)
    "hammer-v3",  # 502k; last-step never (by 500k)
)
STUDY_SEEDS = tuple(range(1, 11))

# The paper's regime on button-press (the regime preset's runs, results/button-press-v3_regime_2026-11-25): of the
# choices the paper leaves open, only turning observation normalization off moves our vanilla into the paper's numbers,
# and only when success is scored at the episode's last step: first 0.5 at 352k-453k (paper 321k), final 0.85
# (0.72-0.96; paper 0.857), AUC 0.45 (paper 0.567), 3 seeds. Any-step success still reaches 0.5 by 72k-82k there.
PAPER_REGIME_FLAGS = ("--no-norm-obs",)


def in_paper_regime(cell: Cell) -> Cell:
    return Cell(f"{cell.exp_name}_no-norm-obs", cell.script, cell.flags + PAPER_REGIME_FLAGS)


# Table 3's ablations on the best headroom task, from the paper's headline configuration (additive credit, soft mask,
# threshold 0.25, warm-up 50k-150k), one change each
STUDY_TABLE3_CELLS = (
    *(Cell(f"ppo_utility_mask_k{k}", "ppo_utility_mask.py", ("--num-bins", str(k))) for k in (32, 128, 256)),
    Cell("ppo_utility_mask_hard", "ppo_utility_mask.py", ("--mask-mode", "hard")),
    Cell("ppo_utility_mask_threshold0.5", "ppo_utility_mask.py", ("--utility-threshold", "0.5")),
    # no mask before 150k steps, then the same 100k-step ramp, as in Table 3's broadcast cell
    Cell(
        "ppo_utility_mask_warmup150k",
        "ppo_utility_mask.py",
        ("--mask-warmup-start", "150000", "--mask-warmup-end", "250000"),
    ),
    Cell("ppo_utility_mask_broadcast", "ppo_utility_mask.py", ("--credit", "broadcast")),
)
LOSS_SHAPING = (
    Cell("ppo_loss_shaping", "ppo_loss_shaping.py"),  # tau 4
    Cell("ppo_loss_shaping_tau0", "ppo_loss_shaping.py", ("--shaping-tau", "0")),
)


# The paper-task study (button-press in the paper's regime): Table 3's rows as the paper ran them (broadcast credit,
# the additive row being study_button_press's utility cell), plus the vocabulary controls the paper never ran: if
# "fine, unordered discretization" (section 5) causes the K = 128/256 drop, vanilla and random drop with it.
VOCABULARY_CONTROLS = tuple(
    Cell(f"{cell.exp_name}_k{k}", cell.script, ("--num-bins", str(k))) for k in (128, 256) for cell in (VANILLA, RANDOM)
)
PAPER_TABLE3_CELLS = tuple(map(in_paper_regime, (*TABLE3_CELLS[:-1], *VOCABULARY_CONTROLS)))
# Table 4's rows that study_button_press does not already hold (its baselines and loss shaping)
PAPER_TABLE4_CELLS = tuple(
    in_paper_regime(cell) for cell in TABLE4_CELLS if cell not in (VANILLA, RANDOM, UTILITY, *LOSS_SHAPING)
)
# The cells a claim's verdict rests on: K = 256 against its controls, the hard mask, the late warm-up, and the
# broadcast K = 64 cell they are read against.
PAPER_TABLE3_TEN_SEED_CELLS = tuple(
    cell
    for cell in PAPER_TABLE3_CELLS
    if cell.exp_name
    in {
        f"{name}_no-norm-obs"
        for name in (
            "ppo_utility_mask_broadcast",
            "ppo_utility_mask_broadcast_k256",
            "ppo_vanilla_k256",
            "ppo_random_mask_k256",
            "ppo_utility_mask_broadcast_hard",
            "ppo_utility_mask_broadcast_warmup150k",
        )
    }
)


# Structured action heads (the action-heads issue): does a head that knows the bins' order remove the K = 256 drop the
# paper blames on "fine, unordered discretization" (section 5)? Vanilla with each head at K = 64 and 256 first.
HEAD_CELLS = tuple(
    in_paper_regime(Cell(f"ppo_vanilla_{head}_k{k}", "ppo_vanilla.py", ("--action-head", head, "--num-bins", str(k))))
    for head in ("ordinal", "poisson")
    for k in (64, 256)
)
# Stages 2 and 3: the better head by last-step AUC at K = 256 (the rule) is Poisson (IQM 0.512 [0.454, 0.587]
# against ordinal 0.295 [0.176, 0.512], 5-7 seeds: results/button-press-v3_paper-regime_heads_2026-12-06). It goes to
# 10 seeds at both K, and the masked arms run on it at K = 256: random (the control), utility with Table 3's broadcast
# credit (the paper's K = 256 row) and with additive credit (its final method).
CHOSEN_HEAD = "poisson"
CHOSEN_HEAD_CELLS = tuple(cell for cell in HEAD_CELLS if f"_{CHOSEN_HEAD}_" in cell.exp_name)
HEAD_MASK_CELLS = tuple(
    in_paper_regime(
        Cell(
            f"{cell.exp_name}_{CHOSEN_HEAD}_k256",
            cell.script,
            cell.flags + ("--action-head", CHOSEN_HEAD, "--num-bins", "256"),
        )
    )
    for cell in (RANDOM, broadcast(), UTILITY)
)
# The categorical cell the additive arm's K = 256 loss is measured from: Table 3's K = 256 row has broadcast credit
# only, so without it the report cannot say how much of the final method's vocabulary loss the head removes.
ADDITIVE_K256_CELL = in_paper_regime(Cell("ppo_utility_mask_k256", "ppo_utility_mask.py", ("--num-bins", "256")))


# The Table 2 / KL issue. Stage 1: Table 2 on the paper's other three tasks, in its regime (button-press's row is the
# paper-regime study's 10-seed cells).
PAPER_TABLE2_TASKS = tuple(task for task in TABLE2_TASKS if task != PRIMARY_TASK)
PAPER_TABLE2_CELLS = tuple(map(in_paper_regime, (VANILLA, RANDOM, UTILITY)))
# Stage 2: the KL early stop as a control of the K = 256 drop. With target KL 0.02 the categorical head at K = 256
# stops its update after ~2.2 of 10 epochs over the first 150k steps (K = 64: 5.5; Poisson: 9.8); the same cells with
# no early stop (`--target-kl None`) say how much of the drop is the update being cut short.
NO_TARGET_KL = ("--target-kl", "None")


def without_kl_early_stop(cell: Cell) -> Cell:
    return Cell(f"{cell.exp_name}_no-target-kl", cell.script, cell.flags + NO_TARGET_KL)


KL_CONTROL_CELLS = tuple(
    in_paper_regime(without_kl_early_stop(cell))
    for cell in (VANILLA, Cell("ppo_vanilla_k256", "ppo_vanilla.py", ("--num-bins", "256")))
)
KL_CONTROL_HEAD_CELLS = (
    in_paper_regime(
        without_kl_early_stop(
            Cell("ppo_vanilla_poisson_k256", "ppo_vanilla.py", ("--action-head", "poisson", "--num-bins", "256"))
        )
    ),
)
# Stage 4 (run only if stage 2 shows the early stop costs K = 256 or slows K = 64): the paper's comparison unstopped
KL_CONTROL_MASK_CELLS = tuple(in_paper_regime(without_kl_early_stop(cell)) for cell in (RANDOM, UTILITY))
# Stage 3: the head off button-press, the vocabulary cells beside each task's categorical K = 64 cell (handle-pull:
# our default regime, the study's 10 seeds; pick-place: the paper's regime, stage 1's 5 seeds)
OFF_TASK_HEAD_CELLS = (
    Cell("ppo_vanilla_k256", "ppo_vanilla.py", ("--num-bins", "256")),
    *(
        Cell(f"ppo_vanilla_poisson_k{k}", "ppo_vanilla.py", ("--action-head", "poisson", "--num-bins", str(k)))
        for k in (64, 256)
    ),
)
FIVE_SEEDS = tuple(range(1, 6))


# Fine-tuning a pretrained token policy (the fine-tuning issue; docs/finetuning.md): pretrain_bc.py clones
# MetaWorld's scripted expert into the arms' actor, and the arms fine-tune it with --init-from. A pretrained file is
# named by its recipe and committed under PRETRAINED_DIR (a 2x64 MLP: ~0.3 MB at K = 256), and a cell fine-tuned from
# it carries the recipe in its exp_name (_ft-d25: 25 demonstrations; anything else that differs from Pretrained's
# defaults follows), so two files never share a run directory.
PRETRAINED_DIR = "results/pretrained"
CALIBRATION_DIR = f"{PRETRAINED_DIR}/calibration"


@dataclass(frozen=True)
class Pretrained:
    """A pretrain_bc.py recipe: the file it writes, the command that writes it, and the tag of the cells fine-tuned from
    it. The defaults are the fine-tuning issue's: K = 256 categorical, raw observations (the paper's regime), DART noise
    0.1, the script's 20,000 Adam steps."""

    env_id: str
    demos: int
    num_bins: int = 256
    action_head: str = "categorical"
    norm_obs: bool = False
    action_noise: float = 0.1
    seed: int = 1
    folder: str = PRETRAINED_DIR

    @property
    def tag(self) -> str:
        """'d25', then what differs from the defaults ('d25-n0.2-s2'); the head, K and regime are in the cell's name."""
        return (
            f"d{self.demos}"
            + (f"-n{self.action_noise:g}" if self.action_noise != 0.1 else "")
            + (f"-s{self.seed}" if self.seed != 1 else "")
        )

    @property
    def path(self) -> str:
        regime = "" if self.norm_obs else "_no-norm-obs"
        return (
            f"{self.folder}/{self.env_id}_{self.action_head}_k{self.num_bins}_d{self.demos}"
            f"_noise{self.action_noise:g}{regime}_s{self.seed}.pt"
        )

    def command(self, python: str = "python") -> str:
        return shlex.join(
            [
                python,
                "pretrain_bc.py",
                "--env-id",
                self.env_id,
                "--demos",
                str(self.demos),
                "--num-bins",
                str(self.num_bins),
                "--action-head",
                self.action_head,
                *([] if self.norm_obs else ["--no-norm-obs"]),
                "--action-noise",
                f"{self.action_noise:g}",
                "--seed",
                str(self.seed),
                "--out",
                self.path,
            ]
        )


def fine_tuned(cell: Cell, pretrained: Pretrained, critic_warmup: int, total_timesteps: int) -> Cell:
    """`cell` fine-tuned from `pretrained`: its vocabulary, head and observation regime (which the file must match),
    --init-from its path, the critic warm-up and the step budget. Named {cell}[_{head}]_k{K}_ft-{tag}[_cw{N}], then
    _no-norm-obs for the paper's regime (last, as grids.in_paper_regime puts it and report.py reads it)."""
    head = "" if pretrained.action_head == "categorical" else f"_{pretrained.action_head}"
    warmup = f"_cw{critic_warmup}" if critic_warmup else ""
    flags = (
        *cell.flags,
        "--num-bins",
        str(pretrained.num_bins),
        "--action-head",
        pretrained.action_head,
        "--init-from",
        pretrained.path,
        "--critic-warmup-iterations",
        str(critic_warmup),
        "--total-timesteps",
        str(total_timesteps),
    )
    tuned = Cell(f"{cell.exp_name}{head}_k{pretrained.num_bins}_ft-{pretrained.tag}{warmup}", cell.script, flags)
    return tuned if pretrained.norm_obs else in_paper_regime(tuned)


# Stage 1, the calibration: BC success against the number of demonstrations, both heads, 3 pretraining seeds, on
# button-press and pick-place (`python grids.py pretrain --calibration` prints the commands; report.py --calibration
# tabulates and plots what they wrote)
CALIBRATION_TASKS = (PRIMARY_TASK, "pick-place-v3")
CALIBRATION_SEEDS = (1, 2, 3)
# pick-place's categorical files never reached the band (0.17 at 100 demonstrations), so the fallback: the
# second task is a headroom task where BC can reach it. handle-pull (the study's first headroom task; its expert
# succeeds 5 of 5), calibrated over the counts that matter for the band.
SECOND_FINETUNE_TASK = HEADROOM_TASKS[0]
CALIBRATION = tuple(
    Pretrained(task, demos, action_head=head, seed=seed, folder=CALIBRATION_DIR)
    for task in CALIBRATION_TASKS
    for head in ("categorical", "poisson")
    for demos in (1, 2, 3, 4, 5, 10, 25, 50, 100)
    for seed in CALIBRATION_SEEDS
) + tuple(
    Pretrained(SECOND_FINETUNE_TASK, demos, action_head=head, seed=seed, folder=CALIBRATION_DIR)
    for head in ("categorical", "poisson")
    for seed in CALIBRATION_SEEDS
    for demos in (1, 2, 3, 5, 10, 25)
)
# Stage 2, the fine-tuning: per task, one pretrained file whose sampled success leaves room both ways (about 0.2-0.6,
# the issue's band) under both success definitions; the file, not the seeds' mean, is what every run starts from.
# button-press: 4 demonstrations, seed 1 (last step 0.50, any step 0.64; the 3-seed mean at 4 is 0.65 ± 0.12, and the
# smallest counts scatter too widely across seeds to pick by the mean: 1 demonstration gives 0.10-0.58).
# handle-pull: see results/pretrained/calibration/README.md (pick-place stays a finding of the calibration).
FINETUNE_PRETRAINED = {
    PRIMARY_TASK: Pretrained(PRIMARY_TASK, 4),
    SECOND_FINETUNE_TASK: Pretrained(SECOND_FINETUNE_TASK, 3),
}
# The critic warm-up, in PPO iterations of 2,048 steps. VLA fine-tuning recipes warm the critic up first, lest a
# random critic's advantages undo the pretraining; the warm-up check (finetune_warmup, vanilla at 0, 5 and 20
# iterations, 3 seeds per task, 5 for 0 and 5 on button-press) found no such harm: on button-press no warm-up ended
# highest (final last-step success IQM 0.800 against 0.543 at 5, separated on P(X > Y)), on handle-pull 0 and 20 tie
# and every warm-up loses the pretrained success in the first updates alike (results/finetune_warmup-check_2026-12-08).
# So none: 0, the scripts' default.
FINETUNE_CRITIC_WARMUP = 0
WARMUP_CHECK_UNSTOPPED = 5  # the check's cell without the KL early stop ran at warm-up 5, its provisional value
FINETUNE_STEPS = 300_000
PRIOR = Cell("ppo_prior_mask", "ppo_prior_mask.py")
PRIOR_KEEPS_LIKELIEST = Cell("ppo_prior_mask_budget0.9", "ppo_prior_mask.py", ("--mask-budget", "0.9"))
FINETUNE_ARMS = (
    VANILLA,
    RANDOM,
    UTILITY,
    PRIOR,
    PRIOR_KEEPS_LIKELIEST,
    # random at the prior's 0.9: the issue asks whether random pruning hurts at that budget (the paper's future work
    # expects it to once the policy is pretrained), which makes it the control of prior 0.9
    Cell("ppo_random_mask_budget0.9", "ppo_random_mask.py", ("--mask-budget", "0.9")),
)


def finetune_cells(
    task: str, critic_warmup: int = FINETUNE_CRITIC_WARMUP, arms=FINETUNE_ARMS, files=FINETUNE_PRETRAINED
) -> tuple[Cell, ...]:
    return tuple(fine_tuned(arm, files[task], critic_warmup, FINETUNE_STEPS) for arm in arms)


# Stage 2's Poisson cells: does the head keep its from-scratch edge at K = 256 once pretrained? Vanilla and the best
# masked arm of the categorical grid (button-press: prior 0.9, the only mask not below vanilla), each from a Poisson
# file. A Poisson clone is far stronger at the same data (button-press: 1.00 from 3 demonstrations), so the file is
# the calibration file whose sampled success is nearest the categorical file's start under both definitions (0.50
# last step, 0.64 any step): button-press 1 demonstration, seed 3 (0.62 / 0.74; 2 demonstrations seed 1 is at 0.26 /
# 0.48); handle-pull 2 demonstrations, seed 2 (0.44 / 0.44, against the categorical file's 0.46 / 0.50). pick-place,
# where the categorical head never reached the band, is the moonshot's task: its Poisson clone does (25
# demonstrations, seed 1: 0.38 / 0.50, the smallest count in band under both definitions).
FINETUNE_POISSON_PRETRAINED = {
    PRIMARY_TASK: Pretrained(PRIMARY_TASK, 1, action_head="poisson", seed=3),
    SECOND_FINETUNE_TASK: Pretrained(SECOND_FINETUNE_TASK, 2, action_head="poisson", seed=2),
    "pick-place-v3": Pretrained("pick-place-v3", 25, action_head="poisson"),
}
FINETUNE_POISSON_ARMS = (VANILLA, PRIOR_KEEPS_LIKELIEST)


# --ref-kl-coef, the RLHF / VLA-RL pull toward the pretrained policy: the issue asks for it, as a cell of its own, only
# where the pretrained success collapses in the first updates, which handle-pull's warm-up check showed (last-step
# success 0.35-0.49 over the first 20k steps, its lowest 10-iteration mean 0.02-0.30 between 20k and 80k). Two
# strengths, one an order of magnitude above the other: the penalty is per state, summed over the 4 dimensions,
# against advantages normalized to unit scale.
REF_KL_ARMS = tuple(
    Cell(f"ppo_vanilla_ref-kl{coef}", "ppo_vanilla.py", ("--ref-kl-coef", coef)) for coef in ("0.1", "1")
)


def finetune_warmup_cells(task: str) -> tuple[Cell, ...]:
    """The warm-up check: vanilla with a critic warm-up of 0, 5 and 20 iterations, and at 5 without the KL early stop
    (the KL control found the categorical K = 256 update starved by it from scratch; a starved update would also keep
    the pretrained policy in place, which the check must tell apart from a warm-up that protects it)."""
    warmups = tuple(cell for w in (0, 5, 20) for cell in finetune_cells(task, w, (VANILLA,)))
    stopped = finetune_cells(task, WARMUP_CHECK_UNSTOPPED, (VANILLA,))[0]
    # named as the KL control's from-scratch cell plus the fine-tuning part, so that report.py reads it against that
    # cell: ppo_vanilla_k256_ft-d4_cw5_no-target-kl_no-norm-obs -> ppo_vanilla_k256_no-target-kl_no-norm-obs
    regime = "_no-norm-obs" if stopped.exp_name.endswith("_no-norm-obs") else ""
    stem = stopped.exp_name.removesuffix(regime)
    return (*warmups, Cell(f"{stem}_no-target-kl{regime}", stopped.script, stopped.flags + NO_TARGET_KL))


# The compiled update (issue 42): --compile computes the update up to float rounding, so its runs are cells of their
# own ("_compile"), never seeds of an eager cell. Before presets may use it, its distribution is checked: vanilla and
# utility (additive) at K = 64 on button-press in the paper's regime, 5 seeds, against study_button_press's 10 eager
# seeds of the same cells (final, AUC, steps to 0.5, the whole curve inside the eager seeds' band).
COMPILE_FLAGS = ("--compile",)


def compiled(cell: Cell) -> Cell:
    return Cell(f"{cell.exp_name}_compile", cell.script, cell.flags + COMPILE_FLAGS)


COMPILE_CHECK_CELLS = tuple(in_paper_regime(compiled(cell)) for cell in (VANILLA, UTILITY))


@dataclass(frozen=True)
class Preset:
    description: str
    cells: tuple[Cell, ...]
    tasks: tuple[str, ...]
    seeds: tuple[int, ...] = SEEDS  # the paper's three; the study's presets use ten


PRESETS = {
    "table2": Preset("Table 2: 4 tasks x {vanilla, random, utility}", (VANILLA, RANDOM, UTILITY), TABLE2_TASKS),
    "table3": Preset(
        "Table 3: button-press utility-mask ablations (broadcast credit unless noted)", TABLE3_CELLS, (PRIMARY_TASK,)
    ),
    "table4": Preset("Table 4: button-press masking variants and loss shaping", TABLE4_CELLS, (PRIMARY_TASK,)),
    "regime": Preset(
        "button-press: vanilla with each choice the paper leaves open changed alone", REGIME_CELLS, (PRIMARY_TASK,)
    ),
    "headroom": Preset(
        "the paper's three arms on the tasks where vanilla has headroom (first 0.5 at ~250k-700k)",
        (VANILLA, RANDOM, UTILITY),
        HEADROOM_TASKS,
    ),
    "paper_regime": Preset(
        "button-press in the paper's regime (no observation normalization; read last-step "
        "success): the paper's three arms",
        tuple(map(in_paper_regime, (VANILLA, RANDOM, UTILITY))),
        (PRIMARY_TASK,),
    ),
    "study_headroom": Preset(
        "the study on the two headroom tasks with the clearest room: 5 arms x 10 seeds",
        (VANILLA, RANDOM, UTILITY, *LOSS_SHAPING),
        HEADROOM_TASKS[:2],
        STUDY_SEEDS,
    ),
    "study_button_press": Preset(
        "the study on button-press in the paper's regime: 5 arms x 10 seeds",
        tuple(map(in_paper_regime, (VANILLA, RANDOM, UTILITY, *LOSS_SHAPING))),
        (PRIMARY_TASK,),
        STUDY_SEEDS,
    ),
    "study_table3": Preset(
        "Table 3's utility-mask ablations on handle-pull, from the additive headline cell: 5 seeds",
        STUDY_TABLE3_CELLS,
        HEADROOM_TASKS[:1],
        tuple(range(1, 6)),
    ),
    "paper_table3": Preset(
        "Table 3 in the paper's regime on button-press: its rows (broadcast credit unless noted) "
        "and vanilla/random at K = 128, 256, the controls: 5 seeds",
        PAPER_TABLE3_CELLS,
        (PRIMARY_TASK,),
        tuple(range(1, 6)),
    ),
    "paper_table4": Preset(
        "Table 4's masking variants in the paper's regime on button-press: 5 seeds",
        PAPER_TABLE4_CELLS,
        (PRIMARY_TASK,),
        tuple(range(1, 6)),
    ),
    "heads": Preset(
        "vanilla with the ordinal and the Poisson action head at K = 64 and 256, in the paper's regime "
        "on button-press: 5 seeds",
        HEAD_CELLS,
        (PRIMARY_TASK,),
        tuple(range(1, 6)),
    ),
    "heads_poisson": Preset(
        "vanilla with the Poisson head (stage 1's choice) at K = 64 and 256, the paper's regime "
        "on button-press: 10 seeds",
        CHOSEN_HEAD_CELLS,
        (PRIMARY_TASK,),
        STUDY_SEEDS,
    ),
    "heads_poisson_masks": Preset(
        "random mask and utility mask (broadcast and additive credit) with the Poisson head "
        "at K = 256, the paper's regime on button-press: 10 seeds",
        HEAD_MASK_CELLS,
        (PRIMARY_TASK,),
        STUDY_SEEDS,
    ),
    "heads_additive_reference": Preset(
        "utility mask with additive credit (the final method) and the categorical head "
        "at K = 256, the paper's regime on button-press, the reference for its Poisson "
        "cell: 10 seeds",
        (ADDITIVE_K256_CELL,),
        (PRIMARY_TASK,),
        STUDY_SEEDS,
    ),
    "offpolicy_handle_pull": Preset(
        "the off-policy arm as fixed (PPO-critic baseline in Q), handle-pull, our default "
        "regime: 10 seeds, against the study's random and utility cells",
        (OFFPOLICY,),
        HEADROOM_TASKS[:1],
        STUDY_SEEDS,
    ),
    "offpolicy_button_press": Preset(
        "the off-policy arm as fixed, button-press in the paper's regime: 10 seeds, "
        "against the paper-regime study's random and utility cells",
        (in_paper_regime(OFFPOLICY),),
        (PRIMARY_TASK,),
        STUDY_SEEDS,
    ),
    "paper_table3_10seeds": Preset(
        "the paper-regime Table 3 cells whose verdicts 5 seeds leave open, to 10 seeds",
        PAPER_TABLE3_TEN_SEED_CELLS,
        (PRIMARY_TASK,),
        STUDY_SEEDS,
    ),
    "paper_table2": Preset(
        "Table 2's other three tasks (reach, drawer-close, pick-place) in the paper's regime: the "
        "paper's three arms, 5 seeds",
        PAPER_TABLE2_CELLS,
        PAPER_TABLE2_TASKS,
        FIVE_SEEDS,
    ),
    "kl_control": Preset(
        "the KL early stop as a control of the K = 256 drop: categorical vanilla at K = 64 and 256 "
        "with --target-kl None, the paper's regime on button-press: 10 seeds",
        KL_CONTROL_CELLS,
        (PRIMARY_TASK,),
        STUDY_SEEDS,
    ),
    "kl_control_poisson": Preset(
        "vanilla with the Poisson head at K = 256 and --target-kl None, the paper's regime on button-press: 5 seeds",
        KL_CONTROL_HEAD_CELLS,
        (PRIMARY_TASK,),
        FIVE_SEEDS,
    ),
    "kl_control_masks": Preset(
        "random and utility (additive) masks at K = 64 with --target-kl None, the paper's "
        "regime on button-press, against kl_control's vanilla: 10 seeds (stage 4, conditional)",
        KL_CONTROL_MASK_CELLS,
        (PRIMARY_TASK,),
        STUDY_SEEDS,
    ),
    "heads_handle_pull": Preset(
        "vanilla at K = 256 (categorical) and with the Poisson head at K = 64 and 256 on "
        "handle-pull, our default regime: 5 seeds",
        OFF_TASK_HEAD_CELLS,
        HEADROOM_TASKS[:1],
        FIVE_SEEDS,
    ),
    "finetune_warmup_check": Preset(
        "fine-tuning: vanilla from the pretrained file with a critic warm-up of 0, 5 and "
        "20 iterations, and at 5 without the KL early stop, 300k steps, K = 256 categorical, "
        "the paper's regime: 3 seeds (the short check that picks FINETUNE_CRITIC_WARMUP)",
        finetune_warmup_cells(PRIMARY_TASK),
        (PRIMARY_TASK,),
        SEEDS,
    ),
    "finetune_warmup_check_handle_pull": Preset(
        "the critic warm-up check on handle-pull (pick-place's categorical BC never reached the band)",
        finetune_warmup_cells(SECOND_FINETUNE_TASK),
        (SECOND_FINETUNE_TASK,),
        SEEDS,
    ),
    "finetune_button_press": Preset(
        "fine-tuning from the pretrained file: vanilla, random 0.25, utility (additive) "
        "0.25, prior 0.25, prior 0.9 and random 0.9, 300k steps, K = 256 categorical, the paper's "
        "regime on button-press: 5 seeds",
        finetune_cells(PRIMARY_TASK),
        (PRIMARY_TASK,),
        FIVE_SEEDS,
    ),
    "finetune_handle_pull": Preset(
        "the same six arms fine-tuned on handle-pull, the paper's regime: 5 seeds",
        finetune_cells(SECOND_FINETUNE_TASK),
        (SECOND_FINETUNE_TASK,),
        FIVE_SEEDS,
    ),
    "heads_pick_place": Preset(
        "vanilla at K = 256 (categorical) and with the Poisson head at K = 64 and 256 on "
        "pick-place, the paper's regime: 5 seeds",
        tuple(map(in_paper_regime, OFF_TASK_HEAD_CELLS)),
        ("pick-place-v3",),
        FIVE_SEEDS,
    ),
    "finetune_poisson_button_press": Preset(
        "fine-tuning with the Poisson head: vanilla and prior 0.9 from a Poisson file, 300k steps, K = 256, the "
        "paper's regime on button-press: 5 seeds",
        finetune_cells(PRIMARY_TASK, arms=FINETUNE_POISSON_ARMS, files=FINETUNE_POISSON_PRETRAINED),
        (PRIMARY_TASK,),
        FIVE_SEEDS,
    ),
    "finetune_poisson_handle_pull": Preset(
        "the same two Poisson cells on handle-pull, the paper's regime: 5 seeds",
        finetune_cells(SECOND_FINETUNE_TASK, arms=FINETUNE_POISSON_ARMS, files=FINETUNE_POISSON_PRETRAINED),
        (SECOND_FINETUNE_TASK,),
        FIVE_SEEDS,
    ),
    "finetune_pick_place": Preset(
        "the moonshot: pick-place from its Poisson file (vanilla and prior 0.9), 300k steps, K = 256, the paper's "
        "regime: 5 seeds (10 for a recipe that nears 0.9)",
        finetune_cells("pick-place-v3", arms=FINETUNE_POISSON_ARMS, files=FINETUNE_POISSON_PRETRAINED),
        ("pick-place-v3",),
        FIVE_SEEDS,
    ),
    "finetune_ref_kl_button_press": Preset(
        "fine-tuning: vanilla with --ref-kl-coef 0.1 and 1 (a pull toward the pretrained policy), 300k steps, "
        "K = 256 categorical, the paper's regime on button-press: 5 seeds",
        finetune_cells(PRIMARY_TASK, arms=REF_KL_ARMS),
        (PRIMARY_TASK,),
        FIVE_SEEDS,
    ),
    "finetune_ref_kl_handle_pull": Preset(
        "the same two cells on handle-pull: 5 seeds",
        finetune_cells(SECOND_FINETUNE_TASK, arms=REF_KL_ARMS),
        (SECOND_FINETUNE_TASK,),
        FIVE_SEEDS,
    ),
    "compile_check": Preset(
        "the --compile distribution check: vanilla and utility (additive) at K = 64 with the "
        "compiled update, the paper's regime on button-press, 5 seeds, against study_button_press's "
        "10 eager seeds",
        COMPILE_CHECK_CELLS,
        (PRIMARY_TASK,),
        FIVE_SEEDS,
    ),
}
# "paper": all three tables, each shared cell once (78 runs)
ALIASES = {
    "paper": ("table2", "table3", "table4"),
    "offpolicy": ("offpolicy_handle_pull", "offpolicy_button_press"),
    "study": ("study_headroom", "study_button_press"),
    "kl": ("kl_control", "kl_control_poisson"),
    "heads_off_button_press": ("heads_handle_pull", "heads_pick_place"),
    "finetune": ("finetune_button_press", "finetune_handle_pull"),
    "finetune_warmup": ("finetune_warmup_check", "finetune_warmup_check_handle_pull"),
    "finetune_ref_kl": ("finetune_ref_kl_handle_pull", "finetune_ref_kl_button_press"),
    "finetune_poisson": ("finetune_poisson_button_press", "finetune_poisson_handle_pull"),
}
ALIAS_DESCRIPTIONS = {
    "paper": "all three tables, each shared run once",
    "offpolicy": "the fixed off-policy arm at 10 seeds in both settings (the off-policy issue's test)",
    "study": "the answer: 3 tasks (2 headroom, button-press in the paper's regime) x 5 arms x 10 seeds",
    "kl": "the KL early-stop control: categorical K 64/256 (10 seeds) and Poisson K 256 (5), unstopped",
    "heads_off_button_press": "the vocabulary cells on handle-pull and pick-place (5 seeds each)",
    "finetune": "fine-tuning from the pretrained files: 6 arms x 2 tasks x 5 seeds (stage 2)",
    "finetune_warmup": "the critic warm-up check on both tasks (vanilla, warm-up 0/5/20, 3 seeds)",
    "finetune_ref_kl": "vanilla with the pull toward the pretrained policy (0.1, 1) on both tasks, 5 seeds",
    "finetune_poisson": "vanilla and prior 0.9 fine-tuned from a Poisson file on both tasks, 5 seeds (stage 2)",
}
PRESET_NAMES = (*PRESETS, *ALIASES)
# The pretrained files the presets fine-tune from, for `grids.py pretrain`
PRETRAINED_FILES = (*FINETUNE_PRETRAINED.values(), *FINETUNE_POISSON_PRETRAINED.values())

# Cells beyond the paper, in no preset: a custom grid names them with --arms (default task: button-press).
EXTRA_CELLS = (
    Cell("ppo_offpolicy_utility_mask", "ppo_offpolicy_utility_mask.py"),  # U from a branching dueling Q-network (TD)
    Cell("ppo_offpolicy_utility_mask_success", "ppo_offpolicy_utility_mask.py", ("--utility-target", "success")),
)

# Every named cell, for choosing arms in a custom grid.
CELLS = {cell.exp_name: cell for preset in PRESETS.values() for cell in preset.cells}
CELLS.update({cell.exp_name: cell for cell in EXTRA_CELLS})


def resolve_task(task: str) -> str:
    """MetaWorld 3 task name; the paper's -v2 names map to -v3, as in the scripts."""
    task = task.strip()
    if task.endswith("-v2"):
        task = task[:-3] + "-v3"
    try:  # the full list when MetaWorld is installed (the Modal launcher may run without it)
        import metaworld

        known = set(metaworld.ALL_V3_ENVIRONMENTS)
    except ImportError:
        known = None
    if (known is not None and task not in known) or not re.fullmatch(r"[a-z0-9-]+-v3", task):
        raise GridError(f"unknown MetaWorld task {task!r}" + (f"; known: {' '.join(sorted(known))}" if known else ""))
    return task


def split_list(text: str | None) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()] if text else []


def parse_seeds(text: str | None) -> tuple[int, ...] | None:
    """--seeds as a tuple; None when not given (each preset's own seeds)."""
    if not text:
        return None
    try:
        seeds = tuple(int(s) for s in split_list(text))
    except ValueError:
        raise GridError(f"--seeds takes comma-separated integers, got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise GridError(f"--seeds takes comma-separated non-negative integers, got {text!r}")
    return tuple(dict.fromkeys(seeds))


def customize(cell: Cell, total_timesteps: int | None, extra: tuple[str, ...], exp_suffix: str) -> Cell:
    flags = cell.flags + (("--total-timesteps", str(total_timesteps)) if total_timesteps else ()) + extra
    return Cell(cell.exp_name + exp_suffix, cell.script, flags)


def expand(presets=(), arms=(), tasks=(), seeds=None, total_timesteps=None, extra=(), exp_suffix="") -> list[Run]:
    """The runs of a grid, in order, each run directory once.

    presets: named grids (their cells on their tasks); arms: cell names, which restrict the presets to those cells
    or, without presets, make a custom grid (default task: button-press); tasks replace the grids' tasks; seeds
    replace the presets' own (a custom grid's default to 1, 2, 3); total_timesteps, extra flags and exp_suffix apply to every cell (use a suffix, or another
    runs directory, when they change a paper cell: a complete run directory is never re-run).
    """
    presets, arms = list(presets), list(arms)
    if not presets and not arms:
        raise GridError("choose a grid: --preset (" + ", ".join(PRESET_NAMES) + ") and/or --arms (cell names)")
    for name in presets:
        if name not in PRESET_NAMES:
            raise GridError(f"unknown preset {name!r}; presets: {', '.join(PRESET_NAMES)}")
    for name in arms:
        if name not in CELLS:
            raise GridError(f"unknown arm {name!r}; arms: {', '.join(CELLS)}")
    presets = list(dict.fromkeys(p for name in presets for p in ALIASES.get(name, (name,))))
    bad = [flag for flag in extra if flag.split("=")[0] in GRID_FLAGS]
    if bad:
        raise GridError(f"{bad[0]} is set by the grid (use --tasks, --seeds, --arms, --exp-suffix, --runs-dir)")
    if total_timesteps is not None and total_timesteps < 1:
        raise GridError(f"--total-timesteps must be positive, got {total_timesteps}")
    if exp_suffix and not re.fullmatch(r"[A-Za-z0-9._-]+", exp_suffix):
        raise GridError(f"--exp-suffix may hold only letters, digits and ._-, got {exp_suffix!r}")
    tasks = [resolve_task(t) for t in tasks]
    if presets:
        groups = [(cell, PRESETS[p].tasks, PRESETS[p].seeds) for p in presets for cell in PRESETS[p].cells]
        if arms:
            groups = [(cell, ts, ss) for cell, ts, ss in groups if cell.exp_name in arms]
            missing = set(arms) - {cell.exp_name for cell, _, _ in groups}
            if missing:
                raise GridError(f"arm {sorted(missing)[0]!r} is not in preset(s) {', '.join(presets)}")
    else:
        groups = [(CELLS[a], (PRIMARY_TASK,), SEEDS) for a in dict.fromkeys(arms)]
    runs: dict[str, Run] = {}
    for cell, cell_tasks, cell_seeds in groups:
        cell = customize(cell, total_timesteps, tuple(extra), exp_suffix)
        for task in tasks or cell_tasks:
            for seed in seeds or cell_seeds:
                run = Run(cell, task, seed)
                if runs.setdefault(run.name, run) != run:  # the same directory must always mean the same run
                    raise GridError(f"two different runs would share the directory {run.name}")
    return list(runs.values())


# Minutes one 1M-step run takes on a core of its own: the medians of the paper-regime study's runs
# (results/button-press-v3_paper-regime_study_2026-12-05: 2 at a time on a 2-core VM, 16 at once on a 16-core
# machine; the off-policy arm: the handle-pull study's). Other scripts: DEFAULT_RUN_MINUTES. An estimate, scaled
# linearly with the step budget and the bins (K = 256 runs took ~1.4x as long as K = 64 ones; the rollout dominates).
RUN_MINUTES = {
    "ppo_vanilla.py": 12.4,
    "ppo_random_mask.py": 13.1,
    "ppo_utility_mask.py": 14.5,
    "ppo_loss_shaping.py": 13.8,
    "ppo_offpolicy_utility_mask.py": 14.3,
}
DEFAULT_RUN_MINUTES = 15.0
DEFAULT_STEPS, DEFAULT_BINS = 1_000_000, 64


def flag_text(flags: tuple[str, ...], name: str) -> str | None:
    """The last value given to `name` in `flags`, as text (None if absent)."""
    values = [flags[i + 1] for i, flag in enumerate(flags[:-1]) if flag == name]
    return values[-1] if values else None


def flag_value(flags: tuple[str, ...], name: str, default: float) -> float:
    """The last value given to `name` in `flags` (the scripts' tyro parsing: the last one wins), else default."""
    values = [flags[i + 1] for i, flag in enumerate(flags[:-1]) if flag == name]
    return float(values[-1]) if values else default


# --compile: a run's steps/s over its eager path's, the median of the 14 measurements of speed_benchmark.py --compile
# (5 arms at K = 64 and 256, vanilla and utility twice; 0.92-1.18, no trend with K; docs/speed.md), and the first
# step's compilation (10-26 s into an empty inductor cache, 3-6 s from a filled one), counted cold
COMPILED_SPEEDUP, COMPILE_MINUTES = 1.07, 0.5


def run_minutes(run: Run) -> float:
    steps = flag_value(run.cell.flags, "--total-timesteps", DEFAULT_STEPS) / DEFAULT_STEPS
    bins = 1 + 0.4 * max(0.0, flag_value(run.cell.flags, "--num-bins", DEFAULT_BINS) - DEFAULT_BINS) / (
        256 - DEFAULT_BINS
    )
    minutes = RUN_MINUTES.get(run.cell.script, DEFAULT_RUN_MINUTES) * steps * bins
    return minutes / COMPILED_SPEEDUP + COMPILE_MINUTES if "--compile" in run.cell.flags else minutes


def estimate(runs: list[Run], workers: int) -> str:
    """One line: how many runs and how long they take on `workers` slots (longest first onto the least loaded)."""
    minutes = sorted((run_minutes(run) for run in runs), reverse=True)
    loads = [0.0] * workers
    for m in minutes:
        loads[loads.index(min(loads))] += m

    def hours(m):
        return f"{m / 60:.1f} h" if m >= 90 else f"{m:.0f} min"

    return (
        f"{len(runs)} runs, ~{hours(max(loads))} on {workers} parallel slots ({hours(sum(minutes))} of run time; "
        f"per-run minutes measured one run per core, grids.RUN_MINUTES)"
    )


def add_selection_args(parser: argparse.ArgumentParser) -> None:
    """The grid-choosing options, shared by grids.py's and modal_launch.py's command lines."""
    parser.add_argument(
        "--preset",
        action="append",
        default=[],
        help=f"a named grid, repeatable or comma-separated: {', '.join(PRESET_NAMES)} (paper = all three tables)",
    )
    parser.add_argument(
        "--arms",
        help="comma-separated cell names: restrict the presets to them, or without "
        "--preset a custom grid of them (default task button-press-v3)",
    )
    parser.add_argument("--tasks", help="comma-separated MetaWorld tasks, replacing the grid's tasks")
    parser.add_argument(
        "--seeds",
        help="comma-separated seeds (default: each preset's own, 1,2,3 for the paper's tables and a custom grid)",
    )
    parser.add_argument("--total-timesteps", type=int, help="step budget of every run (default: the scripts' 1M)")
    parser.add_argument(
        "--exp-suffix",
        default="",
        help="appended to every exp_name (e.g. _smoke), so a changed "
        "budget or extra flags get their own run directories",
    )


def selection_from_args(args: argparse.Namespace, extra: list[str]) -> list[Run]:
    return expand(
        presets=[p for text in args.preset for p in split_list(text)],
        arms=split_list(args.arms),
        tasks=split_list(args.tasks),
        seeds=parse_seeds(args.seeds),
        total_timesteps=args.total_timesteps,
        extra=tuple(extra),
        exp_suffix=args.exp_suffix,
    )


def split_extra(argv: list[str]) -> tuple[list[str], list[str]]:
    """Everything after a bare `--` is extra flags for every run."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def main(argv: list[str] | None = None) -> int:
    own, extra = split_extra(list(sys.argv[1:] if argv is None else argv))
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="Flags after a bare -- are passed to every run."
    )
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("presets", help="the named grids and their sizes")
    p = sub.add_parser(
        "pretrain",
        help="the pretrain_bc.py commands that write the pretrained files a grid's cells "
        "fine-tune from (--init-from), or with --calibration the calibration's; files "
        "that exist are left out",
    )
    add_selection_args(p)
    p.add_argument("--calibration", action="store_true", help=f"the calibration's files ({CALIBRATION_DIR})")
    p.add_argument("--python", default="python", help="the interpreter in the commands (default python)")
    for what, text in (
        ("list", "the runs of a grid"),
        ("commands", "one shell command per run"),
        (
            "jobs",
            "one run per line: name, state (new, resume, complete or differs: complete "
            "with other settings), command and, for differs, the differing settings; "
            "tab-separated (for benchmark.sh)",
        ),
        ("estimate", "how long the runs still to do take: one line (for benchmark.sh --dry-run)"),
    ):
        p = sub.add_parser(what, help=text)
        add_selection_args(p)
        if what != "list":
            p.add_argument("--runs-dir", default="runs", help="the directory of run directories (default runs)")
            p.add_argument("--python", default="python", help="the interpreter in the commands (default python)")
            p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
            p.add_argument("--cuda", action="store_true", help="pass --cuda to every run")
        if what == "estimate":
            p.add_argument(
                "--workers", type=int, default=os.cpu_count() or 1, help="runs at a time (default: the number of cores)"
            )
    args = parser.parse_args(own)
    try:
        if args.what == "presets":
            for name in PRESET_NAMES:
                runs = expand(presets=[name])
                about = PRESETS[name].description if name in PRESETS else ALIAS_DESCRIPTIONS[name]
                cells = len({(r.env_id, r.cell.exp_name) for r in runs})  # a cell: one arm on one task
                print(f"{name:{max(map(len, PRESET_NAMES))}s} {len(runs):3d} runs, {cells:2d} cells  {about}")
            print("(a cell is one arm, with its flags, on one task; its runs are its seeds)")
            return 0
        if args.what == "pretrain":
            files = list(CALIBRATION) if args.calibration else []
            if args.preset or args.arms:
                named = {flag_text(run.cell.flags, "--init-from") for run in selection_from_args(args, extra)}
                files += [p for p in PRETRAINED_FILES if p.path in named]
            if not files:
                raise GridError("choose the files: --calibration, or a grid (--preset, --arms) whose cells fine-tune")
            print("\n".join(p.command(args.python) for p in dict.fromkeys(files) if not os.path.exists(p.path)))
            return 0
        runs = selection_from_args(args, extra)
        if args.what != "list" and args.threads < 1:
            raise GridError(f"--threads must be at least 1, got {args.threads}")
        if getattr(args, "cuda", False) and any("--compile" in run.cell.flags for run in runs):
            raise GridError(
                "--cuda with a --compile cell: the scripts refuse both at once (the compiled update is the CPU's)"
            )
        if args.what == "estimate":
            if args.workers < 1:
                raise GridError(f"--workers must be at least 1, got {args.workers}")
            # runs to do (a resuming run is counted whole: an upper bound)
            todo = [run for run in runs if run.status(args.runs_dir)[0] in ("new", "resume")]
            print(estimate(todo, args.workers) if todo else "nothing to run")
            return 0
    except GridError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    lines = []
    try:
        for run in runs:
            if args.what == "list":
                lines.append(f"{run.name}\t{run.cell.script}\t{shlex.join(run.cell.flags)}")
            elif args.what == "commands":
                lines.append(run.command(args.runs_dir, args.python, args.threads, args.cuda))
            else:
                state, detail = run.status(args.runs_dir)
                command = run.command(args.runs_dir, args.python, args.threads, args.cuda)
                lines.append("\t".join([run.name, state, command] + ([detail] if detail else [])))
    except GridError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if lines:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `python grids.py commands ... | head` ends quietly
    sys.exit(main())
