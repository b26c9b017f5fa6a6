"""The statistics section: per task each arm's IQM with its interval, and every pair of arms that share a table."""

import itertools

from reporting import stats
from reporting.markdown import fmt_interval, md_table
from reporting.paper import task_sort_key
from reporting.runs import SuccessDefinition
from reporting.stats import (
    METRICS,
    comparison_sentence,
    improvement_interval,
    improvement_label,
    iqm_interval,
    score_matrix,
)
from reporting.tables import Section


def compared_pairs(sections: list[Section]) -> dict:
    """env_id -> the pairs of arms (each with at least 2 complete seeds) that share a table, each pair once."""
    pairs = {}
    for section in sections:
        for env_id, arms in section.arms_by_env.items():
            env_pairs = pairs.setdefault(env_id, [])
            for x, y in itertools.combinations([arm for arm in arms if arm.n >= 2], 2):
                if (x, y) not in env_pairs and (y, x) not in env_pairs:
                    env_pairs.append((x, y))
    return pairs


def statistics(arms: dict, sections: list[Section]) -> list[str]:
    """Per task: each arm's IQM with its 95% interval, then every pair of arms that share a table."""
    lines = []
    pairs = compared_pairs(sections)
    for env_id in sorted({env for env, _ in arms}, key=task_sort_key):
        in_tables = [arm for s in sections for arm in s.arms_by_env.get(env_id, [])]
        env_arms = list(dict.fromkeys(in_tables + [arm for (env, _), arm in arms.items() if env == env_id]))
        ready = [arm for arm in env_arms if arm.n >= 2]
        lines.append(f"### {env_id}\n")
        skipped = [arm.exp_name for arm in env_arms if arm.n < 2]
        if skipped:
            lines.append(f"Left out (fewer than 2 complete seeds): {', '.join(skipped)}.\n")
        if not ready:
            continue
        intervals = {(arm.exp_name, m): iqm_interval(arm, m) for arm in ready for m in METRICS}
        lines.append(
            md_table(
                ["exp_name", "n"] + [f"IQM {name} [95% CI]" for name in METRICS.values()],
                [
                    [arm.exp_name, arm.n] + [fmt_interval(*intervals[(arm.exp_name, m)], m) for m in METRICS]
                    for arm in ready
                ],
            )
        )
        rows = []
        for x, y in pairs.get(env_id, []):
            cells, sentences = [x.exp_name, y.exp_name], []
            for metric in METRICS:
                poi = improvement_interval(x, y, metric)
                cells.append(fmt_interval(*poi))
                sentences.append(
                    comparison_sentence(
                        metric,
                        x.exp_name,
                        score_matrix(x, metric),
                        y.exp_name,
                        score_matrix(y, metric),
                        intervals[(x.exp_name, metric)],
                        intervals[(y.exp_name, metric)],
                        poi,
                    )
                )
            rows.append(cells + [" ".join(sentences)])
        if rows:
            lines.append(
                md_table(
                    ["X", "Y"]
                    + [f"{improvement_label(m)}, {name} [95% CI]" for m, name in METRICS.items()]
                    + ["in words"],
                    rows,
                )
            )
    return lines


def statistics_section(arms: dict, sections: list[Section], success: SuccessDefinition) -> list[str]:
    """The section's heading, what its numbers are and when a pair gets a verdict, then statistics()."""
    lines = ["## Statistics: interquartile mean and probability of improvement (rliable)\n"]
    lines.append(
        f"Per task, over complete seeds (arms with at least 2), under the {success.name} success definition: the IQM "
        f"(25% trimmed mean; with 3 seeds it equals the mean) with a {stats.CI_SIZE:.0%} stratified-bootstrap "
        f"percentile interval, and for every pair of arms in a table the probability of improvement P(X > Y) (the "
        f"chance that a random seed of X beats one of Y, ties count half; for steps to 0.5, where fewer is better, "
        f"P(X < Y), and a seed that never reached 0.5 counts as its run's length, a lower bound) with its interval; "
        f"{stats.BOOTSTRAP_REPS} bootstrap replications, seed {stats.BOOTSTRAP_SEED}. A bootstrap cannot reach beyond "
        f"the observed seeds, so with few seeds its intervals are too narrow (three seeds of X all above three of Y "
        f"give P(X > Y) = 1 with interval [1, 1]): simulated pairs of identically distributed arms come out separated "
        f"on either measure about 20% of the time at 3 seeds and 10% at 5, on both 11% and 3%. So a pair gets a "
        f"separation verdict only when both arms have at least {stats.VERDICT_MIN_SEEDS} complete seeds, and none "
        f"where both are at the ceiling (every complete seed of both >= {stats.CEILING}) or at the floor "
        f'(<= {stats.FLOOR}), where the task cannot tell arms apart. "Separated on both" is the stronger verdict; '
        f"an overlap means these runs cannot tell the arms apart, not that the arms are equal.\n"
    )
    return lines + statistics(arms, sections)
