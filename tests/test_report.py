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

import report
from conftest import ROOT, SHORT_RUN, run_script, write_untrained_pretrained_file
from reporting import figures, stats

ITERATIONS = 10  # synthetic runs: 10 iterations of 1000 steps
K = 4


def write_csv(path: Path, header: list, rows: list):
    path.write_text("\n".join([",".join(header)] + [",".join(str(v) for v in row) for row in rows]) + "\n")


RAMP_END = 5000  # synthetic masking runs: mask_fraction ramps to MASKED by step 5000 and stays there
MASKED = 0.24


def make_run(
    runs_dir: Path,
    env_id: str,
    exp_name: str,
    seed: int,
    summary: dict | None,
    iterations=ITERATIONS,
    masking=False,
    utility=False,
    step=1000,
    last_step: dict | None = None,
    unmasked_entropy=True,
    settings: dict | None = None,
):
    """A run folder like the arm scripts write: config.json (with `settings`), metrics.csv (success rising linearly
    to 1, entropy falling from 4 ln K), summary.json when complete; a masking arm adds mask_counts.csv, metrics.csv
    mask_fraction and, unless unmasked_entropy is False (a run written before the arms logged the unmasked policy's
    entropy), sampling_entropy. last_step: the run records last-step success (metrics.csv success_rate_last_step,
    half of success_rate; summary.json these *_last_step values); None: a run from before it did."""
    folder = runs_dir / f"{env_id}__{exp_name}__{seed}"
    folder.mkdir(parents=True)
    config = {
        "env_id": env_id,
        "exp_name": exp_name,
        "seed": seed,
        "num_bins": K,
        "total_timesteps": 10 * step,
        **({"mask_budget": 0.25, "mask_warmup_start": 0, "mask_warmup_end": RAMP_END} if masking else {}),
        "threads": 1,
        "runs_dir": "runs",
        **(settings or {}),
        "command": f"{exp_name}.py --env-id {env_id}",
        "host": f"host{seed}",
        "resumed": [],
    }
    (folder / "config.json").write_text(json.dumps(config))
    header = (
        ["iteration", "global_step", "success_rate", "policy_entropy"]
        + (["rank_agreement"] if utility else [])
        + (["mask_fraction"] if masking else [])
        + (["sampling_entropy"] if masking and unmasked_entropy else [])
        + (["success_rate_last_step"] if last_step is not None else [])
    )
    rows = []
    for i in range(1, iterations + 1):
        success = "nan" if i == 1 else (i - 1) / 9
        row = [i, i * step, success, 4 * np.log(K) * (1 - i / 20)] + ([0.1 * i] if utility else [])
        row += [MASKED * min(i * step / RAMP_END, 1)] if masking else []
        row += [3 * np.log(K) * (1 - i / 20)] if masking and unmasked_entropy else []
        rows.append(row + ([success if i == 1 else success / 2] if last_step is not None else []))
    write_csv(folder / "metrics.csv", header, rows)
    if masking:
        cells = [f"d{d}_b{b}" for d in range(4) for b in range(K)]
        write_csv(
            folder / "mask_counts.csv",
            ["iteration", "global_step", "masks"] + cells,
            [
                [i, i * step, step] + [step // (b + 1) for d in range(4) for b in range(K)]
                for i in range(1, iterations + 1)
            ],
        )
    if summary is not None:
        last = {f"{k}_last_step": v for k, v in (last_step or {}).items()}
        (folder / "summary.json").write_text(json.dumps({"total_steps": iterations * step, **summary, **last}))
    return folder


def summary(final, auc, steps):
    return {"final_success": final, "auc": auc, "steps_to_half": steps}


@pytest.fixture(autouse=True)
def fewer_bootstrap_reps(monkeypatch):
    monkeypatch.setattr(stats, "BOOTSTRAP_REPS", 500)  # speed; the interval bounds checked below are reps-proof


@pytest.fixture(scope="module")
def synthetic_report(tmp_path_factory):
    """button-press: vanilla 3 seeds + 1 incomplete (a half-written last line) + 1 smoke run with other settings,
    random mask 3 seeds (one never reaches 0.5; written before the arms logged the unmasked entropy), utility mask 3
    seeds; reach: vanilla 2 seeds; one run of an exp_name the paper lacks. Returns (report.md text, out_dir)."""
    runs = tmp_path_factory.mktemp("synthetic") / "runs"
    env = "button-press-v3"
    for seed, (final, auc, steps) in enumerate([(0.7, 0.5, 100_000), (0.8, 0.6, 200_000), (0.9, 0.7, 300_000)], 1):
        make_run(runs, env, "ppo_vanilla", seed, summary(final, auc, steps))
    incomplete = make_run(runs, env, "ppo_vanilla", 9, None, iterations=5)
    with open(incomplete / "metrics.csv", "a") as f:
        f.write("6,6000,0.5")  # a half-written last line: the run is still going
    # a short run under the same exp_name, in another machine's runs_dir: other settings, set apart
    make_run(
        runs,
        env,
        "ppo_vanilla",
        5,
        summary(0.0, 0.1, None),
        iterations=4,
        step=1024,
        settings={"total_timesteps": 4096, "num_steps": 1024, "runs_dir": "elsewhere", "threads": 4},
    )
    for seed, steps in enumerate([100_000, None, 200_000], 1):
        make_run(runs, env, "ppo_random_mask", seed, summary(1.0, 0.6, steps), masking=True, unmasked_entropy=False)
    for seed, final in enumerate([0.2, 0.3, 0.4], 1):
        make_run(runs, env, "ppo_utility_mask", seed, summary(final, 0.3, 500_000), masking=True, utility=True)
    for seed in (1, 2):
        make_run(runs, "reach-v3", "ppo_vanilla", seed, summary(1.0, 0.8, 50_000))
    make_run(runs, "reach-v3", "my_idea", 1, summary(0.5, 0.4, None))
    make_run(runs, env, "ppo_utility_mask_broadcast", 1, None, iterations=0)  # just started: a header, no rows
    out = runs.parent / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stats, "BOOTSTRAP_REPS", 500)
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
    return markdown[start : end if end >= 0 else None]


def run_report(runs_dir: Path, out_dir: Path, *options: str) -> str:
    """report.main in this process; the report.md text."""
    assert report.main(["--runs-dir", str(runs_dir), "--out-dir", str(out_dir), *options]) == 0
    return (out_dir / "report.md").read_text()


def test_table_numbers_are_exact(synthetic_report):
    md, _ = synthetic_report
    table2 = section(md, "## Table 2")
    # mean +- population std over the 3 complete seeds; the incomplete seed 9 is counted apart, not averaged in
    assert table_row(table2, "button-press-v3", "ppo_vanilla") == [
        "button-press-v3",
        "ppo_vanilla",
        "vanilla",
        "3 (+1 incomplete) (+1 set apart)",
        "10,000",
        "n/a",
        "0.800 ± 0.082",
        "0.857 ± 0.045",
        "0.600 ± 0.082",
        "0.567",
        "200k ± 82k",
        "321k",
        "3",
    ]
    assert table_row(table2, "button-press-v3", "ppo_random_mask")[4:12] == [
        "10,000",
        "0.240 (budget 0.25)",
        "1.000 ± 0.000",
        "0.940 ± 0.037",
        "0.600 ± 0.000",
        "0.596",
        "150k ± 50k (2/3 reached)",
        "338k",
    ]
    assert table_row(table2, "button-press-v3", "ppo_utility_mask")[5:7] == ["0.240 (budget 0.25)", "0.300 ± 0.082"]
    assert table_row(table2, "button-press-v3", "ppo_utility_mask_broadcast")[3:9] == [
        "0 (+1 incomplete)",
        "",
        "",
        "",
        "0.513 ± 0.145",
        "",
    ]  # only an incomplete run: listed, no numbers of ours
    assert table_row(table2, "reach-v3", "ppo_vanilla")[3:10] == [
        "2",
        "10,000",
        "n/a",
        "1.000 ± 0.000",
        "1.000 ± 0.000",
        "0.800 ± 0.000",
        "0.795",
    ]
    # Tables 3 and 4 would only repeat Table 2's arms: left out
    assert "## Table 3" not in md and "## Table 4" not in md
    # an exp_name the paper lacks: its own table, with Table 2's arms on its task for comparison
    other = section(md, "## Other runs")
    assert table_row(other, "reach-v3", "my_idea")[3:11] == [
        "1",
        "10,000",
        "n/a",
        "0.500 ± 0.000",
        "",
        "0.400 ± 0.000",
        "",
        "never (0/1)",
    ]
    assert table_row(other, "reach-v3", "ppo_vanilla")[3] == "2"
    incomplete = section(md, "## Incomplete runs")
    assert table_row(incomplete, "`button-press-v3__ppo_vanilla__9`")[1:6] == [
        "button-press-v3",
        "ppo_vanilla",
        "9",
        "5,000",
        "10,000",
    ]
    assert table_row(incomplete, "`button-press-v3__ppo_utility_mask_broadcast__1`")[4] == "0"
    # the smoke run: in no cell, named with its differing settings (runs_dir and threads may differ)
    apart = section(md, "## Runs set apart")
    assert table_row(apart, "`button-press-v3__ppo_vanilla__5`")[1:] == [
        "button-press-v3",
        "ppo_vanilla",
        "5",
        "complete",
        "4,096",
        "settings differ from its cell's: total_timesteps: "
        "this run 4096, cell 10000; num_steps: this run 1024, cell (absent)",
    ]
    assert "from 15 run folders: 12 complete and 2 incomplete in 6 arms, 1 set apart." in md


def test_statistics(synthetic_report):
    statistics = section(synthetic_report[0], "## Statistics")
    bp = statistics[statistics.index("### button-press-v3") :]
    point, low, high = map(
        float, re.fullmatch(r"(\S+) \[(\S+), (\S+)\]", table_row(bp, "ppo_vanilla", "3")[2]).groups()
    )
    assert point == 0.8 and 0.7 <= low < 0.8 < high <= 0.9  # IQM of 3 seeds = their mean; bootstrap within range
    assert table_row(bp, "ppo_random_mask", "3")[2] == "1.000 [1.000, 1.000]"
    vanilla_random = table_row(bp, "ppo_vanilla", "ppo_random_mask")
    assert vanilla_random[2] == "0.000 [0.000, 0.000]"  # every vanilla seed below every random seed
    # ... yet 3 seeds per arm get no separation verdict
    assert vanilla_random[5] == (
        "final success: no separation verdict below 5 complete seeds per arm (n = 3, 3). "
        "AUC: no separation verdict below 5 complete seeds per arm (n = 3, 3). "
        "steps to 0.5: no separation verdict below 5 complete seeds per arm (n = 3, 3)."
    )
    # fewer than 2 complete seeds: no interval
    assert "Left out (fewer than 2 complete seeds): my_idea." in statistics


def verdict(x: list, y: list, metric="final_success") -> str:
    """comparison_sentence for two arms' scores, with their rliable intervals."""
    x, y = np.array(x, dtype=float)[:, None], np.array(y, dtype=float)[:, None]
    sign = -1.0 if metric in report.FEWER_IS_BETTER else 1.0  # as improvement_interval orients it
    return report.comparison_sentence(
        metric,
        "X",
        x,
        "Y",
        y,
        report.interval_estimate(x, report.iqm),
        report.interval_estimate(y, report.iqm),
        report.interval_estimate((sign * x, sign * y), report.probability_of_improvement),
    )


def test_separation_verdicts_need_5_seeds_and_room_between_ceiling_and_floor():
    assert verdict([1, 1, 1], [0.99, 0.99, 0.98]) == (
        "final success: both arms at the ceiling (every complete seed >= 0.95): no separation verdict."
    )
    assert verdict([1] * 6, [0.99, 0.99, 0.98, 0.97, 0.99, 0.96]).endswith(
        "at the ceiling (every complete seed >= 0.95): no separation verdict."
    )
    assert verdict([0, 0, 0.05, 0, 0, 0], [0.01, 0, 0, 0.02, 0, 0], "auc") == (
        "AUC: both arms at the floor (every complete seed <= 0.05): no separation verdict."
    )
    assert verdict([0.3, 0.4, 0.5], [0.7, 0.8, 0.9]) == (
        "final success: no separation verdict below 5 complete seeds per arm (n = 3, 3)."
    )
    assert verdict([0.3, 0.4, 0.5, 0.35, 0.45], [0.7, 0.8, 0.9]).endswith("(n = 5, 3).")
    assert verdict([0.50, 0.55, 0.45, 0.52, 0.48, 0.50], [0.90, 0.92, 0.88, 0.91, 0.93, 0.89]) == (
        "final success: Y ahead; the IQM intervals do not overlap and P(X > Y)'s interval excludes 0.5: separated on "
        "both."
    )
    mixed = [0.5, 0.6, 0.7, 0.8, 0.9, 0.55]
    assert verdict(mixed, mixed[::-1]) == (
        "final success: the IQM intervals overlap and P(X > Y)'s interval contains 0.5: not separated."
    )


def test_steps_to_half_fewer_is_better_and_never_reached_counts_as_the_run_length():
    fast, slow = [100e3, 110e3, 120e3, 105e3, 115e3], [300e3, 320e3, 310e3, 305e3, 315e3]
    assert verdict(fast, slow, "steps_to_half") == (
        "steps to 0.5: X ahead; the IQM intervals do not overlap and P(X < Y)'s interval excludes 0.5: separated on "
        "both."
    )

    class Cell:  # an arm with two complete seeds, one of which never reached 0.5 in its 1M steps
        complete = [type("R", (), {"total_steps": 999_424})(), type("R", (), {"total_steps": 999_424})()]

        def scores(self, metric):
            return [200e3, None]

    assert report.score_matrix(Cell(), "steps_to_half").ravel().tolist() == [200e3, 999_424]

    class Slower(Cell):
        def scores(self, metric):
            return [300e3, None]

    # P(X < Y): 2 wins and a tie of 4 pairs
    assert report.improvement_interval(Cell(), Slower(), "steps_to_half")[0] == 0.625
    assert report.fmt_interval(414e3, 380.4e3, 450.6e3, "steps_to_half") == "414k [380k, 451k]"


def test_fast_metrics_equal_rliable():
    from rliable import metrics

    rng = np.random.default_rng(0)
    for n_x, n_y in [(3, 3), (3, 5), (4, 2), (10, 7)]:
        x = rng.integers(0, 4, (n_x, 1)) / 4  # ties on purpose
        y = rng.integers(0, 4, (n_y, 1)) / 4
        assert report.probability_of_improvement(x, y) == pytest.approx(metrics.probability_of_improvement(x, y))
        assert report.iqm(x)[0] == pytest.approx(metrics.aggregate_iqm(x))
        curves = rng.random((n_x, 1, 6))
        np.testing.assert_allclose(
            report.iqm_per_point(curves), [metrics.aggregate_iqm(curves[..., i]) for i in range(6)]
        )


