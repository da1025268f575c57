"""Every relative link in README.md, ARCHITECTURE.md and docs/*.md reaches a file that exists and,
where it names one, a heading of that file: the evidence moves between pages, and a reader who
follows a figure's link must land on it.
"""

import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@cache
def anchors(page: Path) -> frozenset[str]:
    """The anchors of a page's headings (fenced code is not a heading); read once per page."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return frozenset(anchor(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line))


def test_anchor_follows_github() -> None:
    assert anchor("Does it pay? (`cisctool compare`)") == "does-it-pay-cisctool-compare"
    assert anchor("Decoder stride 2: for classes thinner than 4 px") == "decoder-stride-2-for-classes-thinner-than-4-px"
    assert anchor("What happens when…") == "what-happens-when"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):
            continue  # an absolute URL: not this repository's to check
        path_part, _, fragment = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        if not linked.exists():
            broken.append(f"{target}: no file {linked.relative_to(ROOT)}")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{target}: no heading #{fragment} in {linked.relative_to(ROOT)}")
    assert not broken, broken


def test_readme_is_read_in_ten_minutes() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 450, f"README.md has {lines} lines; the long material belongs in docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_no_design_section_references(page: Path) -> None:
    """A section sign and a number point into a design document that is not in the repository."""
    cited = [line for line in page.read_text(encoding="utf-8").splitlines() if re.search("\u00a7\\s*\\d", line)]
    assert not cited, cited
