"""grids.py: the presets expand to exactly the paper's grids, and the commands carry the right flags."""

import dataclasses
import importlib
import json
import shlex
import subprocess
import sys

import pytest

import grids
from conftest import ROOT

B = "button-press-v3"
# The paper's grids, written out from Tables 2, 3 and 4 and the shared contract: exp_name -> (script, flags).
TABLE2 = {
    "ppo_vanilla": ("ppo_vanilla.py", ""),
    "ppo_random_mask": ("ppo_random_mask.py", ""),
    "ppo_utility_mask": ("ppo_utility_mask.py", ""),
}
TABLE3 = {
    "ppo_utility_mask_broadcast": ("ppo_utility_mask.py", "--credit broadcast"),
    "ppo_utility_mask_broadcast_k32": ("ppo_utility_mask.py", "--credit broadcast --num-bins 32"),
    "ppo_utility_mask_broadcast_k128": ("ppo_utility_mask.py", "--credit broadcast --num-bins 128"),
    "ppo_utility_mask_broadcast_k256": ("ppo_utility_mask.py", "--credit broadcast --num-bins 256"),
    "ppo_utility_mask_broadcast_hard": ("ppo_utility_mask.py", "--credit broadcast --mask-mode hard"),
    "ppo_utility_mask_broadcast_threshold0.5": ("ppo_utility_mask.py", "--credit broadcast --utility-threshold 0.5"),
    "ppo_utility_mask_broadcast_warmup150k": (
        "ppo_utility_mask.py",
        "--credit broadcast --mask-warmup-start 150000 --mask-warmup-end 250000",
    ),
    "ppo_utility_mask": ("ppo_utility_mask.py", ""),
}
TABLE4 = {
    **TABLE2,
    "ppo_random_mask_budget0.1": ("ppo_random_mask.py", "--mask-budget 0.1"),
    "ppo_random_mask_budget0.4": ("ppo_random_mask.py", "--mask-budget 0.4"),
    "ppo_utility_mask_gumbel_budget0.1": ("ppo_utility_mask.py", "--mask-mode gumbel --mask-budget 0.1"),
    "ppo_utility_mask_gumbel_budget0.4": ("ppo_utility_mask.py", "--mask-mode gumbel --mask-budget 0.4"),
    "ppo_utility_mask_boost": ("ppo_utility_mask.py", "--mask-mode boost"),
    "ppo_loss_shaping_tau0": ("ppo_loss_shaping.py", "--shaping-tau 0"),
    "ppo_loss_shaping": ("ppo_loss_shaping.py", ""),
}


def expected(cells: dict, tasks) -> set:
    return {
        (f"{t}__{name}__{s}", script, flags)
        for name, (script, flags) in cells.items()
        for t in tasks
        for s in (1, 2, 3)
    }


def actual(runs) -> set:
    return {(r.name, r.cell.script, shlex.join(r.cell.flags)) for r in runs}


@pytest.mark.parametrize(
    "preset, cells, tasks, count",
    [
        ("table2", TABLE2, ["reach-v3", B, "drawer-close-v3", "pick-place-v3"], 36),
        ("table3", TABLE3, [B], 24),
        ("table4", TABLE4, [B], 30),
    ],
)
def test_presets_are_the_paper_grids(preset, cells, tasks, count):
    runs = grids.expand(presets=[preset])
    assert len(runs) == count == len({r.name for r in runs})
    assert actual(runs) == expected(cells, tasks)


def test_paper_preset_runs_each_shared_cell_once():
    runs = grids.expand(presets=["paper"])
    union = (
        expected(TABLE2, ["reach-v3", B, "drawer-close-v3", "pick-place-v3"])
        | expected(TABLE3, [B])
        | expected(TABLE4, [B])
    )
    assert actual(runs) == union and len(runs) == len(union) == 78
    assert grids.expand(presets=["table2", "table3", "table4"]) == runs


