"""The vocabulary section: one arm across K. The paper's Table 3 varies K for the utility mask only; the controls,
vanilla and random at the same K, say whether a drop is the vocabulary's or the mask's."""

import itertools
from dataclasses import dataclass

import numpy as np

from reporting import stats
from reporting.arms import Arm, settings_apart_from
from reporting.markdown import fmt_interval, md_table
from reporting.paper import task_sort_key
from reporting.sections.statistics import compared_pairs
from reporting.stats import (
    comparison_sentence,
    improvement_interval,
    interval_estimate,
    iqm,
    iqm_difference,
    iqm_interval,
    score_matrix,
)
from reporting.tables import Section

REFERENCE_K = 64  # the paper's default vocabulary; a family without it is read against its smallest K
VOCABULARY_METRICS = ("final_success", "auc")  # what the drops are measured on (steps to 0.5 is censored)


@dataclass
class Family:
    """The cells of one task whose settings differ only in num_bins (and exp_name): one arm across vocabularies."""

    env_id: str
    arms: list  # ascending K; each with at least 2 complete seeds

    @property
    def reference(self) -> Arm:
        """The cell at REFERENCE_K (else the smallest K); of several at that K, the one with the most seeds."""
        ks = [arm.num_bins()[0] for arm in self.arms]
        k = REFERENCE_K if REFERENCE_K in ks else min(ks)
        return max((arm for arm in self.arms if arm.num_bins()[0] == k), key=lambda arm: arm.n)

    def at(self, k: int) -> Arm | None:
        at_k = [arm for arm in self.arms if arm.num_bins()[0] == k and arm is not self.reference]
        return max(at_k, key=lambda arm: arm.n) if at_k else None


def family_key(arm: Arm) -> str:
    """What an arm computes apart from its vocabulary: its cell's settings without exp_name and num_bins (the arms'
    settings differ in their fields, so vanilla, random and each utility variant fall in different families)."""
    return settings_apart_from(arm, "num_bins")


def vocabulary_families(arms: dict) -> list[Family]:
    """The families with at least two vocabularies, each K's cells with at least 2 complete seeds (for intervals)."""
    groups = {}
    for (env_id, _), arm in sorted(arms.items(), key=lambda item: (task_sort_key(item[0][0]), item[0][1])):
        if arm.n >= 2 and len(arm.num_bins()) == 1:
            groups.setdefault((env_id, family_key(arm)), []).append(arm)
    families = [
        Family(env_id, sorted(members, key=lambda arm: (arm.num_bins()[0], arm.exp_name)))
        for (env_id, _), members in groups.items()
    ]
    return [family for family in families if len({arm.num_bins()[0] for arm in family.arms}) >= 2]


def drop_difference(x_ref: np.ndarray, x_k: np.ndarray, y_ref: np.ndarray, y_k: np.ndarray) -> np.ndarray:
    """How much more the vocabulary costs arm X than arm Y: (X's IQM at the reference K - at K) - (Y's likewise)."""
    return (iqm(x_ref) - iqm(x_k)) - (iqm(y_ref) - iqm(y_k))


def drop_sentence(name: str, k: int, x: str, y: str, cells: list, point: float, low: float, high: float) -> str:
    """In words: whether K costs family X more or less than family Y, with the seed rule of the other verdicts."""
    if min(len(c) for c in cells) < stats.VERDICT_MIN_SEEDS:
        return f"{name}: no verdict below {stats.VERDICT_MIN_SEEDS} complete seeds in each of the four cells."
    if low <= 0 <= high:
        return f"{name}: the interval contains 0: these runs cannot tell whether K = {k} costs {x} more than {y}."
    return f"{name}: K = {k} costs {x if low > 0 else y} more (the interval excludes 0)."


