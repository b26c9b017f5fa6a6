"""The speed benchmark measures what it says: the bare environment and a real arm script, in the same process run."""

import speed_benchmark
from conftest import ROOT


def test_raw_env_and_script_sps_are_measured():
    assert speed_benchmark.raw_env_sps("reach-v3", steps=600) > 0  # crosses one 500-step reset
    sps = speed_benchmark.script_sps(str(ROOT / "ppo_vanilla.py"), "reach-v3", iterations=2, num_steps=128,
                                     extra=["--update-epochs", "1"])
    assert 0 < sps < 1e6
