"""The code-provenance section: which code each cell's runs came from."""

from reporting.markdown import md_table
from reporting.runs import Run


def code_of(run: Run) -> str:
    """Which code made a run: the hash of the sources it ran (config.json code_sha256, the same on every machine);
    runs written before it was recorded have none."""
    sha = run.config.get("code_sha256")
    return f"`{sha[:12]}`" if sha else "no code hash"


def revision_of(run: Run) -> str:
    revision = str(run.config.get("git_revision", "unknown"))
    if revision != "unknown":
        revision = revision[:7] + ("-dirty" if revision.endswith("-dirty") else "")  # older runs' "-dirty" suffix
    changes = run.config.get("git_changes")
    return revision + (f" + uncommitted {', '.join(changes['files'])}" if changes else "")


def code_provenance(arms: dict) -> list[str]:
    """Per cell, the code its runs came from: the sources' hash with the commits (and uncommitted changes) that
    carried it, and how many runs each; a cell whose complete runs ran different code is marked."""
    rows, mixed = [], 0
    for (env_id, exp_name), arm in sorted(arms.items()):
        runs = arm.complete + arm.incomplete
        codes = {}
        for run in runs:
            codes.setdefault(code_of(run), []).append(revision_of(run))
        parts = []
        for code, revisions in codes.items():
            counts = ", ".join(f"{r} x{revisions.count(r)}" for r in dict.fromkeys(revisions))
            parts.append(f"{code} ({len(revisions)} run{'s' * (len(revisions) > 1)}: {counts})")
        hashes = {code_of(run) for run in arm.complete}
        if len(hashes) > 1 and "no code hash" not in hashes:
            mark = "**mixed code**"
        elif len({revision_of(run) for run in arm.complete}) > 1 and "no code hash" in hashes:
            mark = "**mixed revisions** (no code hash: the code may or may not differ)"
        else:
            mark = ""
        mixed += bool(mark)
        rows.append([env_id, exp_name, str(len(runs)), "; ".join(parts), mark])
    return [
        "## Code the runs came from\n",
        "Per cell (complete and incomplete runs): `code_sha256` from config.json, the hash of the sources a run "
        'ran (the same on every machine), with the git commits that carried it ("unknown": not run from the '
        'top level of a git repository; "-dirty": an older run\'s mark of uncommitted changes) and any '
        "uncommitted changes. A marked cell averages runs of different code, or of different revisions: read "
        "it as such. A cell's seeds are independent samples, not replayable runs: the same seed replays exactly "
        "only on the machine that ran it (float differences between CPUs change the first update in the last "
        "digits and the trajectories part after it)."
        + (f" {mixed} cells are marked." if mixed else " Every cell's complete runs ran one code.")
        + "\n",
        md_table(["task", "exp_name", "runs", "code (runs: commits)", ""], rows),
    ]
