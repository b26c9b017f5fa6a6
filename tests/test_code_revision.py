"""config.json records which code made a run: the clean commit, the uncommitted changes, and a hash of the sources."""

import json
import shutil
import subprocess
import sys

from conftest import ROOT


def revision(folder):
    """training_run.code_revision() for ppo_vanilla.py as it runs from `folder` (what run_metadata writes into config.json)."""
    # importing the arm imports its modules (training_run among them), as a run does before writing its metadata
    code = (
        "import json, os, ppo_vanilla, training_run; "
        "print(json.dumps(training_run.code_revision(os.path.abspath('ppo_vanilla.py'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def git(folder, *command):
    return subprocess.run(
        ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t", *command],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def copy_sources(folder):
    folder.mkdir(parents=True)
    for path in ROOT.glob("*.py"):  # the arm and any module of the project it imports
        shutil.copy(path, folder)


def test_clean_dirty_and_nested_trees(tmp_path):
    repo = tmp_path / "repo"
    copy_sources(repo)
    (repo / "notes.txt").write_text("untracked, not a source: no change to the code")
    git(repo, "init", "-q")
    git(repo, "add", "*.py")
    git(repo, "commit", "-qm", "scripts")
    clean = revision(repo)
    assert clean["git_revision"] == git(repo, "rev-parse", "HEAD") and clean["git_changes"] is None
    assert {"ppo_vanilla.py", "training_run.py"} <= set(clean["code_files"]) and len(clean["code_sha256"]) == 64

    script = repo / "ppo_vanilla.py"
    script.write_text(script.read_text() + "\n# a local change\n")
    dirty = revision(repo)
    assert dirty["git_revision"] == clean["git_revision"]  # the clean commit, not "<commit>-dirty"
    assert dirty["git_changes"]["files"] == ["ppo_vanilla.py"] and len(dirty["git_changes"]["diff_sha256"]) == 64
    assert dirty["code_sha256"] != clean["code_sha256"]
    script.write_text(script.read_text() + "# another\n")
    assert revision(repo)["git_changes"]["diff_sha256"] != dirty["git_changes"]["diff_sha256"]

    # the same scripts as a sub-folder of another repository record no commit of that repository, only the hash
    outer = tmp_path / "outer"
    copy_sources(outer / "scripts")
    git(outer, "init", "-q")
    git(outer, "add", ".")
    git(outer, "commit", "-qm", "vendored")
    nested = revision(outer / "scripts")
    assert nested["git_revision"] == "unknown" and nested["git_changes"] is None
    assert nested["code_sha256"] == clean["code_sha256"]  # same files, same hash, wherever they lie

    # no git at all: the hash alone
    bare = tmp_path / "bare"
    copy_sources(bare)
    assert revision(bare) == {**nested, "code_sha256": clean["code_sha256"]}
