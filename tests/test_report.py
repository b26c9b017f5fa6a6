"""report.py: exact table numbers from synthetic run folders, every figure produced, clear one-line errors for bad
inputs, curve alignment, rliable-equivalent metrics, and the report on a real tiny run of each arm."""

import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, SHORT_RUN, run_script

import report

ITERATIONS = 10  # synthetic runs: 10 iterations of 1000 steps
K = 4


def write_csv(path: Path, header: list, rows: list):
    path.write_text("\n".join([",".join(header)] + [",".join(str(v) for v in row) for row in rows]) + "\n")


def make_run(runs_dir: Path, env_id: str, exp_name: str, seed: int, summary: dict | None, iterations=ITERATIONS,
             masking=False, utility=False, step=1000):
    """A run folder like the arm scripts write: config.json, metrics.csv (success rising linearly to 1, entropy
    falling from 4 ln K), summary.json when complete, mask_counts.csv for a masking arm."""
    folder = runs_dir / f"{env_id}__{exp_name}__{seed}"
    folder.mkdir(parents=True)
    config = {"env_id": env_id, "exp_name": exp_name, "seed": seed, "num_bins": K, "total_timesteps": 10 * step,
              "command": f"{exp_name}.py --env-id {env_id}"}
    (folder / "config.json").write_text(json.dumps(config))
    header = ["iteration", "global_step", "success_rate", "policy_entropy"] + (["rank_agreement"] if utility else [])
    rows = []
    for i in range(1, iterations + 1):
        row = [i, i * step, "nan" if i == 1 else (i - 1) / 9, 4 * np.log(K) * (1 - i / 20)]
        rows.append(row + ([0.1 * i] if utility else []))
    write_csv(folder / "metrics.csv", header, rows)
    if masking:
        cells = [f"d{d}_b{b}" for d in range(4) for b in range(K)]
        write_csv(folder / "mask_counts.csv", ["iteration", "global_step", "masks"] + cells,
                  [[i, i * step, step] + [step // (b + 1) for d in range(4) for b in range(K)]
                   for i in range(1, iterations + 1)])
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps({"total_steps": iterations * step, **summary}))
    return folder


def summary(final, auc, steps):
    return {"final_success": final, "auc": auc, "steps_to_half": steps}


@pytest.fixture(autouse=True)
def fewer_bootstrap_reps(monkeypatch):
    monkeypatch.setattr(report, "BOOTSTRAP_REPS", 500)  # speed; the interval bounds checked below are reps-proof


@pytest.fixture(scope="module")
def synthetic_report(tmp_path_factory):
    """button-press: vanilla 3 seeds + 1 incomplete (a half-written last line), random mask 3 seeds (one never
    reaches 0.5), utility mask 3 seeds; reach: vanilla 2 seeds; one run of an exp_name the paper lacks. Returns
    (report.md text, out_dir)."""
    runs = tmp_path_factory.mktemp("synthetic") / "runs"
    env = "button-press-v3"
    for seed, (final, auc, steps) in enumerate([(0.7, 0.5, 100_000), (0.8, 0.6, 200_000), (0.9, 0.7, 300_000)], 1):
        make_run(runs, env, "ppo_vanilla", seed, summary(final, auc, steps))
    incomplete = make_run(runs, env, "ppo_vanilla", 9, None, iterations=5)
    with open(incomplete / "metrics.csv", "a") as f:
        f.write("6,6000,0.5")  # a half-written last line: the run is still going
    for seed, steps in enumerate([100_000, None, 200_000], 1):
        make_run(runs, env, "ppo_random_mask", seed, summary(1.0, 0.6, steps), masking=True)
    for seed, final in enumerate([0.2, 0.3, 0.4], 1):
        make_run(runs, env, "ppo_utility_mask", seed, summary(final, 0.3, 500_000), masking=True, utility=True)
    for seed in (1, 2):
        make_run(runs, "reach-v3", "ppo_vanilla", seed, summary(1.0, 0.8, 50_000))
    make_run(runs, "reach-v3", "my_idea", 1, summary(0.5, 0.4, None))
    make_run(runs, env, "ppo_utility_mask_broadcast", 1, None, iterations=0)  # just started: a header, no rows
    out = runs.parent / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report, "BOOTSTRAP_REPS", 500)
        return run_report(runs, out), out


def table_row(markdown: str, *cells: str) -> list[str]:
    """The cells of the one markdown table row that starts with the given cells."""
    prefix = "| " + " | ".join(cells) + " |"
    rows = [line for line in markdown.splitlines() if line.startswith(prefix)]
    assert len(rows) == 1, (prefix, rows)
    return [c.strip() for c in rows[0].strip("|").split("|")]


def section(markdown: str, heading: str) -> str:
    start = markdown.index(heading)
    end = markdown.find("\n## ", start + 1)
    return markdown[start:end if end >= 0 else None]


def run_report(runs_dir: Path, out_dir: Path) -> str:
    """report.main in this process; the report.md text."""
    assert report.main(["--runs-dir", str(runs_dir), "--out-dir", str(out_dir)]) == 0
    return (out_dir / "report.md").read_text()


