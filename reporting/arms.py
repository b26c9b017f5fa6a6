"""Arms (the cells of a table): runs grouped by (env_id, exp_name) and settings, and the runs set apart."""

import json
from dataclasses import dataclass, field

import grids  # which config.json keys are settings, and how to name their differences
from reporting.paper import paper_task, task_sort_key
from reporting.runs import Run, SuccessDefinition


@dataclass(eq=False)
class Arm:
    """One cell: an (env_id, exp_name) and its settings. Its complete runs are aggregated, its incomplete runs shown
    apart; runs of the same (env_id, exp_name) with other settings are in no arm (set_apart counts them)."""

    env_id: str
    exp_name: str
    success: SuccessDefinition
    complete: list = field(default_factory=list)
    incomplete: list = field(default_factory=list)
    set_apart: int = 0

    @property
    def n(self):
        return len(self.complete)

    @property
    def task(self):
        return paper_task(self.env_id)

    def scores(self, metric) -> list:
        """The complete runs' summary.json values of a metric, under the report's success definition for the success
        metrics (None for a run that has no value)."""
        return [run.score(self.success.field(metric)) for run in self.complete]

    def num_bins(self) -> list:
        return sorted({run.num_bins for run in self.complete + self.incomplete})


@dataclass
class SetApart:
    """A run in no cell, and why."""

    run: Run
    reason: str


def settings_key(run: Run) -> str:
    return json.dumps(run.settings, sort_keys=True)


def settings_apart_from(arm: "Arm", *fields: str) -> str:
    """An arm's settings without exp_name and `fields`: the cells equal under it differ only in those (one arm across
    vocabularies, heads or KL budgets)."""
    return json.dumps(
        {k: v for k, v in arm.complete[0].settings.items() if k not in ("exp_name", *fields)}, sort_keys=True
    )


def arms_by_env(arms: dict) -> dict:
    """env_id -> its arms, in the arms' order."""
    by_env = {}
    for (env_id, _), arm in arms.items():
        by_env.setdefault(env_id, []).append(arm)
    return by_env


def cell_settings(runs: list[Run]) -> dict:
    """The settings of a cell: those of most of its complete runs (of most of its runs while none is complete);
    ties go to the longest total_timesteps, then to the lowest seed."""
    pool = [run for run in runs if run.complete] or runs
    groups = {}
    for run in sorted(pool, key=lambda r: r.seed):
        groups.setdefault(settings_key(run), []).append(run)
    best = max(groups.values(), key=lambda group: (len(group), group[0].config.get("total_timesteps") or 0))
    return best[0].settings


def group_runs(runs: list[Run], success: SuccessDefinition) -> tuple[dict, list[SetApart]]:
    """(env_id, exp_name) -> its Arm, and the runs set apart: those lacking the success definition's fields, and
    those whose settings differ from their cell's."""
    arms, set_apart, candidates = {}, [], {}
    for run in sorted(runs, key=lambda r: (task_sort_key(r.env_id), r.exp_name, r.seed)):
        lacking = run.lacks(success)
        if lacking:
            set_apart.append(SetApart(run, f"lacks {', '.join(lacking)} (--success-definition {success.name})"))
        else:
            candidates.setdefault((run.env_id, run.exp_name), []).append(run)
    for (env_id, exp_name), cell_runs in candidates.items():
        arm = arms[(env_id, exp_name)] = Arm(env_id, exp_name, success)
        settings = cell_settings(cell_runs)
        for run in cell_runs:
            differences = grids.setting_differences(run.settings, settings)
            if differences:
                set_apart.append(
                    SetApart(
                        run,
                        "settings differ from its cell's: "
                        + grids.describe_differences(differences, "this run", "cell"),
                    )
                )
            else:
                (arm.complete if run.complete else arm.incomplete).append(run)
    for entry in set_apart:
        arm = arms.get((entry.run.env_id, entry.run.exp_name))
        if arm is not None:
            arm.set_apart += 1
    return arms, set_apart
