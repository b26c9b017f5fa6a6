"""The paper's tables (2, 3, 4 and other runs): each table with our rows beside the paper's, then per task its
figures (success mean ± std and IQM, sample efficiency, entropy)."""

from pathlib import Path

from reporting.figures import (
    entropy_left_out,
    figure_efficiency,
    figure_entropy,
    figure_final_across_tasks,
    figure_success,
    figure_success_iqm,
)
from reporting.markdown import figure_link, md_table
from reporting.paper import paper_task
from reporting.tables import SECTION_TITLES, TABLE_HEADER, Section, table_rows


def entropy_note(arms: list) -> str:
    """Under an entropy figure: what it shows, and which runs it leaves out."""
    left_out = entropy_left_out(arms)
    text = (
        "Policy entropy: the unmasked policy's (`policy_entropy`), comparable across arms; the masked arms' "
        "sampling distribution is in `sampling_entropy`."
    )
    if left_out:
        seeds = {}
        for run in left_out:
            seeds.setdefault(run.exp_name, []).append(str(run.seed))
        names = ", ".join(f"{name} (seed{'s' * (len(s) > 1)} {', '.join(s)})" for name, s in seeds.items())
        text += (
            f" Left out: {names}: written before the masked arms logged the unmasked entropy, their "
            f"`policy_entropy` is the masked sampling distribution's, not comparable."
        )
    return text + "\n"


def paper_tables_section(sections: list[Section], reference: list[dict], out_dir: Path) -> list[str]:
    lines, drawn = [], {}
    for section in sections:
        lines.append(f"## {SECTION_TITLES[section.key]}\n")
        if section.key == "4":
            lines.append(
                "The paper's Table 4 n is its number of seeds reaching at least 300k steps; its budget-sweep "
                "arms used a separate seed batch (random 25% there: 0.810).\n"
            )
        lines.append(md_table(TABLE_HEADER, table_rows(section, reference)))
        if section.key == "2":
            lines.append(
                figure_link(
                    figure_final_across_tasks(section.arms_by_env, out_dir, reference), "final success across tasks"
                )
            )
        paper_rows = [r for r in reference if r["table"] == section.key]
        prefix = f"table{section.key}" if section.key != "other" else "other"
        for env_id, env_arms in section.arms_by_env.items():
            task_rows = [r for r in paper_rows if r["task"] == paper_task(env_id)]
            key = (env_id, tuple(arm.exp_name for arm in env_arms))  # a table with the same arms reuses the figures
            if key not in drawn:
                drawn[key] = [
                    figure_link(figure_success(env_arms, env_id, out_dir, prefix), f"{env_id} success"),
                    figure_link(figure_success_iqm(env_arms, env_id, out_dir, prefix), f"{env_id} success IQM"),
                    figure_link(
                        figure_efficiency(env_arms, env_id, out_dir, prefix, task_rows),
                        f"{env_id} AUC and steps to 0.5",
                    ),
                    figure_link(figure_entropy(env_arms, env_id, out_dir, prefix), f"{env_id} entropy"),
                    entropy_note(env_arms),
                ]
            lines.append(f"### {env_id}\n")
            lines += drawn[key]
    return lines