def vocabulary_section(arms: dict, sections: list[Section]) -> list[str]:
    """Per task and family: each K against the family's reference K (the drop, IQM difference and P(X > Y)); the
    families at each K against each other where no table compared them; and whether a K costs one family more than
    another (the difference of their drops)."""
    families = vocabulary_families(arms)
    if not families:
        return []
    compared = {frozenset((x.exp_name, y.exp_name)) for pairs in compared_pairs(sections).values() for x, y in pairs}
    names = {"final_success": "final success", "auc": "AUC"}
    lines = [
        "## Vocabulary: each arm across K\n",
        f"A family is the cells of one task whose settings differ only in the vocabulary (num_bins) and the name: one "
        f"arm across K, read against its cell at K = {REFERENCE_K} (else its smallest K). Drop = the IQM at the "
        f"reference K minus the IQM at K (positive: the larger vocabulary loses), with a {stats.CI_SIZE:.0%} "
        f"stratified-bootstrap interval (each cell's seeds resampled on their own); P(X > Y) as in the statistics. "
        f"Only cells with at least 2 complete seeds; verdicts need {stats.VERDICT_MIN_SEEDS} in every cell involved. "
        f"Whether a vocabulary costs one arm more than another is the difference of their drops, which is what "
        f"separates a mask's failure from the vocabulary's: a K that hurts the controls as much as the mask is the "
        f"vocabulary's.\n",
    ]
    for env_id in sorted({f.env_id for f in families}, key=task_sort_key):
        env_families = [f for f in families if f.env_id == env_id]
        lines.append(f"### {env_id}\n")
        rows = []
        for family in env_families:
            ref = family.reference
            for arm in family.arms:
                cells = [ref.exp_name, arm.num_bins()[0], arm.exp_name, arm.n]
                cells += [fmt_interval(*iqm_interval(arm, m)) for m in VOCABULARY_METRICS]
                if arm is ref:
                    rows.append(cells + ["reference"] + [""] * (2 * len(VOCABULARY_METRICS)))
                    continue
                sentences = []
                for metric in VOCABULARY_METRICS:
                    cells.append(
                        fmt_interval(
                            *interval_estimate((score_matrix(ref, metric), score_matrix(arm, metric)), iqm_difference)
                        )
                    )
                for metric in VOCABULARY_METRICS:
                    poi = improvement_interval(arm, ref, metric)
                    cells.append(fmt_interval(*poi))
                    sentences.append(
                        comparison_sentence(
                            metric,
                            arm.exp_name,
                            score_matrix(arm, metric),
                            ref.exp_name,
                            score_matrix(ref, metric),
                            iqm_interval(arm, metric),
                            iqm_interval(ref, metric),
                            poi,
                        )
                    )
                rows.append(cells + [" ".join(sentences)])
        lines.append(
            md_table(
                ["family (reference cell)", "K", "cell", "n"]
                + [f"IQM {names[m]} [95% CI]" for m in VOCABULARY_METRICS]
                + [f"drop, {names[m]} [95% CI]" for m in VOCABULARY_METRICS]
                + [f"P(X > reference), {names[m]} [95% CI]" for m in VOCABULARY_METRICS]
                + ["in words"],
                rows,
            )
        )
        ks = sorted({arm.num_bins()[0] for f in env_families for arm in f.arms})
        same_k, drops = [], []
        for k in ks:
            for fx, fy in itertools.combinations(
                [f for f in env_families if any(a.num_bins()[0] == k for a in f.arms)], 2
            ):
                x = next(a for a in fx.arms if a.num_bins()[0] == k and (a is fx.reference or a is fx.at(k)))
                y = next(a for a in fy.arms if a.num_bins()[0] == k and (a is fy.reference or a is fy.at(k)))
                if frozenset((x.exp_name, y.exp_name)) not in compared:
                    cells, sentences = [k, x.exp_name, y.exp_name], []
                    for metric in VOCABULARY_METRICS:
                        poi = improvement_interval(x, y, metric)
                        cells.append(fmt_interval(*poi))
                        sentences.append(
                            comparison_sentence(
                                metric,
                                x.exp_name,
                                score_matrix(x, metric),
                                y.exp_name,
                                score_matrix(y, metric),
                                iqm_interval(x, metric),
                                iqm_interval(y, metric),
                                poi,
                            )
                        )
                    same_k.append(cells + [" ".join(sentences)])
                xk, yk = fx.at(k), fy.at(k)
                if xk is None or yk is None:
                    continue
                ref_x, ref_y = fx.reference, fy.reference
                if ref_x.num_bins() != ref_y.num_bins():
                    continue
                cells, sentences = [k, xk.exp_name, yk.exp_name], []
                for metric in VOCABULARY_METRICS:
                    matrices = [score_matrix(a, metric) for a in (ref_x, xk, ref_y, yk)]
                    estimate = interval_estimate(tuple(matrices), drop_difference)
                    cells.append(fmt_interval(*estimate))
                    sentences.append(
                        drop_sentence(
                            names[metric], k, fx.reference.exp_name, fy.reference.exp_name, matrices, *estimate
                        )
                    )
                drops.append(cells + [" ".join(sentences)])
        if same_k:
            lines.append("At the same K, across families (pairs no table above compares):\n")
            lines.append(
                md_table(
                    ["K", "X", "Y"] + [f"P(X > Y), {names[m]} [95% CI]" for m in VOCABULARY_METRICS] + ["in words"],
                    same_k,
                )
            )
        if drops:
            lines.append(
                "Does the larger vocabulary cost X's family more than Y's? Drop of X minus drop of Y "
                "(positive: X loses more):\n"
            )
            lines.append(
                md_table(
                    ["K", "X", "Y"]
                    + [f"drop X - drop Y, {names[m]} [95% CI]" for m in VOCABULARY_METRICS]
                    + ["in words"],
                    drops,
                )
            )
    return lines
