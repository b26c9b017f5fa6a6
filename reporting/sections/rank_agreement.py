"""The rank-agreement section: how well the utility critic's ranking of the bins agrees with the policy's."""

from pathlib import Path

from reporting.figures import figure_rank_agreement
from reporting.markdown import figure_link


def rank_agreement_section(arms: dict, out_dir: Path) -> list[str]:
    """Per task, a figure of the arms that log metrics.csv rank_agreement (the utility arms); none: no section."""
    with_rank = {}
    for arm in arms.values():
        if any("rank_agreement" in run.metrics for run in arm.complete + arm.incomplete):
            with_rank.setdefault(arm.env_id, []).append(arm)
    if not with_rank:
        return []
    lines = [
        "## Rank agreement of the utility critic with the policy\n",
        "Spearman correlation between U(s)[d, :] and the policy's log-probabilities over the bins, "
        "averaged over dimensions and states (the paper reports about 0.31).\n",
    ]
    for env_id, env_arms in with_rank.items():
        lines.append(figure_link(figure_rank_agreement(env_arms, env_id, out_dir), f"{env_id} rank agreement"))
    return lines
