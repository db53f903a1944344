"""The documentation holds together: every relative link resolves, every anchor names a heading.

Checked: README.md, docs/*.md and every folder's README.md. Links inside code (fenced blocks and
inline code spans) are not links, and are skipped; so are absolute URLs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from stack import ROOT

README_MAX_LINES = 200
# Folders that must say what lives there.
FOLDERS = ("stack", "stack/serving", "stack/local", "stack/tools", "stack/k8s", "alerts", "dashboards",
           "runbooks", "chaos", "loadtests", "scorecard", "tests", "docs")
SKIP_DIRS = {".git", ".venv", ".models", ".run", "reports", "node_modules", "__pycache__"}

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", flags=re.M | re.S)
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", flags=re.S)
# [text](target) and ![alt](target), with an optional "title"; [ref]: target definitions.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", flags=re.M)
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", flags=re.M)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", flags=re.I)


def documents(root: Path = ROOT) -> list[Path]:
    """README.md, docs/*.md and every folder's README.md."""
    folder_readmes = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")]
        if "README.md" in files and Path(folder) != root:
            folder_readmes.append(Path(folder) / "README.md")
    return sorted({root / "README.md", *(root / "docs").glob("*.md"), *folder_readmes})


def strip_code(text: str) -> str:
    """The text without fenced blocks and inline code spans, which hold no links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lowercased, punctuation dropped except
    hyphens (and underscores, which GitHub keeps), each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link renders as its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a Markdown file; repeated headings get -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text())):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    text = strip_code(path.read_text())
    return INLINE_LINK.findall(text) + REF_DEFINITION.findall(text)


def broken_links(path: Path) -> list[str]:
    """Each relative link in `path` whose file, or whose #anchor in that file, does not exist."""
    problems = []
    for target in links(path):
        if not target or EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{target}: no such file {dest}")
        elif anchor and dest.suffix == ".md" and unquote(anchor).lower() not in anchors(dest):
            problems.append(f"{target}: no heading #{anchor} in {dest.name}")
        elif anchor and dest.suffix != ".md":
            problems.append(f"{target}: an anchor into a file that is not Markdown")
    return problems


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(path: Path) -> None:
    problems = broken_links(path)
    assert not problems, f"{path.relative_to(ROOT)}:\n" + "\n".join(problems)


def test_readme_is_short() -> None:
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines, at most {README_MAX_LINES}"


@pytest.mark.parametrize("folder", FOLDERS)
def test_folder_has_a_readme(folder: str) -> None:
    readme = ROOT / folder / "README.md"
    assert readme.is_file(), f"{folder}/ has no README.md saying what lives there"
    assert readme.read_text().strip(), f"{folder}/README.md is empty"


def test_slugs_follow_github() -> None:
    assert slug("On the 2-core, 24 GB box") == "on-the-2-core-24-gb-box"
    assert slug("From the local stack to a cluster") == "from-the-local-stack-to-a-cluster"
    assert slug("`make loadtest` and the [SLO gate](x.md)") == "make-loadtest-and-the-slo-gate"
    assert slug("Chaos & runbooks") == "chaos--runbooks"
    assert slug("max_batch_size?") == "max_batch_size"


def test_a_broken_link_is_caught(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\n\n## Some section\n")
    page = tmp_path / "README.md"
    page.write_text("# Page\n\n[ok](docs/a.md#some-section) [gone](docs/b.md) [bad](docs/a.md#nothing) "
                    "[self](#page) [self-bad](#nope) `[code](docs/c.md)` [web](https://example.com/x)\n"
                    "```\n[fenced](docs/d.md)\n```\n")
    problems = broken_links(page)
    assert [p.split(":")[0] for p in problems] == ["docs/b.md", "docs/a.md#nothing", "#nope"], problems
