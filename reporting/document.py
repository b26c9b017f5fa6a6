"""report.md from start to end: the header and the conventions, the runs set apart and the incomplete ones, then
each section in order (sections/); written atomically."""

import os
from pathlib import Path

from reporting import curves, stats
from reporting.arms import group_runs
from reporting.runs import Run, SuccessDefinition
from reporting.sections.finetune import finetune_section
from reporting.sections.heads import heads_section
from reporting.sections.heatmaps import heatmaps_section
from reporting.sections.kl_early_stop import kl_section
from reporting.sections.paper_tables import paper_tables_section
from reporting.sections.provenance import code_provenance
from reporting.sections.rank_agreement import rank_agreement_section
from reporting.sections.statistics import statistics_section
from reporting.sections.vocabulary import vocabulary_section
from reporting.tables import build_sections, incomplete_table, set_apart_table

CONVENTIONS = """\
How to read this report:
- An arm (a cell of a table) is one (env_id, exp_name) with one set of settings; n counts its complete runs (seeds).
  Only complete runs (with `summary.json`) enter means, tables, curve bands and statistics; incomplete runs are
  listed below and drawn dashed, labelled.
- A cell's settings are those of most of its complete runs (config.json without seed, runs_dir, cuda, threads and
  the metadata; ties: the longest total_timesteps). A run with other settings (a smoke run, a changed flag), or one
  that lacks the success definition's fields, is set apart: listed below with the reason, in no cell ("+k set
  apart" in n). **steps**: the environment steps the cell's complete runs trained (`summary.json` `total_steps`).
- **masked after ramp**: the budget actually spent: the mean over complete seeds of `metrics.csv` `mask_fraction` over
  the iterations at or after the ramp's end (`mask_warmup_end`), beside the configured `mask_budget`; n/a for an arm
  that masks nothing (no `mask_fraction`) or whose runs end before the ramp does. Boost masks no bin: 0.
- **final success**: `summary.json` `final_success` (success rate of the last 100 training episodes);
  **AUC**: mean of the success curve over iterations (normalized area, 0..1); **steps to 0.5**: first step at which
  the success curve reaches 0.5 (mean over the seeds that reached it; "k/n reached" otherwise). Under the last-step
  definition they are `final_success_last_step`, `auc_last_step` and `steps_to_half_last_step`.
- mean ± std is over seeds with the population std (ddof=0), the convention the paper's numbers imply.
- The paper's numbers (`paper_reference.csv`) are beside ours as published; the paper ran MetaWorld `-v2` tasks,
  these runs `-v3`. Curves: each run interpolated onto a common grid of {points} environment-step points between its
  first and last logged step (never extrapolated); an arm's mean ± std is drawn where all its complete seeds have data.
- The success IQM figure after each mean ± std success figure shows, at each grid point where all of an arm's
  complete seeds have data, the interquartile mean over them (25% trimmed mean; with 3 seeds it equals the mean)
  with a {ci} stratified-bootstrap percentile band (rliable, {reps} replications, seed {seed}; each point's seeds
  are resampled on their own, so the band is pointwise). Incomplete runs are not in it; an arm with one complete
  seed is that run's curve, without a band. A bootstrap cannot reach beyond the observed seeds: the band never
  leaves their range and has zero width where they agree, so with fewer than about 5 seeds it is too narrow (as
  for the statistics).
- Policy entropy figures show the unmasked policy's entropy (`policy_entropy`), comparable across arms; masked runs
  written before the arms logged it (a `mask_fraction` column without `sampling_entropy`) recorded the masked
  sampling distribution's there, and are left out of those figures (named under each).
- Statistics give a separation verdict for a pair of arms only when each has at least {min_seeds} complete seeds, and
  none where both are at the ceiling (every complete seed of both >= {ceiling}) or at the floor (all <= {floor}).
- A fine-tuning run (one that started from a `pretrain_bc.py` file, `--init-from`) has its success curves begin at
  step 0 at the pretrained policy's sampled success, from the file's recipe (config.json "pretrained").
"""


def write_text_atomically(path: Path, text: str):
    """A reader (or a crash) never sees half a report.md."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def write_report(
    runs: list[Run], runs_dirs: list[Path], out_dir: Path, reference: list[dict], success: SuccessDefinition
) -> Path:
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.md"
    path.unlink(missing_ok=True)  # an earlier report must not pass for this one if this one fails half-way
    for stale in (out_dir / "figures").glob("*.png"):  # figures of an earlier report that this one may not redraw
        stale.unlink()
    arms, set_apart = group_runs(runs, success)
    sections = build_sections(arms, reference)
    incomplete = [run for arm in arms.values() for run in arm.incomplete]
    n_complete = sum(arm.n for arm in arms.values())

    option = "" if success.name == "any" else f" --success-definition {success.name}"
    lines = [
        "# Results report\n",
        f"Generated by `python report.py --runs-dir {' '.join(map(str, runs_dirs))} --out-dir {out_dir}{option}` "
        f"from {len(runs)} run folders: {n_complete} complete and {len(incomplete)} incomplete in {len(arms)} arms, "
        f"{len(set_apart)} set apart.\n",
        f"**Success definition: {success.name}**: {success.meaning}. Every table, figure and statistic below uses it"
        + (
            "."
            if success.name == "any"
            else "; the paper's numbers beside ours are as published (the paper does not "
            "state its definition; MetaWorld's protocol is any step)."
        )
        + "\n",
        CONVENTIONS.format(
            points=curves.GRID_POINTS,
            min_seeds=stats.VERDICT_MIN_SEEDS,
            ceiling=stats.CEILING,
            floor=stats.FLOOR,
            ci=f"{stats.CI_SIZE:.0%}",
            reps=stats.BOOTSTRAP_REPS,
            seed=stats.BOOTSTRAP_SEED,
        ),
    ]
    if set_apart:
        lines += [
            "## Runs set apart\n",
            "In no cell, mean, curve or statistic: each lacks the fields of this report's success definition, "
            "or its settings differ from those of its cell (named).\n",
            set_apart_table(set_apart),
        ]
    if incomplete:
        lines += [
            "## Incomplete runs\n",
            "No `summary.json` yet: not in any mean, table or statistic; dashed lines in the curves.\n",
            incomplete_table(incomplete, success),
        ]
    lines += paper_tables_section(sections, reference, out_dir)
    lines += rank_agreement_section(arms, out_dir)
    lines += heatmaps_section(arms, out_dir)
    lines += statistics_section(arms, sections, success)
    lines += vocabulary_section(arms, sections)
    lines += heads_section(arms)
    lines += kl_section(arms, out_dir)
    lines += finetune_section(arms)
    lines += code_provenance(arms)
    write_text_atomically(path, "\n".join(lines))
    return path
