"""The action-heads section: each structured head against its arm's categorical cells."""

import numpy as np

from reporting import stats
from reporting.arms import Arm, arms_by_env, settings_apart_from
from reporting.markdown import fmt_interval, md_table
from reporting.paper import task_sort_key
from reporting.sections.vocabulary import REFERENCE_K, VOCABULARY_METRICS
from reporting.stats import (
    comparison_sentence,
    improvement_interval,
    interval_estimate,
    iqm,
    iqm_difference,
    iqm_interval,
    score_matrix,
)

# The action heads: section 5 explains the K = 256 drop by "fine, unordered discretization"; a head that knows the
# bins' order (ordinal, Poisson) tests it. Each arm with such a head is read against the same arm with the categorical
# head, at its own K and at the reference K, and by the share of the categorical head's loss at its K that it removes.

CATEGORICAL_HEAD = "categorical"


def action_head(arm: Arm) -> str:
    return arm.complete[0].settings["action_head"]  # runs recorded before the heads existed read as categorical


def head_family_key(arm: Arm) -> str:
    """What an arm computes apart from its vocabulary and its head: one arm (vanilla, random, a utility variant)
    across K and heads."""
    return settings_apart_from(arm, "num_bins", "action_head")


def share_of_loss_removed(reference: np.ndarray, categorical_k: np.ndarray, head_k: np.ndarray) -> np.ndarray:
    """Of the categorical head's loss at K (its IQM at the reference K minus at K), the share the head gets back:
    (head's IQM at K - categorical's at K) / that loss; 1 = as good as the categorical head at the reference K."""
    return (iqm(head_k) - iqm(categorical_k)) / (iqm(reference) - iqm(categorical_k))


def share_of_loss_cell(reference: Arm, at_k: Arm, candidate: Arm, metric: str, no_loss: str) -> str:
    """The share of at_k's loss from `reference` that `candidate` takes back, with its interval (share_of_loss_removed);
    `no_loss` where the loss's interval reaches 0 (nothing to take back)."""
    matrices = (score_matrix(reference, metric), score_matrix(at_k, metric))
    if interval_estimate(matrices, iqm_difference)[1] <= 0:
        return no_loss
    return fmt_interval(*interval_estimate(matrices + (score_matrix(candidate, metric),), share_of_loss_removed))


def head_rows(env_arms: list) -> list:
    """(reference, categorical at K or None, the head's cell) for each non-categorical cell whose arm has a
    categorical cell at the reference K (else its smallest K); cells with at least 2 complete seeds and one K."""
    groups = {}
    for arm in env_arms:
        if arm.n >= 2 and len(arm.num_bins()) == 1:
            groups.setdefault(head_family_key(arm), []).append(arm)
    rows = []
    for members in groups.values():
        categorical = {}
        for arm in members:
            if action_head(arm) == CATEGORICAL_HEAD:
                k = arm.num_bins()[0]
                if k not in categorical or arm.n > categorical[k].n:
                    categorical[k] = arm
        if not categorical:
            continue
        reference = categorical[REFERENCE_K if REFERENCE_K in categorical else min(categorical)]
        for arm in sorted(members, key=lambda a: (action_head(a), a.num_bins()[0], a.exp_name)):
            if action_head(arm) != CATEGORICAL_HEAD:
                rows.append((reference, categorical.get(arm.num_bins()[0]), arm))
    return rows


def heads_section(arms: dict) -> list[str]:
    """Per task: each structured-head cell against its arm's categorical cell at the same K and at the reference K
    (P(X > Y) and the separation verdict), and the share of the categorical head's loss at that K it removes."""
    names = {"final_success": "final success", "auc": "AUC"}
    tables = {env_id: head_rows(env_arms) for env_id, env_arms in arms_by_env(arms).items()}
    if not any(tables.values()):
        return []
    lines = [
        "## Action heads: each arm against itself with the categorical head\n",
        f"Cells whose settings differ from a categorical cell only in the head (action_head), the vocabulary and the "
        f"name, read against that arm's categorical cell at the same K and at K = {REFERENCE_K} (else its smallest "
        f"categorical K): P(X > Y) with the separation verdict of the statistics, and the share of the categorical "
        f"head's loss at K (its IQM at the reference K minus at K) that the head removes, (head's IQM at K - "
        f"categorical's at K) / that loss, with a {stats.CI_SIZE:.0%} stratified-bootstrap interval: 1 means the head at K "
        f"is as good as the categorical head at the reference K; shown where the categorical loss's interval "
        f"excludes 0.\n",
    ]
    for env_id in sorted(tables, key=task_sort_key):
        if not tables[env_id]:
            continue
        lines.append(f"### {env_id}\n")
        rows = []
        for reference, categorical_k, arm in tables[env_id]:
            cells = [reference.exp_name, action_head(arm), arm.num_bins()[0], arm.exp_name, arm.n]
            cells += [fmt_interval(*iqm_interval(arm, m)) for m in VOCABULARY_METRICS]
            sentences = []
            for label, other in (("same K", categorical_k), (f"K = {reference.num_bins()[0]}", reference)):
                for metric in VOCABULARY_METRICS:
                    if other is None:
                        cells.append("no categorical cell")
                        continue
                    poi = improvement_interval(arm, other, metric)
                    cells.append(fmt_interval(*poi))
                    sentences.append(
                        f"against {other.exp_name} ({label}), "
                        + comparison_sentence(
                            metric,
                            arm.exp_name,
                            score_matrix(arm, metric),
                            other.exp_name,
                            score_matrix(other, metric),
                            iqm_interval(arm, metric),
                            iqm_interval(other, metric),
                            poi,
                        )
                    )
            for metric in VOCABULARY_METRICS:
                if categorical_k is None or categorical_k is reference:
                    cells.append("")
                    continue
                cells.append(share_of_loss_cell(reference, categorical_k, arm, metric, "no loss to remove"))
            rows.append(cells + [" ".join(sentences)])
        lines.append(
            md_table(
                ["arm (categorical reference cell)", "head", "K", "cell", "n"]
                + [f"IQM {names[m]} [95% CI]" for m in VOCABULARY_METRICS]
                + [f"P(X > categorical at K), {names[m]} [95% CI]" for m in VOCABULARY_METRICS]
                + [f"P(X > reference), {names[m]} [95% CI]" for m in VOCABULARY_METRICS]
                + [f"share of the loss removed, {names[m]} [95% CI]" for m in VOCABULARY_METRICS]
                + ["in words"],
                rows,
            )
        )
    return lines
