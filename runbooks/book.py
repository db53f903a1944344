"""Parse a runbook: its sections and its named steps.

A step is a fenced block whose info string is `sh <kind>:<name>`, e.g. ```` ```sh diagnose:replicas ````.
Kinds: diagnose (read-only), mitigate (changes the stack; runs only when confirmed), and their
Kubernetes forms k8s-diagnose and k8s-mitigate (run only where kubectl is installed).
The paragraph just above a block says why the step is there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from stack import ROOT

RUNBOOKS_DIR = ROOT / "runbooks"
KINDS = ("diagnose", "mitigate", "k8s-diagnose", "k8s-mitigate")
SECTIONS = ("Meaning", "Impact", "Diagnosis", "Mitigation")
_BLOCK = re.compile(r"^```sh (?P<kind>[\w-]+):(?P<name>[\w-]+)[ \t]*\n(?P<code>.*?)^```[ \t]*$", re.M | re.S)
_SECTION = re.compile(r"^## (.+?)\s*$", re.M)


@dataclass(frozen=True)
class Step:
    kind: str
    name: str
    code: str
    why: str

    @property
    def mutates(self) -> bool:
        return self.kind.endswith("mitigate")

    @property
    def kubernetes(self) -> bool:
        return self.kind.startswith("k8s-")


@dataclass(frozen=True)
class Runbook:
    name: str
    title: str
    sections: dict[str, str]
    steps: list[Step]

    def step(self, name: str) -> Step:
        found = [s for s in self.steps if s.name == name]
        if not found:
            raise KeyError(f"runbook {self.name} has no step {name!r}; steps: {[s.name for s in self.steps]}")
        return found[0]


class RunbookError(ValueError):
    pass


def _why(text_before: str) -> str:
    paragraphs = [p.strip() for p in text_before.strip().split("\n\n") if p.strip()]
    last = paragraphs[-1] if paragraphs else ""
    return "" if last.startswith(("#", "```")) else " ".join(last.split())


def parse(path: Path) -> Runbook:
    text = path.read_text()
    title = text.splitlines()[0].lstrip("# ").strip() if text.startswith("# ") else path.stem
    heads = list(_SECTION.finditer(text))
    sections = {m.group(1): text[m.end():(heads[i + 1].start() if i + 1 < len(heads) else len(text))].strip()
                for i, m in enumerate(heads)}
    steps = []
    for m in _BLOCK.finditer(text):
        if m.group("kind") not in KINDS:
            raise RunbookError(f"{path.name}: step {m.group('name')!r} has kind {m.group('kind')!r}; "
                               f"kinds are {', '.join(KINDS)}")
        steps.append(Step(m.group("kind"), m.group("name"), m.group("code").strip(), _why(text[:m.start()])))
    names = [s.name for s in steps]
    if len(names) != len(set(names)):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise RunbookError(f"{path.name}: step names repeat: {repeated}")
    return Runbook(path.stem, title, sections, steps)


def load(name: str) -> Runbook:
    path = RUNBOOKS_DIR / f"{name}.md"
    if not path.exists():
        raise RunbookError(f"no runbook {name!r}; have: {', '.join(names())}")
    return parse(path)


def names() -> list[str]:
    return sorted(p.stem for p in RUNBOOKS_DIR.glob("*.md") if p.stem != "README")
