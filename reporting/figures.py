"""The figures: success (mean ± std and IQM), sample efficiency, entropy, rank agreement, final success across tasks
and the pruned-token heat maps."""

import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import EngFormatter  # noqa: E402

from reporting import stats  # noqa: E402
from reporting.arms import Arm  # noqa: E402
from reporting.curves import aligned, step_grid  # noqa: E402
from reporting.paper import paper_exp_name  # noqa: E402
from reporting.stats import iqm_band, mean_std  # noqa: E402

HEATMAP_COLUMNS = 100  # the heat maps average consecutive iterations into at most this many time columns
HEATMAP_RUNS = 5  # rows of a heat map: the first seeds (complete ones first); 10 seeds of noise-like random masks
# made a 2 MB figure


PAPER_LABEL = "paper (MetaWorld -v2)"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


FIXED_COLORS = {"ppo_vanilla": "tab:gray", "ppo_random_mask": "tab:blue", "ppo_utility_mask": "tab:red"}
OTHER_COLORS = [
    "tab:orange",
    "tab:green",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:olive",
    "tab:cyan",
    "black",
    "gold",
    "navy",
    "lime",
    "teal",
    "maroon",
]


def arm_colors(names: list) -> dict:
    """Colors of one figure's arms: the three main arms always the same, the others distinct within the figure."""
    others = iter(OTHER_COLORS * (1 + len(names) // len(OTHER_COLORS)))
    return {name: FIXED_COLORS.get(name) or next(others) for name in names}


def steps_axis(ax, ylabel: str):
    ax.xaxis.set_major_formatter(EngFormatter())
    ax.set_xlabel("environment steps")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def plot_band(ax, arms: list, column: str, include=lambda run: True):
    """Each arm's mean over its complete seeds with a +-std band, and its incomplete runs as dashed lines; only the
    runs `include` accepts."""
    colors = arm_colors([arm.exp_name for arm in arms])
    grid = step_grid([run for arm in arms for run in arm.complete + arm.incomplete if include(run)])
    for arm in arms:
        color = colors[arm.exp_name]
        complete = [run for run in arm.complete if include(run)]
        if complete:
            values = aligned(complete, column, grid)
            mean, std = values.mean(axis=0), values.std(axis=0)  # NaN where any seed lacks data
            ax.plot(grid, mean, color=color, lw=1.8, label=f"{arm.exp_name} (n={len(complete)})")
            ax.fill_between(grid, mean - std, mean + std, color=color, alpha=0.2, lw=0)
        for run in (run for run in arm.incomplete if include(run)):
            ax.plot(
                grid,
                aligned([run], column, grid)[0],
                color=color,
                lw=1,
                ls="--",
                label=f"{arm.exp_name} seed {run.seed} (incomplete, not in mean)",
            )


def save(fig, out_dir: Path, name: str, tight: bool = True) -> str:
    path = out_dir / "figures" / name
    fig.savefig(path, dpi=110, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return f"figures/{name}"


def legend(ax):
    """The legend outside the axes, on the right, so it never hides a curve."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)


def figure_success(arms, env_id, out_dir, prefix):
    success = arms[0].success
    fig, ax = plt.subplots(figsize=(7, 4.2))
    plot_band(ax, arms, success.curve)
    ax.set_ylim(-0.02, 1.02)
    steps_axis(ax, f"{success.noun} rate (last 20 training episodes)")
    ax.set_title(f"{env_id}: rollout {success.noun} vs steps (mean ± std over seeds)")
    legend(ax)
    return save(fig, out_dir, f"{prefix}_{slug(env_id)}_success.png")


def figure_success_iqm(arms, env_id, out_dir, prefix):
    """Each arm's success curve as the IQM over its complete seeds with a 95% stratified-bootstrap band (iqm_band);
    an arm with one complete seed is that run's curve without a band; incomplete runs are not drawn."""
    success = arms[0].success
    colors = arm_colors([arm.exp_name for arm in arms])  # the same colors as the mean ± std figure
    grid = step_grid([run for arm in arms for run in arm.complete])
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for arm in (arm for arm in arms if arm.complete):
        center, low, high = iqm_band(aligned(arm.complete, success.curve, grid))
        color = colors[arm.exp_name]
        ax.plot(
            grid,
            center,
            color=color,
            lw=1.8,
            label=f"{arm.exp_name} (n={arm.n}" + (", one seed: no band)" if arm.n < 2 else ")"),
        )
        ax.fill_between(grid, low, high, color=color, alpha=0.2, lw=0)
    if not any(arm.complete for arm in arms):
        ax.text(0.5, 0.5, "no complete runs", transform=ax.transAxes, ha="center", va="center")
    ax.set_ylim(-0.02, 1.02)
    steps_axis(ax, f"{success.noun} rate (last 20 training episodes)")
    ax.set_title(f"{env_id}: {success.noun} rate, IQM over seeds with {stats.CI_SIZE:.0%} bootstrap CI")
    legend(ax)
    return save(fig, out_dir, f"{prefix}_{slug(env_id)}_success_iqm.png")


def entropy_left_out(arms) -> list:
    """The runs whose policy_entropy is not the unmasked policy's (older masked runs): not in the entropy figure."""
    return [run for arm in arms for run in arm.complete + arm.incomplete if not run.entropy_is_unmasked]


def figure_entropy(arms, env_id, out_dir, prefix):
    """Paper Figure 4 with the unmasked policy's entropy of every arm (older masked runs, which logged the masked
    distribution's, left out: see entropy_left_out)."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    plot_band(ax, arms, "policy_entropy", include=lambda run: run.entropy_is_unmasked)
    for k in sorted({k for arm in arms for k in arm.num_bins()}):
        ax.axhline(4 * math.log(k), color="black", ls=":", lw=1.2)
        ax.annotate(
            f"maximum 4 ln {k} = {4 * math.log(k):.1f}",
            (1, 4 * math.log(k)),
            xycoords=("axes fraction", "data"),
            xytext=(-4, 2),
            textcoords="offset points",
            ha="right",
            va="bottom",
            fontsize=8,
        )
    left_out = sorted({run.exp_name for run in entropy_left_out(arms)})
    if left_out:
        ax.text(
            0.01,
            0.02,
            f"left out (older runs logged the masked entropy): {', '.join(left_out)}",
            transform=ax.transAxes,
            fontsize=7,
            va="bottom",
        )
    steps_axis(ax, "unmasked entropy (nats, 4 dims summed)")
    ax.set_ylim(0, 4 * math.log(max(k for arm in arms for k in arm.num_bins())) * 1.08)
    ax.set_title(f"{env_id}: unmasked policy entropy vs steps (mean ± std over seeds)")
    legend(ax)
    return save(fig, out_dir, f"{prefix}_{slug(env_id)}_entropy.png")


def figure_rank_agreement(arms, env_id, out_dir):
    fig, ax = plt.subplots(figsize=(7, 4.2))
    plot_band(ax, arms, "rank_agreement")
    ax.axhline(0.31, color="gray", ls=":", lw=1.2, label="paper: about 0.31")
    ax.axhline(0, color="black", lw=0.6)
    steps_axis(ax, "rank agreement (Spearman, critic vs policy)")
    ax.set_title(f"{env_id}: utility critic / policy rank agreement (mean ± std)")
    legend(ax)
    return save(fig, out_dir, f"rank_agreement_{slug(env_id)}.png")


def bar_panel(ax, arms, colors, metric, paper_values, scale=1.0):
    """Mean bars with std whiskers, each complete seed as a dot, the paper's value as a black diamond."""
    for i, arm in enumerate(arms):
        values = [v / scale for v in arm.scores(metric) if v is not None]
        mean, std = mean_std(values)
        if values:
            ax.bar(i, mean, yerr=std, color=colors[arm.exp_name], alpha=0.75, capsize=4)
            ax.scatter(
                np.full(len(values), i) + np.linspace(-0.15, 0.15, len(values)),
                values,
                color="black",
                s=12,
                zorder=3,
                label="seeds" if i == 0 else None,
            )
        if metric == "steps_to_half" and arm.n and len(values) < arm.n:
            ax.annotate(f"{len(values)}/{arm.n} reached", (i, 0), ha="center", va="bottom", fontsize=7)
        paper = paper_values.get(paper_exp_name(arm.exp_name))
        if paper is not None:
            ax.scatter(
                [i],
                [paper / scale],
                marker="D",
                facecolor="none",
                edgecolor="black",
                s=40,
                zorder=4,
                label=PAPER_LABEL if PAPER_LABEL not in ax.get_legend_handles_labels()[1] else None,
            )
    ax.set_xticks(range(len(arms)), [arm.exp_name for arm in arms], rotation=30, ha="right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def paper_values(paper_rows: list[dict], key: str) -> dict:
    """exp_name -> the paper's value in its first row for that arm (Table 4's baseline row, not the seed-batch one)."""
    values = {}
    for row in paper_rows:
        if row[key] is not None:
            values.setdefault(row["exp_name"], row[key])
    return values


def figure_efficiency(arms, env_id, out_dir, prefix, paper_rows):
    colors = arm_colors([arm.exp_name for arm in arms])
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(8, 1.1 * len(arms) + 4), 4.4))
    bar_panel(left, arms, colors, "auc", paper_values(paper_rows, "auc"))
    left.set_ylabel(f"normalized AUC of the {arms[0].success.noun} curve")
    left.set_ylim(0, 1.05)
    bar_panel(right, arms, colors, "steps_to_half", paper_values(paper_rows, "steps_to_half"), scale=1000)
    right.set_ylabel(f"steps to 0.5 {arms[0].success.noun} (thousands)")
    right.set_ylim(bottom=0)
    handles, labels = left.get_legend_handles_labels()
    fig.suptitle(f"{env_id}: sample efficiency (bars: mean ± std over complete seeds)")
    fig.tight_layout()
    if handles:
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=8)
    return save(fig, out_dir, f"{prefix}_{slug(env_id)}_efficiency.png")


def figure_final_across_tasks(arms_by_env, out_dir, reference):
    """Figure 2 right: final success per task, one bar per arm, the paper's Table 2 values as diamonds."""
    envs = list(arms_by_env)
    names = list(dict.fromkeys(arm.exp_name for arms in arms_by_env.values() for arm in arms))
    colors = arm_colors(names)
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(7, (0.6 + 0.35 * len(names)) * len(envs) + 2), 4.2))
    paper = {(r["task"], r["exp_name"]): r["final_mean"] for r in reference if r["table"] == "2"}
    for j, name in enumerate(names):
        for i, env_id in enumerate(envs):
            arm = next((a for a in arms_by_env[env_id] if a.exp_name == name), None)
            if arm is None:
                continue
            x = i + (j - (len(names) - 1) / 2) * width
            mean, std = mean_std(arm.scores("final_success"))
            if arm.n:
                ax.bar(
                    x,
                    mean,
                    width,
                    yerr=std,
                    color=colors[name],
                    alpha=0.8,
                    capsize=3,
                    label=name if name not in ax.get_legend_handles_labels()[1] else None,
                )
            if (arm.task, paper_exp_name(name)) in paper:  # a cell in another regime beside the paper's own
                ax.scatter(
                    [x],
                    [paper[(arm.task, paper_exp_name(name))]],
                    marker="D",
                    facecolor="none",
                    edgecolor="black",
                    s=30,
                    zorder=4,
                    label=PAPER_LABEL if PAPER_LABEL not in ax.get_legend_handles_labels()[1] else None,
                )
    ax.set_xticks(range(len(envs)), envs)
    ax.set_ylim(0, 1.1)
    noun = next(arm.success.noun for arms in arms_by_env.values() for arm in arms)
    ax.set_ylabel(f"final {noun} (last 100 training episodes)")
    ax.set_title(f"Final rollout {noun} across tasks (mean ± std over complete seeds)")
    ax.grid(axis="y", alpha=0.3)
    legend(ax)
    return save(fig, out_dir, "table2_final_success_across_tasks.png")


