"""The paper's tables filled with our runs (which arms go in which table, and each row's cells), and the tables of
incomplete and set-apart runs."""

from dataclasses import dataclass

import numpy as np

from reporting.arms import Arm, SetApart
from reporting.curves import curve
from reporting.markdown import fmt, fmt_pm, fmt_steps, md_table
from reporting.paper import REGIME_SUFFIXES, paper_exp_name, section_exp_names, task_sort_key
from reporting.runs import Run, SuccessDefinition
from reporting.stats import mean_std

SECTION_TITLES = {
    "2": "Table 2: final success, AUC and steps to 0.5 per task and arm",
    "3": "Table 3: button-press ablations of the utility mask",
    "4": "Table 4: button-press masking variants and loss-side shaping",
    "other": "Other runs (exp_names the paper does not have)",
}


def steps_to_half_cell(arm: Arm) -> str:
    reached = [v for v in arm.scores("steps_to_half") if v is not None]
    if not reached:
        return f"never (0/{arm.n})" if arm.n else ""
    mean, std = mean_std(reached)
    suffix = "" if len(reached) == arm.n else f" ({len(reached)}/{arm.n} reached)"
    return f"{fmt_steps(mean)} ± {fmt_steps(std)}{suffix}"


def n_cell(arm: Arm) -> str:
    return (
        f"{arm.n}"
        + (f" (+{len(arm.incomplete)} incomplete)" if arm.incomplete else "")
        + (f" (+{arm.set_apart} set apart)" if arm.set_apart else "")
    )


def total_steps_cell(arm: Arm) -> str:
    """The environment steps its complete runs trained (one value: a cell's runs share their settings)."""
    return ", ".join(f"{steps:,}" for steps in sorted({run.total_steps for run in arm.complete}))


def masked_cell(arm: Arm) -> str:
    """The mean over complete seeds of the fraction of bins masked after the ramp, with the budget; n/a for an arm
    that masks nothing by design or whose runs have not reached the ramp's end."""
    if not arm.complete:
        return ""
    if any("mask_fraction" not in run.metrics for run in arm.complete):
        return "n/a"
    fractions = [run.masked_after_ramp() for run in arm.complete]
    if None in fractions:
        return "n/a (ramp unfinished)"
    budget = arm.complete[0].config.get("mask_budget")
    return f"{np.mean(fractions):.3f}" + ("" if budget is None else f" (budget {budget:g})")


@dataclass
class Section:
    key: str  # "2", "3", "4" or "other"
    arms_by_env: dict  # env_id -> [Arm] in the table's row order


def build_sections(arms: dict, reference: list[dict]) -> list[Section]:
    names = section_exp_names(reference)
    known = {name for table in names.values() for name in table}
    envs = sorted({env for env, _ in arms}, key=task_sort_key)
    sections, shown = [], set()
    for key in ["2", "3", "4", "other"]:
        # other runs come with Table 2's arms on the same task, for comparison
        order = (
            names[key]
            if key in names
            else sorted({exp for _, exp in arms if paper_exp_name(exp) not in known}) + names["2"]
        )
        by_env = {}
        for env in envs:
            # each paper cell, then the same cell in another regime
            present = [
                arms[(env, name)]
                for exp in order
                for name in (exp, *(exp + s for s in REGIME_SUFFIXES))
                if (env, name) in arms and (key != "other" or name == exp or paper_exp_name(name) == exp)
            ]
            # a later table appears for a task only with an arm no earlier table showed (not Table 2's arms again)
            if any((env, arm.exp_name) not in shown for arm in present):
                by_env[env] = present
                shown.update((env, arm.exp_name) for arm in present)
        if by_env:
            sections.append(Section(key, by_env))
    return sections


def table_rows(section: Section, reference: list[dict]) -> list:
    """One row per (arm, paper row) in the paper's order; arms the paper lacks get a row with empty paper cells."""
    rows = []
    for env_id, arms in section.arms_by_env.items():
        for arm in arms:
            paper = [
                r
                for r in reference
                if r["table"] == section.key and r["task"] == arm.task and r["exp_name"] == paper_exp_name(arm.exp_name)
            ] or [None]
            for p in paper:
                mean, std = mean_std(arm.scores("final_success"))
                auc_mean, auc_std = mean_std(arm.scores("auc"))
                rows.append(
                    [
                        env_id,
                        arm.exp_name,
                        p["label"] if p else "",
                        n_cell(arm),
                        total_steps_cell(arm),
                        masked_cell(arm),
                        fmt_pm(mean, std),
                        fmt_pm(p["final_mean"], p["final_std"]) if p else "",
                        fmt_pm(auc_mean, auc_std),
                        fmt(p["auc"]) if p else "",
                        steps_to_half_cell(arm),
                        fmt_steps(p["steps_to_half"]) if p and p["steps_to_half"] else "",
                        ("" if p is None or p["n"] is None else f"{p['n']:.0f}")
                        + (f"; {p['note']}" if p and p["note"] else ""),
                    ]
                )
    return rows


TABLE_HEADER = [
    "task",
    "exp_name",
    "paper row",
    "n",
    "steps",
    "masked after ramp",
    "final success",
    "paper final",
    "AUC",
    "paper AUC",
    "steps to 0.5",
    "paper steps",
    "paper n / note",
]


def incomplete_table(runs: list[Run], success: SuccessDefinition) -> str:
    rows = []
    for run in sorted(runs, key=lambda r: str(r.path)):
        steps = run.steps
        last = curve(run, success.curve)
        rows.append(
            [
                f"`{run.path.name}`",
                run.env_id,
                run.exp_name,
                run.seed,
                f"{int(steps[-1]):,}" if len(steps) else "0",
                f"{int(run.config.get('total_timesteps', 0)):,}",
                fmt(last[-1]) if len(last) else "",
            ]
        )
    return md_table(
        ["run folder", "env_id", "exp_name", "seed", "last logged step", "total_timesteps", f"last {success.curve}"],
        rows,
    )


def set_apart_table(entries: list[SetApart]) -> str:
    rows = [
        [
            f"`{e.run.path.name}`",
            e.run.env_id,
            e.run.exp_name,
            e.run.seed,
            "complete" if e.run.complete else "incomplete",
            f"{e.run.total_steps:,}",
            e.reason,
        ]
        for e in sorted(entries, key=lambda e: str(e.run.path))
    ]
    return md_table(["run folder", "env_id", "exp_name", "seed", "state", "steps", "why"], rows)
