"""results/entropy_rank.py: the entropy and rank-agreement table from gzipped metrics.csv files of complete runs."""

import csv
import gzip
import json
import subprocess
import sys

from conftest import ROOT


def write_run(folder, name, entropies, ranks=None, complete=True):
    """A run folder as report.py reads it: config.json, gzipped metrics.csv and, if complete, summary.json."""
    run = folder / name
    run.mkdir(parents=True)
    env_id, exp_name, seed = name.split("__")
    (run / "config.json").write_text(
        json.dumps({"env_id": env_id, "exp_name": exp_name, "seed": int(seed), "num_bins": 4})
    )
    with gzip.open(run / "metrics.csv.gz", "wt", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["iteration", "global_step", "success_rate", "policy_entropy"] + (["rank_agreement"] if ranks else [])
        )
        for i, entropy in enumerate(entropies):
            writer.writerow([i + 1, (i + 1) * 100_000, 0.0, entropy] + ([ranks[i]] if ranks else []))
    if complete:
        (run / "summary.json").write_text(json.dumps({"final_success": 1.0, "auc": 0.5, "steps_to_half": None}))


def test_table_values(tmp_path):
    # 12 iterations of 100k steps: 150k is the 2nd row, 300k the 3rd, the end the mean of rows 3-12
    write_run(tmp_path, "t-v3__ppo_utility_mask__1", [16, 15, 14] + [11] * 9, ["", 0.3, 0.2] + [0.1] * 9)
    write_run(tmp_path, "t-v3__ppo_utility_mask__2", [16, 15, 14] + [13] * 9, ["", 0.3, 0.2] + [0.3] * 9)
    write_run(tmp_path, "t-v3__ppo_vanilla__1", [16] * 12)
    write_run(tmp_path, "t-v3__ppo_vanilla__2", [0] * 12, complete=False)  # incomplete: left out
    out = subprocess.run(
        [sys.executable, str(ROOT / "results" / "entropy_rank.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    rows = {tuple(cell.strip() for cell in line.split("|")[1:4]): line.split("|")[4:7] for line in out[2:]}
    entropy = rows[("t-v3__ppo_utility_mask", "2", "policy_entropy")]
    assert entropy[0].strip() == "15.000 (n = 2)" and entropy[1].strip() == "14.000 (n = 2)"
    assert entropy[2].strip().startswith("12.200 [11.300, 13.100]")  # (14 + 9 x 11) / 10, (14 + 9 x 13) / 10
    assert rows[("t-v3__ppo_utility_mask", "2", "rank_agreement")][2].strip().startswith("0.200 [")
    assert rows[("t-v3__ppo_vanilla", "1", "policy_entropy")][2].strip() == "16.000 (n = 1)"


def test_bad_input_is_one_line(tmp_path):
    script = str(ROOT / "results" / "entropy_rank.py")
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes").mkdir()  # a folder without run folders
    for argv, message in (
        ([], "usage: python results/entropy_rank.py RUNS_FOLDER"),
        ([str(tmp_path / "empty")], "no run folders"),
        ([str(tmp_path / "other")], "no run folders"),
        ([str(tmp_path / "missing")], "no such directory"),
    ):
        result = subprocess.run([sys.executable, script, *argv], capture_output=True, text=True, cwd=ROOT)
        assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr
