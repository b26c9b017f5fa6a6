"""The KL early-stop section: each cell without the early stop against itself with it."""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from reporting import stats
from reporting.arms import Arm, arms_by_env, settings_apart_from
from reporting.figures import legend, plot_band, save, slug, steps_axis
from reporting.markdown import fmt_interval, md_table
from reporting.paper import task_sort_key
from reporting.runs import Run
from reporting.sections.heads import action_head, share_of_loss_cell
from reporting.sections.vocabulary import REFERENCE_K, VOCABULARY_METRICS
from reporting.stats import (
    METRICS,
    comparison_sentence,
    improvement_interval,
    improvement_label,
    iqm_interval,
    score_matrix,
)

# The KL early stop (the Table 2 / KL issue): cells that differ only in target_kl, the stopped one read against the
# unstopped one, and the share of the stopped cell's vocabulary loss that removing the stop takes back.
UPDATE_COLUMNS = {
    "epochs": "epochs run per update",
    "approx_kl": "approx KL (last minibatch)",
    "clipfrac": "clip fraction",
}
EARLY_WINDOW = 150_000  # the first steps, over which the heads work measured the epochs the early stop leaves


def kl_key(arm: Arm, *also: str) -> str:
    """An arm's settings without exp_name, target_kl and `also`: cells equal under it differ only in those."""
    return settings_apart_from(arm, "target_kl", *also)


def kl_pairs(env_arms: list) -> list:
    """(stopped, unstopped) for each cell with target_kl None and a cell of the same settings that stops (the one
    with the most seeds); cells with at least 2 complete seeds and one K, sorted by head, K and name."""
    usable = [arm for arm in env_arms if arm.n >= 2 and len(arm.num_bins()) == 1]
    pairs = []
    for arm in usable:
        if arm.complete[0].settings.get("target_kl") is not None:
            continue
        stopped = [
            other
            for other in usable
            if other.complete[0].settings.get("target_kl") is not None and kl_key(other) == kl_key(arm)
        ]
        if stopped:
            pairs.append((max(stopped, key=lambda other: other.n), arm))
    return sorted(pairs, key=lambda pair: (action_head(pair[1]), pair[1].num_bins()[0], pair[1].exp_name))


def mean_over(run: Run, column: str, until: float | None = None) -> float:
    """A metrics.csv column's mean over a run (or over its iterations up to `until` steps)."""
    values = run.metrics.get(column)
    if values is None:
        return float("nan")
    keep = ~np.isnan(values) & (run.steps <= until if until is not None else True)
    return float(values[keep].mean()) if keep.any() else float("nan")


def figure_update(arms: list, env_id: str, out_dir: Path) -> str:
    """What the PPO update did over training, per cell (mean ± std over seeds): epochs run, approx KL, clip fraction."""
    fig, axes = plt.subplots(1, len(UPDATE_COLUMNS), figsize=(16, 4.2))
    for ax, (column, label) in zip(axes, UPDATE_COLUMNS.items()):
        plot_band(ax, arms, column)
        steps_axis(ax, label)
        ax.set_title(label)
    legend(axes[-1])
    fig.suptitle(f"{env_id}: the PPO update with and without the KL early stop (mean ± std over seeds)")
    return save(fig, out_dir, f"kl_{slug(env_id)}_update.png")