def test_every_figure_is_produced(synthetic_report):
    md, out = synthetic_report
    links = re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", md)
    files = {f"figures/{p.name}" for p in (out / "figures").iterdir()}
    assert set(links) == files  # every linked figure exists, every figure is linked (relative links)
    expected = {
        "table2_final_success_across_tasks.png",
        "table2_button-press-v3_success.png",
        "table2_button-press-v3_efficiency.png",
        "table2_button-press-v3_entropy.png",
        "table2_reach-v3_success.png",
        "other_reach-v3_success.png",
        "rank_agreement_button-press-v3.png",
        "heatmap_button-press-v3__ppo_random_mask.png",
        "heatmap_button-press-v3__ppo_utility_mask.png",
        "table2_button-press-v3_success_iqm.png",
        "table2_reach-v3_success_iqm.png",
        "other_reach-v3_success_iqm.png",
    }
    assert expected <= {Path(f).name for f in files}
    for f in files:
        assert (out / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # every task section: the IQM success figure right after the mean +- std one
    mean_std = [i for i, link in enumerate(links) if link.endswith("_success.png")]
    assert len(mean_std) == 3
    for i in mean_std:
        assert links[i + 1] == links[i].replace("_success.png", "_success_iqm.png")


def test_iqm_band():
    """The IQM at each point exactly (scipy's 25% trimmed mean over seeds) inside its bootstrap interval; the
    interval shrinks as the seeds agree, to zero width for identical seeds; rliable's own per-point recipe gives the
    same numbers; NaN where a seed lacks data; no interval from one seed."""
    from rliable import library, metrics
    from scipy.stats import trim_mean

    rng = np.random.default_rng(1)
    for seeds in (3, 4, 7, 10):
        values = rng.random((seeds, 40))
        center, low, high = report.iqm_band(values)
        np.testing.assert_allclose(center, trim_mean(values, 0.25, axis=0), rtol=0, atol=1e-12)
        assert (low <= center + 1e-12).all() and (center <= high + 1e-12).all() and (high - low > 0).all()
        # seeds 10x closer to their per-point mean: the same resamples (seeded), a band exactly 10x narrower
        agreeing = values.mean(axis=0) + 0.1 * (values - values.mean(axis=0))
        _, agree_low, agree_high = report.iqm_band(agreeing)
        np.testing.assert_allclose(agree_high - agree_low, 0.1 * (high - low), atol=1e-12)
    same = np.tile(rng.random(40), (5, 1))
    center, low, high = report.iqm_band(same)
    np.testing.assert_allclose(center, same[0], atol=1e-12)
    np.testing.assert_allclose(low, same[0], atol=1e-12)
    np.testing.assert_allclose(high, same[0], atol=1e-12)

    # rliable's sample-efficiency-curve recipe, unvectorized, from the same seed: the same band
    values = rng.random((5, 12))
    np.random.seed(stats.BOOTSTRAP_SEED)
    point, interval = library.get_interval_estimates(
        {"arm": values[:, None, :]},
        lambda s: np.array([metrics.aggregate_iqm(s[..., i]) for i in range(12)]),
        reps=stats.BOOTSTRAP_REPS,
    )
    center, low, high = report.iqm_band(values)
    np.testing.assert_allclose(center, point["arm"], atol=1e-12)
    np.testing.assert_allclose(np.stack([low, high]), interval["arm"], atol=1e-12)

    values[1, :4] = np.nan  # a seed without data there: no IQM, no band
    center, low, high = report.iqm_band(values)
    assert np.isnan(center[:4]).all() and np.isnan(low[:4]).all() and np.isnan(high[:4]).all()
    np.testing.assert_allclose(center[4:], trim_mean(values[:, 4:], 0.25, axis=0), atol=1e-12)
    center, low, high = report.iqm_band(values[:1, 4:])  # one seed: its curve, no interval
    np.testing.assert_allclose(center, values[0, 4:])
    assert np.isnan(low).all() and np.isnan(high).all()


def test_bootstrap_is_seeded():
    """The same scores give the same interval whatever numpy's global generator holds (rliable draws from it), and
    the caller's generator is left as it was."""
    x = np.array([[0.1], [0.5], [0.7], [0.9], [0.3]])
    np.random.seed(1)
    first = report.interval_estimate(x, report.iqm)
    after = np.random.random()
    np.random.seed(2)
    assert report.interval_estimate(x, report.iqm) == first
    np.random.seed(1)
    assert np.random.random() == after  # the call consumed nothing of the caller's stream


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
    write_csv(
        run / "metrics.csv",
        ["iteration", "global_step", "success_rate", "policy_entropy"],
        [[1, 1000, 0.5, 5.0], [2, 2000, "oops", 5.0], [3, 3000, 0.5, 5.0]],
    )
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


@pytest.mark.parametrize(
    "breaker",
    [
        break_config,
        drop_metrics,
        drop_column,
        bad_cell,
        empty_metrics,
        break_summary,
        break_mask_counts,
        named_run_without_config,
    ],
)
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


def test_an_out_dir_that_is_a_file_is_one_line_and_writes_nothing(synthetic_report, tmp_path, capsys):
    runs_dir = synthetic_report[1].parent / "runs"
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    with_file = tmp_path / "out"  # report.md could go here, but its figures/ is a file
    with_file.mkdir()
    (with_file / "figures").write_text("not a folder")
    for out_dir, culprit in ((a_file, a_file), (with_file, with_file / "figures")):
        assert report.main(["--runs-dir", str(runs_dir), "--out-dir", str(out_dir)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.endswith(f"{culprit} is a file, not a directory")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a_file", "figures", "out"]  # nothing written


def test_command_line_error_has_no_traceback(tmp_path):
    (tmp_path / "runs").mkdir()
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "report.py"),
            "--runs-dir",
            str(tmp_path / "runs"),
            "--out-dir",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1 and "no run folders" in result.stderr


def test_report_on_a_real_tiny_run_of_each_arm(tmp_path):
    scripts = sorted(p.name for p in ROOT.glob("ppo_*.py"))
    assert {"ppo_vanilla.py", "ppo_random_mask.py", "ppo_utility_mask.py"} <= set(scripts)
    runs = tmp_path / "runs"

    pretrained = write_untrained_pretrained_file(tmp_path / "untrained.pt")

    def tiny_run(script):
        # masking starts at step 0 so the heat maps have something to show
        flags = (
            ["--mask-warmup-start", "0", "--mask-warmup-end", "512"]
            if "mask_warmup_start" in (ROOT / script).read_text()
            else []
        )
        if script == "ppo_prior_mask.py":  # it masks by a pretrained policy's probabilities: it needs one
            flags += ["--init-from", str(pretrained)]
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


def test_last_step_success_definition(tmp_path, capsys):
    """--success-definition last takes every number from the last-step fields; runs that predate them are set apart
    as lacking them, never read as 0."""
    runs = tmp_path / "runs"
    for seed, final in enumerate([0.4, 0.5, 0.6], 1):
        make_run(
            runs,
            "button-press-v3",
            "ppo_vanilla",
            seed,
            summary(0.9, 0.8, 100_000),
            last_step=summary(final, 0.3, 400_000),
        )
    make_run(runs, "button-press-v3", "ppo_vanilla", 4, summary(0.9, 0.8, 100_000))  # written before last-step fields
    make_run(runs, "button-press-v3", "ppo_vanilla", 5, None, iterations=3)  # the same, still running
    md = run_report(runs, tmp_path / "last", "--success-definition", "last")
    assert "**Success definition: last**: an episode succeeds if" in md and "--success-definition last" in md
    row = table_row(section(md, "## Table 2"), "button-press-v3", "ppo_vanilla")
    assert row[3:12] == [
        "3 (+2 set apart)",
        "10,000",
        "n/a",
        "0.500 ± 0.082",
        "0.857 ± 0.045",
        "0.300 ± 0.000",
        "0.567",
        "400k ± 0k",
        "321k",
    ]
    apart = section(md, "## Runs set apart")
    assert table_row(apart, "`button-press-v3__ppo_vanilla__4`")[6] == (
        "lacks metrics.csv success_rate_last_step, summary.json final_success_last_step, summary.json auc_last_step, "
        "summary.json steps_to_half_last_step (--success-definition last)"
    )
    assert table_row(apart, "`button-press-v3__ppo_vanilla__5`")[4:] == [
        "incomplete",
        "3,000",
        "lacks metrics.csv success_rate_last_step (--success-definition last)",
    ]
    assert "## Incomplete runs" not in md
    # the default, any: the same runs, all five in the cell
    md = run_report(runs, tmp_path / "any")
    assert "**Success definition: any**" in md and "Runs set apart" not in md
    assert table_row(section(md, "## Table 2"), "button-press-v3", "ppo_vanilla")[3:7] == [
        "4 (+1 incomplete)",
        "10,000",
        "n/a",
        "0.900 ± 0.000",
    ]
    # an unknown definition: argparse's usage and one error line, exit 2, nothing written
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "report.py"),
            "--runs-dir",
            str(runs),
            "--out-dir",
            str(tmp_path / "bad"),
            "--success-definition",
            "first",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "invalid choice: 'first'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "bad").exists()


def test_gzipped_csvs_read_like_plain_ones(tmp_path, capsys):
    import gzip
    import shutil

    runs = tmp_path / "runs"
    for seed in (1, 2):
        make_run(runs, "reach-v3", "ppo_random_mask", seed, summary(0.5 * seed, 0.4, 3000), masking=True)
    plain = run_report(runs, tmp_path / "plain")
    for path in list(runs.glob("*/*.csv")):
        with open(path, "rb") as f, gzip.open(f"{path}.gz", "wb") as out:
            shutil.copyfileobj(f, out)
        path.unlink()
    packed = run_report(runs, tmp_path / "packed")
    assert packed.replace("packed", "plain") == plain
    # both forms of one file: ambiguous, one line naming it
    write_csv(runs / "reach-v3__ppo_random_mask__1" / "metrics.csv", ["global_step"], [[1]])
    assert report.main(["--runs-dir", str(runs), "--out-dir", str(tmp_path / "both")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"report.py: error: {runs / 'reach-v3__ppo_random_mask__1' / 'metrics.csv'}: both it and "
        "metrics.csv.gz exist; keep one"
    )
    # a damaged gzip file: one line naming it
    (runs / "reach-v3__ppo_random_mask__1" / "metrics.csv").unlink()
    (runs / "reach-v3__ppo_random_mask__2" / "mask_counts.csv.gz").write_bytes(b"\x1f\x8b\x08garbage")
    assert report.main(["--runs-dir", str(runs), "--out-dir", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{runs / 'reach-v3__ppo_random_mask__2' / 'mask_counts.csv.gz'}: " in err


def test_entropy_figure_compares_unmasked_entropies_only(synthetic_report):
    md, _ = synthetic_report
    table2 = section(md, "## Table 2")
    bp = table2[table2.index("### button-press-v3") :]
    note = next(line for line in bp.splitlines() if line.startswith("Policy entropy:"))
    assert note == (
        "Policy entropy: the unmasked policy's (`policy_entropy`), comparable across arms; the masked "
        "arms' sampling distribution is in `sampling_entropy`. Left out: ppo_random_mask (seeds 1, 2, 3): "
        "written before the masked arms logged the unmasked entropy, their `policy_entropy` is the masked "
        "sampling distribution's, not comparable."
    )
    reach = table2[table2.index("### reach-v3") : table2.index("### button-press-v3")]
    assert "Policy entropy: the unmasked policy's" in reach and "Left out" not in reach


def test_masked_after_ramp(tmp_path):
    """The budget spent: mean mask_fraction from the ramp's end on; 0 where nothing is masked (boost); n/a for an
    arm without a mask, or whose runs end before the ramp does."""

    def cell(*runs):
        arm = report.Arm("reach-v3", "x", report.SUCCESS_DEFINITIONS["any"], [report.load_run(r) for r in runs])
        return report.masked_cell(arm)

    masked = make_run(tmp_path, "reach-v3", "masked", 1, summary(1, 1, 1), masking=True)
    assert report.load_run(masked).masked_after_ramp() == pytest.approx(MASKED)
    assert cell(masked) == "0.240 (budget 0.25)"
    assert cell(make_run(tmp_path, "reach-v3", "vanilla", 1, summary(1, 1, 1))) == "n/a"
    short = make_run(tmp_path, "reach-v3", "short", 1, summary(1, 1, 1), masking=True, step=400)  # ends at 4000
    assert cell(masked, short) == "n/a (ramp unfinished)"
    boost = make_run(tmp_path, "reach-v3", "boost", 1, summary(1, 1, 1), masking=True)
    metrics = (boost / "metrics.csv").read_text().splitlines()
    column = metrics[0].split(",").index("mask_fraction")
    rows = [line.split(",") for line in metrics[1:]]
    write_csv(boost / "metrics.csv", metrics[0].split(","), [r[:column] + ["0.0"] + r[column + 1 :] for r in rows])
    assert cell(boost) == "0.000 (budget 0.25)"


def test_default_output_is_the_git_ignored_reports_folder(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    make_run(runs, "reach-v3", "ppo_vanilla", 1, summary(1, 1, 1000))
    monkeypatch.chdir(tmp_path)
    assert report.main(["--runs-dir", str(runs)]) == 0
    assert (tmp_path / "reports" / "report.md").exists() and (tmp_path / "reports" / "figures").is_dir()
    ignored = subprocess.run(
        ["git", "check-ignore", "reports/report.md", "reports/figures/x.png"], cwd=ROOT, capture_output=True, text=True
    )
    assert ignored.returncode == 0, ignored.stderr  # git-ignored in the repository; results/ is for curated reports


def test_heat_maps_show_at_most_the_first_heatmap_runs_seeds(monkeypatch, tmp_path):
    drawn = []
    monkeypatch.setattr(figures, "save", lambda fig, out_dir, name, tight=True: drawn.append(len(fig.axes)) or name)
    runs = []
    for seed in range(1, 9):
        counts = report.MaskCounts(np.arange(1, 4) * 1000.0, np.full((3, 4, K), 0.25))
        runs.append(
            report.Run(
                tmp_path,
                {"env_id": "reach-v3", "exp_name": "ppo_random_mask", "seed": seed, "num_bins": K},
                {},
                {"total_steps": 3000},
                counts,
            )
        )
    arm = type("A", (), {"complete": runs, "incomplete": [], "env_id": "reach-v3", "exp_name": "ppo_random_mask"})()
    report.figure_heatmap(arm, tmp_path)
    assert drawn == [figures.HEATMAP_RUNS * 4 + 1]  # 4 dimensions per seed row, and the colour bar


def test_code_the_runs_came_from(tmp_path):
    """Per cell: the sources' hash with the commits that carried it; a cell whose runs ran different code is marked,
    one whose runs ran the same code from different checkouts is not; runs without a hash (older) are marked when
    their revisions differ."""
    runs = tmp_path / "runs"
    ae, other = "ae58e2e" + "0" * 33, "1234567" + "0" * 33
    same = [
        {"code_sha256": "a" * 64, "git_revision": ae, "git_changes": None},
        {"code_sha256": "a" * 64, "git_revision": "unknown", "git_changes": None},
    ]
    for seed, meta in enumerate(same, 1):
        make_run(runs, "reach-v3", "ppo_vanilla", seed, summary(1.0, 0.8, 50_000), settings=meta)
    mixed = [
        {"code_sha256": "a" * 64, "git_revision": ae, "git_changes": None},
        {
            "code_sha256": "b" * 64,
            "git_revision": ae,
            "git_changes": {"diff_sha256": "c" * 64, "files": ["ppo_vanilla.py"]},
        },
    ]
    for seed, meta in enumerate(mixed, 1):
        make_run(runs, "reach-v3", "my_idea", seed, summary(1.0, 0.8, 50_000), settings=meta)
    for seed, revision in enumerate([other + "-dirty", other], 1):
        make_run(runs, "reach-v3", "old_runs", seed, summary(1.0, 0.8, 50_000), settings={"git_revision": revision})
    md = run_report(runs, tmp_path / "out")
    rows = {
        row.split(" | ")[1]: row
        for row in section(md, "## Code the runs came from").splitlines()
        if row.startswith("| reach-v3")
    }
    assert rows["ppo_vanilla"] == "| reach-v3 | ppo_vanilla | 2 | `aaaaaaaaaaaa` (2 runs: ae58e2e x1, unknown x1) |  |"
    assert rows["my_idea"] == (
        "| reach-v3 | my_idea | 2 | `aaaaaaaaaaaa` (1 run: ae58e2e x1); `bbbbbbbbbbbb` (1 run: "
        "ae58e2e + uncommitted ppo_vanilla.py x1) | **mixed code** |"
    )
    assert rows["old_runs"].startswith(
        "| reach-v3 | old_runs | 2 | no code hash (2 runs: 1234567-dirty x1, 1234567 x1) | **mixed revisions**"
    )
    assert "2 cells are marked." in section(md, "## Code the runs came from")


def test_a_cell_in_the_paper_regime_is_read_against_the_papers_row(tmp_path):
    """ppo_vanilla_no-norm-obs is the paper's vanilla run in another regime: its row carries the paper's numbers, right
    after the paper-named cell; an exp_name that only ends like a paper cell's is still another run."""
    runs = tmp_path / "runs"
    for seed in (1, 2):
        make_run(runs, "button-press-v3", "ppo_vanilla", seed, summary(0.9, 0.6, 300_000))
        make_run(runs, "button-press-v3", "ppo_vanilla_no-norm-obs", seed, summary(0.8, 0.5, 400_000))
        make_run(runs, "button-press-v3", "my_ppo_vanilla_no-norm-obs", seed, summary(0.7, 0.4, 500_000))
    md = run_report(runs, tmp_path / "out")
    rows = [r for r in section(md, "## Table 2").splitlines() if r.startswith("| button-press-v3")]
    assert [r.split(" | ")[1] for r in rows] == ["ppo_vanilla", "ppo_vanilla_no-norm-obs"]
    assert all(" | vanilla | " in r and "0.857 ± 0.045" in r and "| 321k |" in r for r in rows)
    other = section(md, "## Other runs")
    assert "my_ppo_vanilla_no-norm-obs |  |" in other
    assert report.paper_exp_name("ppo_utility_mask_broadcast_k256_no-norm-obs") == "ppo_utility_mask_broadcast_k256"


def test_vocabulary_section_reads_each_arm_across_k(tmp_path):
    """Cells that differ only in num_bins form a family read against its reference K; the drop, the same-K pair no
    table compares and the difference of two families' drops come out exact on constant seeds; a cell with other
    settings stays out; two --runs-dir folders make one report, and a run in both is one clear error."""
    study, table3 = tmp_path / "study", tmp_path / "table3"
    env = "button-press-v3"
    for seed in range(1, 6):
        make_run(study, env, "ppo_vanilla", seed, summary(0.8, 0.5, 100_000))
        make_run(table3, env, "ppo_vanilla_k8", seed, summary(0.2, 0.1, None), settings={"num_bins": 8})
        make_run(
            table3, env, "ppo_utility_mask_broadcast", seed, summary(0.9, 0.6, 100_000), masking=True, utility=True
        )
        make_run(
            table3,
            env,
            "ppo_utility_mask_broadcast_k256",
            seed,
            summary(0.6, 0.4, 300_000),
            masking=True,
            utility=True,
            settings={"num_bins": 8},
        )
        # another arm's settings at K = 8 (a longer run): not in the vanilla family
        make_run(
            table3,
            env,
            "ppo_vanilla_k8_long",
            seed,
            summary(0.0, 0.0, None),
            iterations=12,
            settings={"num_bins": 8, "total_timesteps": 12_000},
        )
    md = run_report(study, tmp_path / "out", "--runs-dir", str(study), str(table3))
    vocab = section(md, "## Vocabulary")
    assert "ppo_vanilla_k8_long" not in vocab
    row = table_row(vocab, "ppo_vanilla", "8", "ppo_vanilla_k8")
    assert row[3:8] == [
        "5",
        "0.200 [0.200, 0.200]",
        "0.100 [0.100, 0.100]",
        "0.600 [0.600, 0.600]",
        "0.400 [0.400, 0.400]",
    ]
    assert table_row(vocab, "ppo_vanilla", "4", "ppo_vanilla")[6] == "reference"
    assert (
        table_row(vocab, "ppo_utility_mask_broadcast", "8", "ppo_utility_mask_broadcast_k256")[6]
        == "0.300 [0.300, 0.300]"
    )
    drops = vocab[vocab.index("Does the larger vocabulary") :]
    same_k = table_row(
        vocab[vocab.index("At the same K") : vocab.index("Does the larger vocabulary")],
        "8",
        "ppo_utility_mask_broadcast_k256",
        "ppo_vanilla_k8",
    )
    assert same_k[3:5] == ["1.000 [1.000, 1.000]", "1.000 [1.000, 1.000]"]
    row = table_row(drops, "8", "ppo_utility_mask_broadcast_k256", "ppo_vanilla_k8")
    assert row[3:5] == ["-0.300 [-0.300, -0.300]", "-0.200 [-0.200, -0.200]"]
    assert "K = 8 costs ppo_vanilla more" in row[5]
    assert report.main(["--runs-dir", str(study), str(study), "--out-dir", str(tmp_path / "dup")]) == 2


def test_heads_section_reads_each_structured_head_against_its_arms_categorical_cells(tmp_path):
    """A cell that differs from a categorical cell only in action_head (and K, name) is read against that arm's
    categorical cell at its K and at the reference K, with the share of the categorical loss it removes, exact on
    constant seeds; an arm without a categorical cell at its K says so; a head cell of an arm with no categorical
    cell at all and a cell with other settings stay out."""
    runs, env = tmp_path / "runs", "button-press-v3"
    for seed in range(1, 6):
        make_run(runs, env, "ppo_vanilla", seed, summary(0.8, 0.5, 100_000))
        make_run(runs, env, "ppo_vanilla_k8", seed, summary(0.2, 0.1, None), settings={"num_bins": 8})
        make_run(
            runs, env, "ppo_vanilla_poisson", seed, summary(0.9, 0.6, 100_000), settings={"action_head": "poisson"}
        )
        make_run(
            runs,
            env,
            "ppo_vanilla_poisson_k8",
            seed,
            summary(0.65, 0.4, 200_000),
            settings={"num_bins": 8, "action_head": "poisson"},
        )
        make_run(runs, env, "ppo_random_mask", seed, summary(0.7, 0.5, 100_000), masking=True)
        make_run(
            runs,
            env,
            "ppo_random_mask_poisson_k8",
            seed,
            summary(0.6, 0.3, 200_000),
            masking=True,
            settings={"num_bins": 8, "action_head": "poisson"},
        )
        # no categorical utility cell
        make_run(
            runs,
            env,
            "ppo_utility_mask_ordinal",
            seed,
            summary(0.5, 0.3, 200_000),
            masking=True,
            utility=True,
            settings={"action_head": "ordinal", "utility_lr": 0.001},
        )
        make_run(
            runs,
            env,
            "ppo_vanilla_poisson_long",
            seed,
            summary(0.0, 0.0, None),
            iterations=12,
            settings={"action_head": "poisson", "total_timesteps": 12_000},
        )
    heads = section(run_report(runs, tmp_path / "out"), "## Action heads")
    assert "ppo_utility_mask_ordinal" not in heads and "ppo_vanilla_poisson_long" not in heads
    row = table_row(heads, "ppo_vanilla", "poisson", "8", "ppo_vanilla_poisson_k8")
    assert row[4:13] == [
        "5",
        "0.650 [0.650, 0.650]",
        "0.400 [0.400, 0.400]",  # IQM final, AUC
        "1.000 [1.000, 1.000]",
        "1.000 [1.000, 1.000]",  # above categorical at K = 8
        "0.000 [0.000, 0.000]",
        "0.000 [0.000, 0.000]",  # below categorical at K = 4
        "0.750 [0.750, 0.750]",
        "0.750 [0.750, 0.750]",
    ]  # (0.65 - 0.2) / 0.6, (0.4 - 0.1) / 0.4
    assert "against ppo_vanilla_k8 (same K), final success: ppo_vanilla_poisson_k8 ahead" in row[13]
    row = table_row(heads, "ppo_vanilla", "poisson", "4", "ppo_vanilla_poisson")
    assert row[7:13] == ["1.000 [1.000, 1.000]"] * 4 + ["", ""]  # at the reference K: no loss to share
    row = table_row(heads, "ppo_random_mask", "poisson", "8", "ppo_random_mask_poisson_k8")
    assert row[7:13] == ["no categorical cell"] * 2 + ["0.000 [0.000, 0.000]"] * 2 + ["", ""]


def test_kl_section_reads_each_unstopped_cell_against_its_stopped_cell(tmp_path):
    """A cell that differs from another only in target_kl None is read against it (IQMs, P(X > Y)), with what the
    update did per cell and, away from the reference K, the share of the stopped cell's loss it takes back, exact on
    constant seeds; a cell without a stopped twin and a stopped cell without an unstopped one stay out."""
    runs, env = tmp_path / "runs", "button-press-v3"
    stopped, unstopped = {"target_kl": 0.02}, {"target_kl": None}
    for seed in range(1, 6):
        make_run(runs, env, "ppo_vanilla", seed, summary(0.8, 0.5, 100_000), settings=stopped)
        make_run(runs, env, "ppo_vanilla_k8", seed, summary(0.2, 0.1, None), settings={"num_bins": 8, **stopped})
        make_run(runs, env, "ppo_vanilla_no-kl", seed, summary(0.9, 0.6, 100_000), settings=unstopped)
        make_run(
            runs, env, "ppo_vanilla_k8_no-kl", seed, summary(0.65, 0.4, 200_000), settings={"num_bins": 8, **unstopped}
        )
        make_run(
            runs,
            env,
            "ppo_vanilla_poisson_no-kl",
            seed,
            summary(0.7, 0.5, 100_000),  # no stopped twin
            settings={"action_head": "poisson", **unstopped},
        )
        make_run(runs, env, "ppo_random_mask", seed, summary(0.7, 0.5, 100_000), masking=True, settings=stopped)
    kl = section(run_report(runs, tmp_path / "out"), "## The KL early stop")
    assert "ppo_vanilla_poisson_no-kl" not in kl and "ppo_random_mask |" not in kl
    row = table_row(kl, "ppo_vanilla_k8_no-kl", "ppo_vanilla_k8", "categorical", "8")
    assert row[4:13] == [
        "5 / 5",
        "0.650 [0.650, 0.650] / 0.200 [0.200, 0.200]",
        "1.000 [1.000, 1.000]",
        "0.400 [0.400, 0.400] / 0.100 [0.100, 0.100]",
        "1.000 [1.000, 1.000]",
        "200k [200k, 200k] / 10k [10k, 10k]",
        "0.000 [0.000, 0.000]",  # never: the run's length
        "0.750 [0.750, 0.750]",
        "0.750 [0.750, 0.750]",
    ]  # (0.65 - 0.2) / 0.6, (0.4 - 0.1) / 0.4
    assert "final success: ppo_vanilla_k8_no-kl ahead" in row[13]
    row = table_row(kl, "ppo_vanilla_no-kl", "ppo_vanilla", "categorical", "4")
    assert row[11:13] == ["", ""]  # the reference K: no loss to take back
    assert "| ppo_vanilla_k8_no-kl | 5 |" in kl  # the update table has a row per cell
    assert (tmp_path / "out" / "figures" / "kl_button-press-v3_update.png").exists()


def test_the_split_keeps_every_name_the_tools_use_and_the_section_order(synthetic_report):
    """report.py is the command over the reporting/ package: every report.<name> that a file importing report uses is
    still there, the tunables are patched where they are read (reporting.stats), so report.py does not offer copies a
    patch would miss, and the sections come in their order."""
    used = set()
    for path in [*ROOT.glob("*.py"), *ROOT.glob("results/*.py"), *ROOT.glob("tests/*.py")]:
        text = path.read_text()
        if re.search(r"^import report\b", text, re.M):
            used |= set(re.findall(r"\breport\.([A-Za-z_]\w*)", text)) - {"py", "md"}
    assert {"find_runs", "Run", "ReportError", "md_table", "DEFAULT_OUT_DIR", "group_runs"} <= used
    assert not [name for name in used if not hasattr(report, name)]
    assert not hasattr(report, "BOOTSTRAP_REPS") and stats.BOOTSTRAP_REPS == 500  # this module's autouse patch
    md = synthetic_report[0]
    assert "(rliable, 500 replications, seed 0" in md and "500 bootstrap replications" in md  # the patch took effect
    assert re.findall(r"^## (.+?)(?::| \(|$)", md, re.M) == [
        "Runs set apart",
        "Incomplete runs",
        "Table 2",
        "Other runs",
        "Rank agreement of the utility critic with the policy",
        "Pruned-token heat maps",
        "Statistics",
        "Code the runs came from",
    ]


def test_figure_2_marks_the_papers_number_beside_a_cell_in_another_regime(tmp_path, monkeypatch):
    """Figure 2 right draws the paper's Table 2 final success as a diamond beside each arm, also for the same arm in
    the paper's regime (ppo_vanilla_no-norm-obs is the paper's ppo_vanilla)."""
    import matplotlib.axes

    diamonds = []
    original = matplotlib.axes.Axes.scatter
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "scatter",
        lambda ax, x, y, *a, **k: (diamonds.append(list(y)), original(ax, x, y, *a, **k))[1],
    )
    runs = tmp_path / "runs"
    for seed in (1, 2):
        make_run(
            runs,
            "pick-place-v3",
            "ppo_random_mask_no-norm-obs",
            seed,
            summary(0.0, 0.0, None),
            masking=True,
            settings={"norm_obs": False},
        )
    run_report(runs, tmp_path / "out")
    assert [0.007] in diamonds  # the paper's pick-place random final success (Table 2), beside the regime's cell