def downsample(values: np.ndarray, columns: int) -> np.ndarray:
    """Average consecutive rows (iterations) into at most `columns` equal blocks."""
    blocks = np.array_split(np.arange(len(values)), min(columns, len(values)))
    return np.stack([values[block].mean(axis=0) for block in blocks])


def figure_heatmap(arm: Arm, out_dir: Path) -> str:
    """The pruned-token heat map: per run (rows) and action dimension (columns), how often each bin was masked in
    each iteration's rollout, over training."""
    runs = [r for r in arm.complete + arm.incomplete if r.mask_counts is not None and len(r.mask_counts.steps)]
    runs = runs[:HEATMAP_RUNS]
    dims = max(r.mask_counts.fractions.shape[1] for r in runs)
    width, height = 3.0 * dims + 1.4, 2.2 * len(runs) + 1.0
    fig, axes = plt.subplots(len(runs), dims, figsize=(width, height), squeeze=False)
    # a fixed layout: constrained/tight layout of this many image panels costs seconds per figure
    bottom, top = 0.6 / height, 1 - 0.6 / height
    fig.subplots_adjust(left=0.9 / width, right=1 - 1.3 / width, bottom=bottom, top=top, hspace=0.5, wspace=0.15)
    for row, run in zip(axes, runs):
        counts = run.mask_counts
        bins = counts.fractions.shape[2]
        for d, ax in enumerate(row):
            if d >= counts.fractions.shape[1]:
                ax.axis("off")
                continue
            image = ax.imshow(
                downsample(counts.fractions[:, d, :], HEATMAP_COLUMNS).T,
                aspect="auto",
                origin="lower",
                vmin=0,
                vmax=1,
                cmap="magma",
                interpolation="nearest",
                extent=(0, counts.steps[-1], -0.5, bins - 0.5),
            )
            ax.xaxis.set_major_formatter(EngFormatter())
            ax.set_title(f"seed {run.seed}{'' if run.complete else ' (incomplete)'}, dim {d}", fontsize=9)
            if run is runs[-1]:
                ax.set_xlabel("environment steps", fontsize=8)
            if d == 0:
                ax.set_ylabel(f"bin (0: action -1, {bins - 1}: +1)", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.colorbar(
        image,
        cax=fig.add_axes((1 - 1.1 / width, bottom, 0.15 / width, top - bottom)),
        label="fraction of rollout steps masked",
    )
    fig.suptitle(f"{arm.env_id} / {arm.exp_name}: masked action tokens over training", y=1 - 0.15 / height)
    return save(fig, out_dir, f"heatmap_{slug(arm.env_id)}__{slug(arm.exp_name)}.png", tight=False)