def kl_section(arms: dict, out_dir: Path) -> list[str]:
    """Per task: each cell without the KL early stop against the same cell with it (P(X > Y) and the separation
    verdict), what the update did in each, and, at each K other than the reference, the share of the stopped cell's
    loss from the reference K that removing the early stop takes back."""
    tables = {env_id: kl_pairs(env_arms) for env_id, env_arms in arms_by_env(arms).items()}
    if not any(tables.values()):
        return []
    lines = [
        "## The KL early stop: each cell against itself without it\n",
        f"Cells whose settings differ only in target_kl (None: every epoch runs), the unstopped cell X against the "
        f"stopped one Y: IQM of both, P(X > Y) with the separation verdict of the statistics, what the update did "
        f"(epochs run per update, approx KL of the epoch's last minibatch, clip fraction; means over the seeds' "
        f"iterations, over the first {EARLY_WINDOW // 1000}k steps and over the run) and, at each K but the "
        f"reference (K = {REFERENCE_K}, else the family's smallest), the share of the stopped cell's loss from the "
        f"reference K (the stopped cell of the same settings there: its IQM minus the stopped cell's at K) that "
        f"removing the early stop takes back, (unstopped IQM at K - stopped IQM at K) / that loss, with a "
        f"{stats.CI_SIZE:.0%} stratified-bootstrap interval: 1 means the unstopped cell at K is as good as the stopped "
        f"cell at the reference K.\n",
    ]
    for env_id in sorted(tables, key=task_sort_key):
        pairs = tables[env_id]
        if not pairs:
            continue
        lines.append(f"### {env_id}\n")
        stopped_at_reference = {}  # per family (settings but K), its stopped cell at the reference K, else smallest K
        for stopped, _ in sorted(pairs, key=lambda pair: (pair[0].num_bins()[0] != REFERENCE_K, pair[0].num_bins()[0])):
            stopped_at_reference.setdefault(kl_key(stopped, "num_bins"), stopped)
        rows, update_rows = [], []
        for stopped, unstopped in pairs:
            k = unstopped.num_bins()[0]
            cells = [unstopped.exp_name, stopped.exp_name, action_head(unstopped), k, f"{unstopped.n} / {stopped.n}"]
            sentences = []
            for metric in METRICS:
                poi = improvement_interval(unstopped, stopped, metric)
                cells.append(
                    f"{fmt_interval(*iqm_interval(unstopped, metric), metric)} / "
                    f"{fmt_interval(*iqm_interval(stopped, metric), metric)}"
                )
                cells.append(fmt_interval(*poi))
                sentences.append(
                    comparison_sentence(
                        metric,
                        unstopped.exp_name,
                        score_matrix(unstopped, metric),
                        stopped.exp_name,
                        score_matrix(stopped, metric),
                        iqm_interval(unstopped, metric),
                        iqm_interval(stopped, metric),
                        poi,
                    )
                )
            reference = stopped_at_reference[kl_key(stopped, "num_bins")]
            for metric in VOCABULARY_METRICS:
                if reference is stopped:
                    cells.append("")
                    continue
                cells.append(share_of_loss_cell(reference, stopped, unstopped, metric, "no loss to take back"))
            rows.append(cells + [" ".join(sentences)])
            for arm in (stopped, unstopped):
                update_rows.append(
                    [arm.exp_name, arm.n]
                    + [
                        f"{np.mean([mean_over(run, column, EARLY_WINDOW) for run in arm.complete]):.{digits}f} / "
                        f"{np.mean([mean_over(run, column) for run in arm.complete]):.{digits}f}"
                        for column, digits in (("epochs", 1), ("approx_kl", 4), ("clipfrac", 3))
                    ]
                )
        lines.append(
            md_table(
                ["unstopped cell (X)", "stopped cell (Y)", "head", "K", "n (X / Y)"]
                + [
                    part
                    for m in METRICS
                    for part in (f"IQM {METRICS[m]} X / Y [95% CI]", f"{improvement_label(m)} [95% CI]")
                ]
                + [f"share of the reference K's loss taken back, {METRICS[m]} [95% CI]" for m in VOCABULARY_METRICS]
                + ["in words"],
                rows,
            )
        )
        lines.append(
            md_table(
                [
                    "cell",
                    "n",
                    f"epochs per update, first {EARLY_WINDOW // 1000}k / run",
                    f"approx KL, first {EARLY_WINDOW // 1000}k / run",
                    f"clip fraction, first {EARLY_WINDOW // 1000}k / run",
                ],
                update_rows,
            )
        )
        drawn = list(dict.fromkeys(arm for pair in pairs for arm in pair))
        lines.append(f"![{env_id} PPO update]({figure_update(drawn, env_id, out_dir)})\n")
    return lines
