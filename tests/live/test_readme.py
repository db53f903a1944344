"""Every curl example in the README and in docs/ works against the live stack.

The examples live where the documentation puts them (most in docs/api.md); this follows them there:
every `sh` block of README.md and docs/*.md is read, and every curl command in it runs.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from stack import ROOT

pytestmark = pytest.mark.live

ROUTES = ("/v1/models", "/v1/chat/completions", "/v1/completions", "/embed", "/classify", "/predict")


def documents() -> list[Path]:
    """The README, then every page under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def curl_commands(text: str) -> list[str]:
    """The curl commands in a Markdown text's `sh` blocks, continuation lines joined, one per command."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for command in re.split(r"\n(?=\S)", block.replace("\\\n", " ")):
            if command.strip().startswith("curl "):
                commands.append(" ".join(command.split()))
    return commands


def curl_examples() -> list[tuple[str, str]]:
    """(document, command) for every curl example in the README and docs/."""
    return [(str(path.relative_to(ROOT)), command)
            for path in documents() for command in curl_commands(path.read_text())]


def test_docs_have_an_example_per_route() -> None:
    joined = "\n".join(command for _, command in curl_examples())
    for route in ROUTES:
        assert route in joined, route


@pytest.mark.parametrize(("document", "command"), curl_examples(),
                         ids=[f"{doc}:{i}" for i, (doc, _) in enumerate(curl_examples())])
def test_example_works(live_stack, document: str, command: str) -> None:
    # --fail-with-body makes curl exit non-zero on any HTTP error, so a 4xx or 5xx fails the test.
    out = subprocess.run(command.replace("curl ", "curl --fail-with-body ", 1), shell=True, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"{document}: {command}\n{out.stdout}\n{out.stderr}"
    assert out.stdout.strip()
