"""Every curl example in the README works against the live stack."""

from __future__ import annotations

import re
import subprocess

import pytest

from stack import ROOT

pytestmark = pytest.mark.live


def curl_examples() -> list[str]:
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for command in re.split(r"\n(?=\S)", block.replace("\\\n", " ")):
            if command.strip().startswith("curl "):
                commands.append(" ".join(command.split()))
    return commands


def test_readme_has_an_example_per_route() -> None:
    joined = "\n".join(curl_examples())
    for route in ("/v1/models", "/v1/chat/completions", "/v1/completions", "/embed", "/classify", "/predict"):
        assert route in joined, route


@pytest.mark.parametrize("command", curl_examples())
def test_example_works(live_stack, command: str) -> None:
    # --fail-with-body makes curl exit non-zero on any HTTP error, so a 4xx or 5xx fails the test.
    out = subprocess.run(command.replace("curl ", "curl --fail-with-body ", 1), shell=True, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"{command}\n{out.stdout}\n{out.stderr}"
    assert out.stdout.strip()
