"""The speed benchmark measures what it says: the bare environment and real arm scripts, alone and several at once."""

import argparse

import speed_benchmark
from conftest import ROOT

TINY = dict(env_id="reach-v3", iterations=2, num_steps=128, env_steps=600, repeats=1)  # 600 steps cross a reset


def test_single_process_table_has_the_env_and_every_script():
    scripts = [str(ROOT / "ppo_vanilla.py"), str(ROOT / "ppo_random_mask.py")]
    rows = speed_benchmark.single_table(scripts, argparse.Namespace(**TINY), ["--update-epochs", "1"])
    assert [r["what"] for r in rows] == ["raw environment", "ppo_vanilla.py", "ppo_random_mask.py"]
    assert rows[0]["ratio"] == 1.0 and all(0 < r["sps"] < 1e6 for r in rows)
    assert all(0 < r["ratio"] < 5 for r in rows[1:])


def test_parallel_table_runs_copies_at_once():
    args = argparse.Namespace(**TINY, parallel=[2])
    (row,) = speed_benchmark.parallel_table(str(ROOT / "ppo_vanilla.py"), args, ["--update-epochs", "1"])
    assert row["copies"] == 2 and 0 < row["sps_each"] < 1e6
    assert 0 < row["efficiency"] < 5 and 0 < row["env_efficiency"] < 5
    assert 0 < row["update_share"] < 1  # the update's share of each copy's iteration, read from update_seconds