def test_every_cell_flag_is_an_option_of_its_script():
    """The flags name real fields of the script's Args with acceptable values (no run dies on a typo)."""
    for script, cells in _by_script().items():
        if not (ROOT / script).exists():
            pytest.skip(f"{script} is not written yet")
        fields = {f.name: f for f in dataclasses.fields(importlib.import_module(script[:-3]).Args)}
        for cell in cells:
            for flag, values in _flag_values(cell.flags):
                name = flag[2:].replace("-", "_")
                if name not in fields and name.startswith("no_"):  # tyro's --no-<flag> for a boolean field
                    name = name[3:]
                assert name in fields, (cell.exp_name, flag)
                field = fields[name]
                choices = getattr(field.type, "__args__", None)
                if isinstance(field.default, bool):
                    assert values == [], (cell.exp_name, flag, values)
                elif isinstance(field.default, tuple):  # a multi-value flag, e.g. --keep-checkpoints-at 150000 300000
                    assert values and all(int(v) > 0 for v in values), (cell.exp_name, flag, values)
                elif choices and all(isinstance(c, str) for c in choices):
                    assert values in ([c] for c in choices), (cell.exp_name, flag, values)
                else:
                    assert len(values) == 1, (cell.exp_name, flag, values)
                    kinds = [t for t in getattr(field.type, "__args__", (type(field.default),)) if t is not type(None)]
                    # --target-kl None, --init-from FILE
                    optional = len(kinds) < len(getattr(field.type, "__args__", ()))
                    if not (optional and values[0] == "None"):
                        kinds[0](values[0])  # parses as the field's type


def _flag_values(flags):
    """[(--flag, [its values])] of a cell's flags: the values are the tokens up to the next --flag."""
    groups = []
    for token in flags:
        if token.startswith("--"):
            groups.append((token, []))
        else:
            groups[-1][1].append(token)
    return groups


def _by_script():
    out = {}
    for cell in grids.CELLS.values():
        out.setdefault(cell.script, []).append(cell)
    return out


def test_commands_carry_the_run_and_its_flags():
    out = subprocess.run(
        [sys.executable, "grids.py", "commands", "--preset", "table4", "--runs-dir", "some/runs"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout.splitlines()
    assert len(out) == 30
    cells = {name: flags for name, (_, flags) in TABLE4.items()}
    for line in out:
        words = shlex.split(line)
        options = dict(zip(words[2::2], words[3::2]))
        assert words[0] == "python" and words[1] == TABLE4[options["--exp-name"]][0]
        assert options["--env-id"] == B and options["--seed"] in {"1", "2", "3"} and options["--threads"] == "1"
        assert words[-3:] == ["--runs-dir", "some/runs", "--resume"]
        assert shlex.join(words[8:-5]) == cells[options["--exp-name"]]  # exactly the cell's flags, nothing else


def test_custom_grid():
    runs = grids.expand(
        arms=["ppo_vanilla", "ppo_utility_mask_boost"],
        tasks=["reach-v2", "drawer-close-v3"],
        seeds=(7,),
        total_timesteps=5000,
        extra=("--eval-interval", "0"),
        exp_suffix="_smoke",
    )
    assert [r.name for r in runs] == [
        "reach-v3__ppo_vanilla_smoke__7",
        "drawer-close-v3__ppo_vanilla_smoke__7",
        "reach-v3__ppo_utility_mask_boost_smoke__7",
        "drawer-close-v3__ppo_utility_mask_boost_smoke__7",
    ]
    assert runs[2].cell.flags == ("--mask-mode", "boost", "--total-timesteps", "5000", "--eval-interval", "0")
    assert "--cuda" in runs[0].argv("r", cuda=True) and "--cuda" not in runs[0].argv("r")
    # arms restrict a preset; tasks replace its tasks; seeds default to 1, 2, 3
    table2_reach = grids.expand(presets=["table2"], arms=["ppo_random_mask"], tasks=["reach-v3"])
    assert [r.name for r in table2_reach] == [f"reach-v3__ppo_random_mask__{s}" for s in (1, 2, 3)]
    assert [r.env_id for r in grids.expand(arms=["ppo_vanilla"])] == [B] * 3


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "choose a grid"),
        (["--preset", "table9"], "unknown preset 'table9'"),
        (["--arms", "ppo_nothing"], "unknown arm 'ppo_nothing'"),
        (["--preset", "table3", "--arms", "ppo_random_mask"], "not in preset"),
        (["--arms", "ppo_vanilla", "--tasks", "reach"], "unknown MetaWorld task 'reach'"),
        (["--arms", "ppo_vanilla", "--seeds", "1,x"], "--seeds takes comma-separated integers"),
        (["--arms", "ppo_vanilla", "--total-timesteps", "0"], "--total-timesteps must be positive"),
        (["--arms", "ppo_vanilla", "--exp-suffix", "a/b"], "--exp-suffix may hold only"),
        (["--arms", "ppo_vanilla", "--", "--seed", "4"], "--seed is set by the grid"),
        (["--preset", "compile_check", "--cuda"], "--cuda with a --compile cell"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message):
    result = subprocess.run([sys.executable, "grids.py", "commands", *argv], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: ") and message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_one_directory_means_one_run(monkeypatch):
    """Two different cells under one exp_name would share run directories: refused."""
    clash = grids.Cell("ppo_vanilla", "ppo_vanilla.py", ("--num-bins", "8"))
    monkeypatch.setitem(grids.PRESETS, "table2", grids.Preset("clash", (grids.VANILLA, clash), (B,)))
    with pytest.raises(
        grids.GridError, match="two different runs would share the directory button-press-v3__ppo_vanilla__1"
    ):
        grids.expand(presets=["table2"])


METADATA = {
    "run_name": "x",
    "git_revision": "abc",
    "python": "3.11",
    "packages": {"torch": "2"},
    "command": "c",
    "host": "h",
    "device": "cpu",
    "resumed": [],
}


def write_run(runs_dir, run: grids.Run, config: dict | None, summary=True, checkpoint=False):
    folder = runs_dir / run.name
    folder.mkdir(parents=True)
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    if summary:
        (folder / "summary.json").write_text("{}")
    if checkpoint:
        (folder / "checkpoint.pt").write_bytes(b"")


def test_a_complete_run_counts_only_with_the_grids_settings(tmp_path):
    """summary.json makes a run complete only if config.json records the grid's settings; where it ran (runs_dir,
    cuda, threads) and the metadata may differ."""
    runs = grids.expand(arms=["ppo_utility_mask"], tasks=["reach-v3", "pick-place-v3", "drawer-close-v3"], seeds=(1, 2))
    settings = runs[0].settings(str(tmp_path))
    assert settings["total_timesteps"] == 1_000_000 and settings["mask_mode"] == "soft"
    assert not {"runs_dir", "cuda", "threads", "resume", "track", "capture_video", "capture_video_greedy"} & set(
        settings
    )
    moved = {**settings, "runs_dir": "elsewhere", "cuda": True, "threads": 4, **METADATA}
    write_run(tmp_path, runs[0], moved)
    smoke = {**runs[1].settings(str(tmp_path)), "total_timesteps": 4096, "mask_mode": "hard", **METADATA}
    write_run(tmp_path, runs[1], smoke)
    older = {k: v for k, v in runs[2].settings(str(tmp_path)).items() if k != "rank_states"}  # a field it lacks
    write_run(tmp_path, runs[2], older)
    write_run(tmp_path, runs[3], None)  # summary.json without config.json
    write_run(tmp_path, runs[4], moved, summary=False, checkpoint=True)
    states = [run.status(str(tmp_path)) for run in runs]
    assert states == [
        (grids.COMPLETE, ""),
        (grids.DIFFERS, 'total_timesteps: recorded 4096, grid 1000000; mask_mode: recorded "hard", grid "soft"'),
        (grids.DIFFERS, "rank_states: recorded (absent), grid 256"),
        (grids.DIFFERS, "its config.json cannot be read (FileNotFoundError), so its settings are unknown"),
        (grids.RESUME, ""),
        (grids.NEW, ""),
    ]


def test_jobs_prints_each_runs_state(tmp_path):
    run = grids.expand(arms=["ppo_vanilla"], tasks=["reach-v3"], seeds=(1,))[0]
    write_run(tmp_path, run, {**run.settings(str(tmp_path)), "num_bins": 8})
    argv = [
        sys.executable,
        "grids.py",
        "jobs",
        "--arms",
        "ppo_vanilla",
        "--tasks",
        "reach-v3",
        "--seeds",
        "1,2",
        "--runs-dir",
        str(tmp_path),
    ]
    lines = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=True).stdout.splitlines()
    assert [line.split("\t") for line in lines] == [
        [run.name, "differs", run.command(str(tmp_path)), "num_bins: recorded 8, grid 64"],
        [
            "reach-v3__ppo_vanilla__2",
            "new",
            grids.expand(arms=["ppo_vanilla"], tasks=["reach-v3"], seeds=(2,))[0].command(str(tmp_path)),
        ],
    ]
    # flags that are not the script's options: one line, exit 2 (found when a complete run is checked)
    result = subprocess.run(argv + ["--", "--no-such-flag", "1"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {run.name}: ") and len(result.stderr.strip().splitlines()) == 1
    assert "ppo_vanilla.py does not accept its flags (" in result.stderr and "--no-such-flag" in result.stderr


def test_study_presets_carry_their_own_seeds_and_the_paper_regime():
    study = grids.expand(presets=["study"])
    assert len(study) == 150 == len({r.name for r in study})
    assert {r.seed for r in study} == set(range(1, 11))
    assert {r.env_id for r in study} == {"handle-pull-v3", "handle-pull-side-v3", B}
    for run in study:  # button-press runs in the paper's regime, the headroom tasks at the defaults
        assert ("--no-norm-obs" in run.cell.flags) == (run.env_id == B) == run.cell.exp_name.endswith("_no-norm-obs")
    assert len(grids.expand(presets=["study_table3"])) == 35
    assert {r.seed for r in grids.expand(presets=["study_table3"])} == {1, 2, 3, 4, 5}
    # --seeds replaces a preset's own; the paper's tables keep 1-3
    assert {r.seed for r in grids.expand(presets=["study"], seeds=(4,))} == {4}
    assert {r.seed for r in grids.expand(presets=["table2"])} == {1, 2, 3}
    # the paper regime's vanilla is the regime ablation's no-norm-obs run: one directory, one run
    regime = {r.name: r for r in grids.expand(presets=["regime"])}
    for run in grids.expand(presets=["paper_regime"], arms=["ppo_vanilla_no-norm-obs"]):
        assert regime[run.name] == run
    assert len(grids.expand(presets=["regime", "paper_regime"])) == 15 + 6


def test_grids_and_the_arms_agree_on_the_placement_fields():
    """Where a run is placed (folder, device, threads) is no setting: grids.py compares settings without them and
    training_run.py lets --resume change them; the two lists must stay one."""
    import training_run

    assert set(grids.PLACEMENT_FIELDS) == set(training_run.PLACEMENT_FIELDS)
    # and on the settings added after runs were recorded without them (a missing one had this value)
    assert grids.SETTINGS_ADDED_LATER == training_run.SETTINGS_ADDED_LATER
    assert grids.OFFPOLICY_SETTINGS_ADDED_LATER == training_run.OFFPOLICY_SETTINGS_ADDED_LATER
    # the off-policy arm's apply to its configs only: a vanilla run recorded today gains no q_baseline
    for fill in (grids.with_settings_added_later, training_run.with_settings_added_later):
        assert fill({"utility_target": "td"})["q_baseline"] == "learned"  # its runs before the flag
        assert fill({"utility_target": "td", "q_baseline": "ppo"})["q_baseline"] == "ppo"
        assert fill({"num_bins": 64}) == {"num_bins": 64, **grids.SETTINGS_ADDED_LATER}


def test_paper_task_presets_are_the_paper_rows_with_the_vocabulary_controls_in_the_paper_regime():
    table3 = grids.expand(presets=["paper_table3"])
    assert len(table3) == 55 and {r.seed for r in table3} == set(range(1, 6)) and {r.env_id for r in table3} == {B}
    cells = {r.cell.exp_name: r.cell for r in table3}
    assert all(cell.exp_name.endswith("_no-norm-obs") and "--no-norm-obs" in cell.flags for cell in cells.values())
    utility = [c for c in cells.values() if c.script == "ppo_utility_mask.py"]
    # the paper's rows: broadcast credit unless noted, K 32/64/128/256, hard, threshold 0.5, warm-up 150k (the
    # additive row is study_button_press's utility cell)
    assert len(utility) == 7 and all(c.flags[:2] == ("--credit", "broadcast") for c in utility)
    assert "ppo_utility_mask_no-norm-obs" not in cells
    controls = {name: c for name, c in cells.items() if c.script != "ppo_utility_mask.py"}
    assert set(controls) == {f"ppo_{arm}_k{k}_no-norm-obs" for arm in ("vanilla", "random_mask") for k in (128, 256)}
    for name, cell in controls.items():
        assert grids.flag_value(cell.flags, "--num-bins", 64) == float(name.split("_k")[1].split("_")[0])
    table4 = grids.expand(presets=["paper_table4"])
    assert len(table4) == 25 and {r.seed for r in table4} == set(range(1, 6))
    assert {r.cell.exp_name for r in table4} == {
        f"{n}_no-norm-obs"
        for n in (
            "ppo_random_mask_budget0.1",
            "ppo_random_mask_budget0.4",
            "ppo_utility_mask_gumbel_budget0.1",
            "ppo_utility_mask_gumbel_budget0.4",
            "ppo_utility_mask_boost",
        )
    }
    ten = grids.expand(presets=["paper_table3_10seeds"])
    assert len(ten) == 60 and {r.seed for r in ten} == set(range(1, 11))
    # seeds 1-5 of those cells are the Table 3 preset's own runs: one directory each
    assert {r.name for r in ten if r.seed <= 5} <= {r.name for r in table3}


def test_the_estimate_schedules_measured_minutes_onto_the_slots(tmp_path):
    def run(script, *flags):
        return grids.Run(grids.Cell("x", script, flags), B, 1)

    assert grids.run_minutes(run("ppo_vanilla.py")) == grids.RUN_MINUTES["ppo_vanilla.py"]
    assert (
        grids.run_minutes(run("ppo_vanilla.py", "--total-timesteps", "500000"))
        == grids.RUN_MINUTES["ppo_vanilla.py"] / 2
    )
    assert grids.run_minutes(run("ppo_vanilla.py", "--num-bins", "256")) == pytest.approx(
        1.4 * grids.RUN_MINUTES["ppo_vanilla.py"]
    )
    assert grids.run_minutes(run("other.py")) == grids.DEFAULT_RUN_MINUTES
    # a compiled cell: the measured speedup of a whole run, plus its compilation
    assert grids.run_minutes(run("ppo_vanilla.py", "--compile")) == pytest.approx(
        grids.RUN_MINUTES["ppo_vanilla.py"] / grids.COMPILED_SPEEDUP + grids.COMPILE_MINUTES
    )
    compiled_check = grids.expand(presets=["compile_check"])
    assert grids.run_minutes(compiled_check[0]) < grids.RUN_MINUTES["ppo_vanilla.py"]
    # longest first onto the least loaded slot: 3 runs of 15 minutes on 2 slots take 30
    three = [run("other.py")] * 3
    assert grids.estimate(three, 2).startswith("3 runs, ~30 min on 2 parallel slots (45 min of run time")
    assert "~45 min on 1 parallel slots" in grids.estimate(three, 1)
    # the command counts only the runs still to do
    argv = [
        sys.executable,
        "grids.py",
        "estimate",
        "--arms",
        "ppo_vanilla",
        "--seeds",
        "1,2",
        "--runs-dir",
        str(tmp_path),
    ]
    result = subprocess.run(argv + ["--workers", "2"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and result.stdout.startswith("2 runs, ~12 min on 2 parallel slots")
    bad = subprocess.run(argv + ["--workers", "0"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --workers must be at least 1, got 0"


def test_the_heads_preset_names_head_and_k_and_runs_in_the_paper_regime():
    runs = grids.expand(presets=["heads"])
    assert len(runs) == 20 and {r.seed for r in runs} == set(range(1, 6)) and {r.env_id for r in runs} == {B}
    for run in runs:
        head, k = run.cell.exp_name.split("_")[2], run.cell.exp_name.split("_")[3]
        assert run.cell.script == "ppo_vanilla.py" and "--no-norm-obs" in run.cell.flags
        assert run.cell.flags[run.cell.flags.index("--action-head") + 1] == head and head in ("ordinal", "poisson")
        assert f"k{run.cell.flags[run.cell.flags.index('--num-bins') + 1]}" == k


def test_the_chosen_head_presets_extend_stage_1_and_put_the_masked_arms_on_that_head():
    stage1 = {cell.exp_name: cell for cell in grids.PRESETS["heads"].cells}
    ten = grids.expand(presets=["heads_poisson"])
    # the same cells as stage 1's Poisson ones (so its seeds count toward the 10), seeds 1-10
    assert {r.cell.exp_name for r in ten} == {
        "ppo_vanilla_poisson_k64_no-norm-obs",
        "ppo_vanilla_poisson_k256_no-norm-obs",
    }
    assert all(r.cell == stage1[r.cell.exp_name] for r in ten) and {r.seed for r in ten} == set(range(1, 11))
    masked = grids.expand(presets=["heads_poisson_masks"])
    assert len(masked) == 30 and {r.seed for r in masked} == set(range(1, 11)) and {r.env_id for r in masked} == {B}
    cells = {r.cell.exp_name: r.cell for r in masked}
    assert set(cells) == {
        "ppo_random_mask_poisson_k256_no-norm-obs",
        "ppo_utility_mask_broadcast_poisson_k256_no-norm-obs",
        "ppo_utility_mask_poisson_k256_no-norm-obs",
    }
    for name, cell in cells.items():
        flags = cell.flags
        assert flags[flags.index("--action-head") + 1] == "poisson" and flags[flags.index("--num-bins") + 1] == "256"
        assert "--no-norm-obs" in flags and cell.script == (
            "ppo_random_mask.py" if "random" in name else "ppo_utility_mask.py"
        )
        # Table 3's K = 256 row keeps broadcast credit; the final method (additive) is the script's default
        assert ("--credit" in flags and flags[flags.index("--credit") + 1] == "broadcast") == ("broadcast" in name)
    # the additive arm's categorical reference: the same cell as its Poisson one but for the head
    reference = grids.expand(presets=["heads_additive_reference"])
    assert len(reference) == 10 and {r.seed for r in reference} == set(range(1, 11))
    poisson = cells["ppo_utility_mask_poisson_k256_no-norm-obs"].flags
    head = poisson.index("--action-head")
    assert reference[0].cell.exp_name == "ppo_utility_mask_k256_no-norm-obs"
    assert reference[0].cell.flags == poisson[:head] + poisson[head + 2 :]


def test_the_compile_check_preset_keeps_compiled_runs_in_cells_of_their_own(tmp_path):
    runs = grids.expand(presets=["compile_check"])
    assert len(runs) == 10 and {r.seed for r in runs} == set(range(1, 6)) and {r.env_id for r in runs} == {B}
    cells = {r.cell.exp_name: r.cell for r in runs}
    assert set(cells) == {"ppo_vanilla_compile_no-norm-obs", "ppo_utility_mask_compile_no-norm-obs"}
    eager = {cell.exp_name: cell for cell in grids.PRESETS["study_button_press"].cells}
    for name, cell in cells.items():
        # the 10-seed eager cell it is read against, with --compile and nothing else added
        reference = eager[name.replace("_compile", "")]
        assert cell.script == reference.script and sorted(cell.flags) == sorted(reference.flags + ("--compile",))
        assert "--no-norm-obs" in cell.flags and grids.flag_value(cell.flags, "--num-bins", 64) == 64
    # compiled and eager runs never share a cell: in every preset, a run compiles exactly when its name says so, and
    # the setting is recorded, so an eager run in a compiled cell's directory is not one of its runs (run_status)
    for run in grids.expand(presets=list(grids.PRESETS)):
        assert ("--compile" in run.cell.flags) == ("_compile" in run.cell.exp_name), run.name
    run = runs[0]
    assert run.settings(str(tmp_path))["compile"] is True
    eager_settings = grids.Run(eager[run.cell.exp_name.replace("_compile", "")], B, 1).settings(str(tmp_path))
    write_run(tmp_path, run, {**METADATA, **eager_settings, "exp_name": run.cell.exp_name})  # run without --compile
    assert run.status(str(tmp_path)) == (grids.DIFFERS, "compile: recorded false, grid true")
