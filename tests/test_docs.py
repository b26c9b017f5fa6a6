"""The README is a front door and docs/ holds the long form: every relative link in them resolves (the file exists
and, for a link to a heading, the heading does), and the README stays short enough to read in one sitting."""

import re
from pathlib import Path

import pytest

from conftest import ROOT

README_MAX_CHARACTERS = 25_000
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(markdown: Path) -> set[str]:
    """GitHub's anchors for a markdown file's headings: lower case, punctuation but - and _ dropped, spaces to -,
    repeats numbered -1, -2, ..."""
    seen, found = {}, set()
    in_code = False
    for line in markdown.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        match = re.match(r"(#{1,6}) (.*)", line)
        if match and not in_code:
            slug = re.sub(r"[^\w\- ]", "", match.group(2).strip().lower()).replace(" ", "-")
            found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return found


def relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(page.read_text()) if not re.match(r"[a-z]+:", t)]


def test_anchor_slugs_follow_github():
    assert {"results-at-a-glance", "two-commands", "map-of-the-repository"} <= anchors(ROOT / "README.md")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, broken


def test_the_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text) <= README_MAX_CHARACTERS
    for page in PAGES[1:]:  # every docs page is reachable from the README
        assert f"docs/{page.name}" in text, page.name
