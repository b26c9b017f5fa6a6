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


def test_the_compiled_path_is_timed_beside_the_eager_one_at_each_k():
    args = argparse.Namespace(**{**TINY, "repeats": 2}, compile=True, num_bins=[8])
    rows = speed_benchmark.single_table([str(ROOT / "ppo_vanilla.py")], args, ["--update-epochs", "1"])
    assert [r["what"] for r in rows] == ["raw environment", "ppo_vanilla.py K=8", "ppo_vanilla.py K=8 --compile"]
    eager, compiled = rows[1:]
    assert "compile_cold" not in eager and "speedup" not in eager
    assert 0 < compiled["ratio"] < 5 and 0 < compiled["update_share"] < 1 and 0 < compiled["speedup"] < 10
    # the first compiled run filled this invocation's inductor cache, the second loaded from it
    assert compiled["compile_cold"] > 0 and compiled["compile_warm"] > 0


def test_compile_seconds_are_read_from_the_runs_output():
    out = (
        "run x: writing y\ncompiled update_minibatch in 12.5 s (12 graphs and resumptions)\niter 1/2 ...\n"
        "compiled update_utility_critic in 3.0 s (8 graphs and resumptions)\n"
    )
    assert speed_benchmark.compile_seconds(out) == 15.5
    assert speed_benchmark.compile_seconds("run x: writing y\niter 1/2 ...\n") is None
