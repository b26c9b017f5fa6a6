"""survey.py: milestones, first steps to 0.5, classes and SPS from synthetic run folders with known curves; one-line
errors."""

import csv
import gzip
import json

import numpy as np
import pytest

import survey

BATCH = 2048


def make_run(
    runs_dir, task, seed, any_curve, last_curve=None, iterations=488, exp_name="ppo_vanilla", sps=1000.0, packed=False
):
    """A run folder of `iterations` iterations whose success curves are the given functions of the step."""
    folder = runs_dir / f"{task}__{exp_name}__{seed}"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(
        json.dumps({"env_id": task, "exp_name": exp_name, "seed": seed, "num_bins": 64})
    )
    steps = BATCH * np.arange(1, iterations + 1)
    last_curve = last_curve or any_curve
    rows = [[i + 1, s, any_curve(s), last_curve(s), 16.0, sps] for i, s in enumerate(steps)]
    header = ["iteration", "global_step", "success_rate", "success_rate_last_step", "policy_entropy", "sps"]
    opener = (lambda p: gzip.open(str(p) + ".gz", "wt", newline="")) if packed else (lambda p: open(p, "w", newline=""))
    with opener(folder / "metrics.csv") as f:
        csv.writer(f).writerows([header, *rows])
    return folder


def step_at(first):
    """A curve that is 0 before `first` steps and 1 from there on (NaN for the first iteration, as before any
    episode ends)."""
    return lambda s: float("nan") if s == BATCH else float(s >= first)


def test_milestones_first_reach_classes_and_sps(tmp_path):
    make_run(tmp_path, "easy-v3", 1, step_at(100_000))
    make_run(tmp_path, "room-v3", 1, step_at(400_000), last_curve=step_at(800_000))
    make_run(tmp_path, "room-v3", 2, step_at(300_000), sps=500.0)
    make_run(tmp_path, "late-v3", 1, step_at(900_000))
    make_run(tmp_path, "hard-v3", 1, lambda s: 0.1, iterations=245)  # stopped at 501,760 steps of its 1M schedule
    make_run(tmp_path, "other-v3", 1, step_at(1), exp_name="ppo_random_mask")
    runs = [r for r in survey.report.find_runs(tmp_path) if r.exp_name == "ppo_vanilla"]
    rows = {(r["task"], r["seed"]): r for r in survey.survey_rows(runs)}
    assert len(rows) == 5
    room = rows[("room-v3", 1)]
    assert room["any_first_0.5"] == 401_408 and room["last_first_0.5"] == 800_768  # the first iteration at or past it
    assert room["any_at_250k"] == 0.0 and room["any_at_500k"] == 1.0 and room["any_at_1000k"] == 1.0
    assert room["last_at_500k"] == 0.0 and room["sps"] == pytest.approx(1000.0)
    assert rows[("room-v3", 2)]["sps"] == pytest.approx(500.0)
    hard = rows[("hard-v3", 1)]
    assert hard["steps"] == 501_760 and hard["any_at_500k"] == pytest.approx(0.1) and hard["any_at_1000k"] is None
    assert hard["any_first_0.5"] is None
    assert survey.task_classes(list(rows.values()), "any") == {
        "easy-v3": "easy",
        "room-v3": "headroom",
        "late-v3": "late",
        "hard-v3": "not reached",
    }
    # under last-step success room-v3's seeds split (800k, 300k): median 550k, still headroom
    assert survey.task_classes(list(rows.values()), "last")["room-v3"] == "headroom"


def test_majority_of_seeds_never_reaching_half_is_not_reached():
    assert survey.classify([None, None, 300_000], [500_000, 500_000, 1_000_000]) == "not reached"
    assert survey.classify([None, 300_000, 400_000], [500_000, 1_000_000, 1_000_000]) == "headroom"
    assert survey.classify([200_000, 100_000], [1_000_000, 1_000_000]) == "easy"


def test_writes_table_and_csv_from_gzipped_runs(tmp_path):
    runs_dir, out = tmp_path / "runs", tmp_path / "out"
    make_run(runs_dir, "room-v3", 1, step_at(400_000), packed=True)
    assert survey.main(["--runs-dir", str(runs_dir), "--out-dir", str(out)]) == 0
    table = (out / "survey.md").read_text()
    assert "| room-v3 | 1 | headroom / headroom | 999k | 0.00 | 1.00 | 1.00 | 401k |" in table
    with open(out / "survey.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["task"] == "room-v3" and rows[0]["any_first_0.5"] == "401408"


def test_bad_input_is_one_line(tmp_path, capsys):
    assert survey.main(["--runs-dir", str(tmp_path / "missing")]) == 2
    make_run(tmp_path, "room-v3", 1, step_at(400_000), exp_name="ppo_random_mask")
    assert survey.main(["--runs-dir", str(tmp_path), "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("survey.py: error:") for line in err)
    assert "no runs of exp_name 'ppo_vanilla'" in err[1]
