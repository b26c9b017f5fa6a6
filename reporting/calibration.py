"""The pretraining calibration (report.py --calibration): pretrain_bc.py's recipes, no runs. Per task, head and
recipe, the pretrained policy's success against the number of demonstrations, and the smallest count in the band
the fine-tuning issue asks for."""

from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

from reporting.document import write_text_atomically
from reporting.figures import OTHER_COLORS, legend, save
from reporting.markdown import fmt, fmt_pm, md_table
from reporting.paper import task_sort_key
from reporting.runs import ReportError, SuccessDefinition, read_json
from reporting.stats import mean_std

CALIBRATION_BAND = (0.2, 0.6)  # the fine-tuning issue's rule: sampled last-step success with room both ways
RECIPE_FIELDS = ("env_id", "action_head", "num_bins", "norm_obs", "action_noise", "demos", "seed", "success", "bc_loss")


def read_recipes(folders: list[Path]) -> list[dict]:
    """The recipes pretrain_bc.py writes beside its files ({out}.json), from each folder."""
    recipes = []
    for folder in folders:
        if not folder.is_dir():
            raise ReportError(f"{folder}: no such directory")
        recipes += [read_json(path, RECIPE_FIELDS) for path in sorted(folder.glob("*.json"))]
    if not recipes:
        raise ReportError(f"{', '.join(map(str, folders))}: no pretrain_bc.py recipes (*.json)")
    return recipes


def write_calibration(recipes: list[dict], folders: list[Path], out_dir: Path, success: SuccessDefinition) -> Path:
    """calibration.md: per task, head and recipe, the pretrained policy's success against the number of
    demonstrations (mean ± std over pretraining seeds), the smallest count in CALIBRATION_BAND, and one figure."""
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    definition = "any" if success.name == "any" else "last"
    groups = {}
    for recipe in recipes:
        key = (recipe["env_id"], recipe["action_head"], recipe["num_bins"], recipe["norm_obs"], recipe["action_noise"])
        groups.setdefault(key, {}).setdefault(recipe["demos"], []).append(recipe)
    rows, picks = [], []
    tasks = sorted({k[0] for k in groups}, key=task_sort_key)
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
    panels = dict(zip(tasks, axes[0]))
    colors = iter(OTHER_COLORS * len(groups))
    for key in sorted(groups, key=lambda k: (task_sort_key(k[0]), k[1:])):
        env_id, head, k, norm_obs, noise = key
        label = f"{head}, K = {k}" + ("" if norm_obs else ", raw observations") + f", noise {noise:g}"
        demos = sorted(groups[key])
        sampled = [mean_std([r["success"]["sampled"][definition] for r in groups[key][d]]) for d in demos]
        greedy = [mean_std([r["success"]["greedy"][definition] for r in groups[key][d]]) for d in demos]
        last = [mean_std([r["success"]["sampled"]["last"] for r in groups[key][d]])[0] for d in demos]
        for d, (mean, std), (g_mean, g_std) in zip(demos, sampled, greedy):
            runs = groups[key][d]
            rows.append(
                [
                    env_id,
                    label,
                    d,
                    len(runs),
                    fmt_pm(mean, std),
                    fmt_pm(g_mean, g_std),
                    fmt(float(np.mean([r["bc_loss"] for r in runs]))),
                    ", ".join(str(r["seed"]) for r in runs),
                ]
            )
        inside = [d for d, value in zip(demos, last) if CALIBRATION_BAND[0] <= value <= CALIBRATION_BAND[1]]
        picks.append(f"- {env_id}, {label}: " + (f"{inside[0]} demonstrations" if inside else "none in the band"))
        color, ax = next(colors), panels[env_id]
        ax.errorbar(
            demos,
            [m for m, _ in sampled],
            yerr=[s for _, s in sampled],
            color=color,
            marker="o",
            capsize=3,
            label=f"{label}: sampled",
        )
        ax.errorbar(
            demos,
            [m for m, _ in greedy],
            yerr=[s for _, s in greedy],
            color=color,
            marker="x",
            ls="--",
            capsize=3,
            label=f"{label}: greedy",
        )
    for env_id, ax in panels.items():
        if success.name == "last":
            ax.axhspan(*CALIBRATION_BAND, color="gray", alpha=0.15, lw=0)
        ax.set_xscale("log")
        ax.set_xticks(sorted({d for key in groups if key[0] == env_id for d in groups[key]}))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("demonstrations (episodes)")
        ax.set_ylabel(f"pretrained policy's {success.noun}")
        ax.set_title(env_id)
        ax.grid(alpha=0.3)
        legend(ax)
    figure = save(fig, out_dir, f"calibration_{success.name}.png")
    option = "" if success.name == "any" else f" --success-definition {success.name}"
    text = [
        "# Pretraining calibration\n",
        f"Generated by `python report.py --calibration {' '.join(map(str, folders))} --out-dir {out_dir}{option}` from "
        f"{len(recipes)} `pretrain_bc.py` recipes. **Success definition: {success.name}**: {success.meaning}. Each "
        f"pretrained policy's success over its recipe's evaluation episodes, mean ± std (ddof=0) over pretraining "
        f"seeds; sampled (the paper's protocol, how fine-tuning starts) and greedy (argmax per dimension).\n",
        md_table(
            [
                "task",
                "recipe",
                "demos",
                "seeds",
                f"sampled {success.noun}",
                f"greedy {success.noun}",
                "BC token loss (nats)",
                "seeds used",
            ],
            rows,
        ),
        f"The smallest demonstration count whose mean sampled last-step success lies in {CALIBRATION_BAND[0]}-"
        f"{CALIBRATION_BAND[1]} (the fine-tuning issue's rule: room both ways):\n",
        "\n".join(picks) + "\n",
        f"![calibration]({figure})\n",
    ]
    path = out_dir / "calibration.md"
    write_text_atomically(path, "\n".join(text))
    return path