def test_table_numbers_are_exact(synthetic_report):
    md, _ = synthetic_report
    table2 = section(md, "## Table 2")
    # mean +- population std over the 3 complete seeds; the incomplete seed 9 is counted apart, not averaged in
    assert table_row(table2, "button-press-v3", "ppo_vanilla") == [
        "button-press-v3", "ppo_vanilla", "vanilla", "3 (+1 incomplete)", "0.800 ± 0.082", "0.857 ± 0.045",
        "0.600 ± 0.082", "0.567", "200k ± 82k", "321k", "3"]
    assert table_row(table2, "button-press-v3", "ppo_random_mask")[4:10] == [
        "1.000 ± 0.000", "0.940 ± 0.037", "0.600 ± 0.000", "0.596", "150k ± 50k (2/3 reached)", "338k"]
    assert table_row(table2, "button-press-v3", "ppo_utility_mask")[4] == "0.300 ± 0.082"
    assert table_row(table2, "button-press-v3", "ppo_utility_mask_broadcast")[3:7] == [
        "0 (+1 incomplete)", "", "0.513 ± 0.145", ""]  # only an incomplete run: listed, no numbers of ours
    assert table_row(table2, "reach-v3", "ppo_vanilla")[3:8] == ["2", "1.000 ± 0.000", "1.000 ± 0.000",
                                                                  "0.800 ± 0.000", "0.795"]
    # Tables 3 and 4 would only repeat Table 2's arms: left out
    assert "## Table 3" not in md and "## Table 4" not in md
    # an exp_name the paper lacks: its own table, with Table 2's arms on its task for comparison
    other = section(md, "## Other runs")
    assert table_row(other, "reach-v3", "my_idea")[3:9] == ["1", "0.500 ± 0.000", "", "0.400 ± 0.000", "",
                                                            "never (0/1)"]
    assert table_row(other, "reach-v3", "ppo_vanilla")[3] == "2"
    incomplete = section(md, "## Incomplete runs")
    assert table_row(incomplete, "`button-press-v3__ppo_vanilla__9`")[1:6] == [
        "button-press-v3", "ppo_vanilla", "9", "5,000", "10,000"]
    assert table_row(incomplete, "`button-press-v3__ppo_utility_mask_broadcast__1`")[4] == "0"


def test_statistics(synthetic_report):
    stats = section(synthetic_report[0], "## Statistics")
    bp = stats[stats.index("### button-press-v3"):]
    point, low, high = map(float, re.fullmatch(r"(\S+) \[(\S+), (\S+)\]", table_row(bp, "ppo_vanilla", "3")[2]).groups())
    assert point == 0.8 and 0.7 <= low < 0.8 < high <= 0.9  # IQM of 3 seeds = their mean; bootstrap within range
    assert table_row(bp, "ppo_random_mask", "3")[2] == "1.000 [1.000, 1.000]"
    vanilla_random = table_row(bp, "ppo_vanilla", "ppo_random_mask")
    assert vanilla_random[2] == "0.000 [0.000, 0.000]"  # every vanilla seed below every random seed
    assert "final success: ppo_random_mask ahead; the IQM intervals do not overlap" in vanilla_random[4]
    assert "AUC: the IQM intervals overlap" in vanilla_random[4]  # vanilla 0.5-0.7 vs random 0.6
    assert "not separated" in vanilla_random[4]
    # fewer than 2 complete seeds: no interval
    assert "Left out (fewer than 2 complete seeds): my_idea." in stats


def test_fast_metrics_equal_rliable():
    from rliable import metrics

    rng = np.random.default_rng(0)
    for n_x, n_y in [(3, 3), (3, 5), (4, 2), (10, 7)]:
        x = rng.integers(0, 4, (n_x, 1)) / 4  # ties on purpose
        y = rng.integers(0, 4, (n_y, 1)) / 4
        assert report.probability_of_improvement(x, y) == pytest.approx(metrics.probability_of_improvement(x, y))
        assert report.iqm(x)[0] == pytest.approx(metrics.aggregate_iqm(x))


