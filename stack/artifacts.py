"""Generated artifacts: where each lives, the one header they carry, and the one drift check.

Every generator renders {path: text} from the ops config and hands it to `emit`, which writes the
files or, with --check, names each one that differs from what it would write. `make generate` runs
the generators in dependency order (stack/serve -> rules -> dashboards -> manifests); `make check`
runs them with --check. The manifests embed the rule file and the dashboard JSON as committed, so a
drift in either shows up once, at its own generator.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from stack import ROOT

SERVE_DIR = ROOT / "stack" / "serve"
RULES_FILE = ROOT / "alerts" / "serveops.rules.yaml"
DASHBOARDS_DIR = ROOT / "dashboards" / "json"
PROVISIONING_DIR = ROOT / "dashboards" / "provisioning"
MANIFESTS_DIR = ROOT / "stack" / "k8s" / "manifests"


def header(generator: str) -> str:
    """The first lines of every generated YAML file (JSON has no comments: Grafana's stays bare)."""
    return f"# Generated from stack/ops.yaml by `make generate` ({generator}). Do not edit.\n"


def strip_header(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if not line.startswith("# Generated "))


def drifted(outputs: Mapping[Path, str], owned: Path | None = None) -> list[Path]:
    """Files that differ from what the generator would write; under `owned`, also files it would not."""
    stale = [p for p, text in outputs.items() if not p.exists() or p.read_text() != text]
    if owned is not None and owned.is_dir():
        stale += sorted(p for p in owned.iterdir() if p.is_file() and p not in outputs)
    return stale


def write(outputs: Mapping[Path, str], owned: Path | None = None) -> None:
    """Write every output; under `owned`, remove what the generator no longer produces."""
    for path in drifted(outputs, owned):
        if path in outputs:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(outputs[path])
        else:
            path.unlink()


def emit(name: str, render: Callable[[], Mapping[Path, str]], owned: tuple[Path, ...] = (),
         argv: list[str] | None = None) -> int:
    """A generator's command line: write its outputs, or with --check exit 1 naming each drifted file."""
    parser = argparse.ArgumentParser(prog=name, description=f"{name}: artifacts from stack/ops.yaml")
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed artifact drifted")
    args = parser.parse_args(argv)
    outputs = render()
    groups = [(d, {p: t for p, t in outputs.items() if p.parent == d}) for d in owned]
    loose = {p: t for p, t in outputs.items() if p.parent not in owned}
    stale = drifted(loose) + [p for d, outs in groups for p in drifted(outs, d)]
    if args.check:
        for path in stale:
            print(f"{name}: {path.relative_to(ROOT)} drifted from its generator; run `make generate`",
                  file=sys.stderr)
        return 1 if stale else 0
    write(loose)
    for d, outs in groups:
        write(outs, d)
    print(f"{name}: {len(outputs)} files, {len(stale)} changed")
    return 0
