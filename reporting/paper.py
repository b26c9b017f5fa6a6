"""The paper's numbers (paper_reference.csv: Tables 2, 3 and 4) and names: its tasks, its exp_names and tables."""

import csv
import re
from pathlib import Path

REFERENCE_CSV = Path(__file__).resolve().parents[1] / "paper_reference.csv"
PAPER_TASK_ORDER = ["reach", "button-press", "drawer-close", "pick-place"]


def paper_task(env_id: str) -> str:
    """The paper's task name of an env id: button-press-v3 -> button-press."""
    return re.sub(r"-v\d+$", "", env_id)


def task_sort_key(env_id: str):
    task = paper_task(env_id)
    return (PAPER_TASK_ORDER.index(task) if task in PAPER_TASK_ORDER else len(PAPER_TASK_ORDER), env_id)


def load_reference(path: Path = REFERENCE_CSV) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in ("final_mean", "final_std", "auc", "steps_to_half", "n"):
            row[key] = float(row[key]) if row[key] else None
    return rows


# Suffixes of exp_names that run a paper cell in another regime (grids.in_paper_regime): such a cell is read against
# the paper's row of the exp_name without it, and listed right after it
REGIME_SUFFIXES = ("_no-norm-obs",)


def paper_exp_name(exp_name: str) -> str:
    """The paper's exp_name of a cell: its own, less a regime suffix (ppo_vanilla_no-norm-obs -> ppo_vanilla)."""
    for suffix in REGIME_SUFFIXES:
        if exp_name.endswith(suffix):
            return exp_name[: -len(suffix)]
    return exp_name


def section_exp_names(reference: list[dict]) -> dict:
    """Table -> its exp_names in the paper's row order."""
    sections = {}
    for row in reference:
        names = sections.setdefault(row["table"], [])
        if row["exp_name"] not in names:
            names.append(row["exp_name"])
    return sections