def test_every_figure_is_produced(synthetic_report):
    md, out = synthetic_report
    links = re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", md)
    files = {f"figures/{p.name}" for p in (out / "figures").iterdir()}
    assert set(links) == files  # every linked figure exists, every figure is linked (relative links)
    expected = {"table2_final_success_across_tasks.png", "table2_button-press-v3_success.png",
                "table2_button-press-v3_efficiency.png", "table2_button-press-v3_entropy.png",
                "table2_reach-v3_success.png", "other_reach-v3_success.png", "rank_agreement_button-press-v3.png",
                "heatmap_button-press-v3__ppo_random_mask.png", "heatmap_button-press-v3__ppo_utility_mask.png"}
    assert expected <= {Path(f).name for f in files}
    for f in files:
        assert (out / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_curves_are_aligned_without_extrapolation(tmp_path):
    long = report.load_run(make_run(tmp_path, "reach-v3", "a", 1, summary(1, 1, 1), iterations=10, step=1000))
    short = report.load_run(make_run(tmp_path, "reach-v3", "a", 2, None, iterations=8, step=512))
    grid = report.step_grid([long, short], points=11)
    np.testing.assert_allclose(grid, np.linspace(512, 10_000, 11))
    values = report.aligned([long, short], "policy_entropy", grid)
    # entropy is linear in the iteration, so interpolation is exact: 4 ln K (1 - step / 20000) for the long run
    inside = grid >= 1000
    np.testing.assert_allclose(values[0, inside], 4 * np.log(K) * (1 - grid[inside] / 20_000))
    assert np.isnan(values[0, ~inside]).all()  # before its first logged step
    assert np.isnan(values[1, grid > 8 * 512]).all()  # after its last: never extrapolated
    assert not np.isnan(values[1, grid <= 8 * 512]).any()
    success = report.aligned([long], "success_rate", grid)
    assert success[0, 1] == pytest.approx((grid[1] - 1000) / 1000 / 9)  # NaN before the first episode counts as 0


def break_config(run):
    (run / "config.json").write_text("{not json")
    return run / "config.json"


def drop_metrics(run):
    (run / "metrics.csv").unlink()
    return run / "metrics.csv"


def drop_column(run):
    write_csv(run / "metrics.csv", ["iteration", "global_step", "policy_entropy"], [[1, 1000, 5.0]])
    return run / "metrics.csv"


def bad_cell(run):
    write_csv(run / "metrics.csv", ["iteration", "global_step", "success_rate", "policy_entropy"],
              [[1, 1000, 0.5, 5.0], [2, 2000, "oops", 5.0], [3, 3000, 0.5, 5.0]])
    return run / "metrics.csv"


def empty_metrics(run):
    (run / "metrics.csv").write_text("")
    return run / "metrics.csv"


def break_summary(run):
    (run / "summary.json").write_text('{"auc": 0.5}')
    return run / "summary.json"


def break_mask_counts(run):
    write_csv(run / "mask_counts.csv", ["iteration", "global_step", "masks", "d0_b0"], [[1, 1000]])
    return run / "mask_counts.csv"


def named_run_without_config(run):
    (run / "config.json").unlink()
    return run / "config.json"


@pytest.mark.parametrize("breaker", [break_config, drop_metrics, drop_column, bad_cell, empty_metrics,
                                     break_summary, break_mask_counts, named_run_without_config])
def test_malformed_input_names_the_file(tmp_path, capsys, breaker):
    runs = tmp_path / "runs"
    make_run(runs, "reach-v3", "ppo_vanilla", 1, summary(1, 1, 1000))
    bad = breaker(make_run(runs, "reach-v3", "ppo_random_mask", 1, summary(1, 1, 1000), masking=True))
    assert report.main(["--runs-dir", str(runs), "--out-dir", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("report.py: error: ") and str(bad) in err


@pytest.mark.parametrize("make", ["empty", "missing", "only_other_folders"])
def test_no_runs_is_a_clear_error(tmp_path, capsys, make):
    runs = tmp_path / "runs"
    if make != "missing":
        runs.mkdir()
    if make == "only_other_folders":
        (runs / "figures").mkdir()
    assert report.main(["--runs-dir", str(runs), "--out-dir", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(runs) in err


def test_command_line_error_has_no_traceback(tmp_path):
    (tmp_path / "runs").mkdir()
    result = subprocess.run([sys.executable, str(ROOT / "report.py"), "--runs-dir", str(tmp_path / "runs"),
                             "--out-dir", str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1 and "no run folders" in result.stderr


def test_report_on_a_real_tiny_run_of_each_arm(tmp_path):
    scripts = sorted(p.name for p in ROOT.glob("ppo_*.py"))
    assert {"ppo_vanilla.py", "ppo_random_mask.py", "ppo_utility_mask.py"} <= set(scripts)
    runs = tmp_path / "runs"

    def tiny_run(script):
        # masking starts at step 0 so the heat maps have something to show
        flags = ["--mask-warmup-start", "0", "--mask-warmup-end", "512"] if "mask_warmup_start" in (
            ROOT / script).read_text() else []
        return run_script(script, runs, *SHORT_RUN, *flags)

    with ThreadPoolExecutor(max_workers=2) as pool:
        for script, result in zip(scripts, pool.map(tiny_run, scripts)):
            assert result.returncode == 0, (script, result.stderr[-2000:])
    out = tmp_path / "out"
    md = run_report(runs, out)
    for script in scripts:
        exp_name = script.removesuffix(".py")
        assert f"| reach-v3 | {exp_name} |" in md
        if (runs / f"reach-v3__{exp_name}__1" / "mask_counts.csv").exists():
            assert (out / "figures" / f"heatmap_reach-v3__{exp_name}.png").exists()
    assert (out / "figures" / "table2_reach-v3_success.png").exists()
    assert "Left out (fewer than 2 complete seeds)" in md  # one seed each: no intervals
