"""The fine-tuning section: cells whose runs started from a pretrain_bc.py file (config.json's "pretrained"), each
against the same arm trained from scratch."""

import re

import numpy as np

from reporting import stats
from reporting.curves import curve
from reporting.markdown import fmt, fmt_interval, fmt_steps, md_table
from reporting.paper import task_sort_key
from reporting.runs import Run
from reporting.stats import improvement_interval, iqm_interval, mean_std
from reporting.tables import n_cell, total_steps_cell

FINETUNE_PART = re.compile(r"_ft-[^_]+(?:_cw\d+)?")  # grids.fine_tuned's part of an exp_name: _ft-{recipe}[_cw{N}]


def from_scratch_name(exp_name: str) -> str:
    """The from-scratch cell of a fine-tuning cell: its exp_name without the _ft-... part (ppo_vanilla_k256_ft-d2_cw5_
    no-norm-obs -> ppo_vanilla_k256_no-norm-obs, the same arm, vocabulary and regime trained from scratch)."""
    return FINETUNE_PART.sub("", exp_name, count=1)


def steps_to_reach(run: Run, column: str, level: float) -> float | None:
    """The first logged step (0: the pretrained policy) at which a run's success curve reaches `level`; None if never."""
    reached = np.flatnonzero(curve(run, column) >= level)
    return float(run.steps[reached[0]]) if len(reached) else None


def finetune_section(arms: dict) -> list[str]:
    """Each fine-tuning cell: the pretrained policy it started from and its success there (the curves' step-0 point),
    where fine-tuning took it, and against the same arm from scratch (its cell without the _ft- part, when present):
    P(X > Y) on final success, and how many steps the fine-tuning runs took to reach the from-scratch cell's final IQM."""
    tuned = sorted(
        (arm for arm in arms.values() if arm.complete and "pretrained" in arm.complete[0].config),
        key=lambda a: (task_sort_key(a.env_id), a.exp_name),
    )
    if not tuned:
        return []
    success = tuned[0].success
    definition = "any" if success.name == "any" else "last"
    rows = []
    for arm in tuned:
        recipe = arm.complete[0].config["pretrained"]
        start = mean_std([run.config["pretrained"]["success"]["sampled"][definition] for run in arm.complete])
        scratch = arms.get((arm.env_id, from_scratch_name(arm.exp_name)))
        cells = [
            arm.env_id,
            arm.exp_name,
            n_cell(arm),
            f"{recipe['demos']} demos, {recipe['action_head']}, K = {recipe['num_bins']}, "
            f"noise {recipe['action_noise']:g}",
            fmt(start[0]),
            fmt_interval(*iqm_interval(arm, "final_success")),
            fmt_interval(*iqm_interval(arm, "auc")),
        ]
        if scratch is None or not scratch.complete:
            rows.append(cells + ["none in this report", "", "", ""])
            continue
        level = iqm_interval(scratch, "final_success")[0]
        reached = [steps for run in arm.complete if (steps := steps_to_reach(run, success.curve, level)) is not None]
        cells += [
            f"{scratch.exp_name} (n={scratch.n}, {total_steps_cell(scratch)} steps)",
            fmt(level),
            (
                f"{fmt_steps(float(np.median(reached)))} ({len(reached)}/{arm.n} reached)"
                if reached
                else f"never (0/{arm.n})"
            ),
            fmt_interval(*improvement_interval(arm, scratch, "final_success")),
        ]
        rows.append(cells)
    return [
        "## Fine-tuning from a pretrained policy\n",
        f"Cells whose runs started from a `pretrain_bc.py` file (`--init-from`; config.json records its recipe). Their "
        f"curves begin at step 0 at the pretrained policy's sampled {success.noun}, measured by `pretrain_bc.py` on "
        f"its own evaluation episodes (the summary's AUC and steps to 0.5 are over training alone). Each is read "
        f"against the same arm trained from scratch (its exp_name without the `_ft-` part) where this report has it: "
        f"how many steps the fine-tuning runs took to reach that cell's final IQM (the median over seeds; 0 when the "
        f"pretrained policy starts there), and P(X > Y) on final success ({stats.CI_SIZE:.0%} interval).\n",
        md_table(
            [
                "task",
                "cell",
                "n",
                "pretrained from",
                f"pretrained {success.noun}",
                "IQM final success [95% CI]",
                "IQM AUC [95% CI]",
                "from scratch (cell)",
                "its IQM final success",
                "steps to reach it",
                "P(fine-tuned > from scratch), final [95% CI]",
            ],
            rows,
        ),
    ]
