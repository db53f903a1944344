"""Dependencies point one way: no import cycle between packages, read from the source.

Two views, both acyclic: the top-level folders (stack, alerts, dashboards, runbooks, chaos, loadtests)
and every package inside them (stack, stack.serving, stack.local, stack.tools, stack.k8s, ...). A
module belongs to the nearest folder holding an __init__.py, or to its top-level folder. Imports
inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import itertools
from collections import defaultdict
from pathlib import Path

import pytest

from stack import ROOT

TOPS = ("stack", "alerts", "dashboards", "runbooks", "chaos", "loadtests", "scorecard")
Edges = dict[str, dict[str, str]]  # package -> imported package -> one file that imports it


def packages(root: Path) -> set[str]:
    found = {top for top in TOPS if (root / top).is_dir()}
    for top in found.copy():
        found |= {".".join(init.parent.relative_to(root).parts) for init in (root / top).rglob("__init__.py")}
    return found


def package_of(module: str, pkgs: set[str]) -> str | None:
    parts = module.split(".")
    return next((".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in pkgs), None)


def imported(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from stack import prom` imports the module stack.prom: count the deepest package it names.
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def import_graph(root: Path, top_level: bool = False) -> Edges:
    pkgs = packages(root)
    edges: Edges = defaultdict(dict)
    for top in TOPS:
        for path in sorted((root / top).rglob("*.py")) if (root / top).is_dir() else []:
            module = ".".join(path.relative_to(root).with_suffix("").parts)
            src = package_of(module, pkgs)
            for name in imported(ast.parse(path.read_text(), str(path))):
                dst = package_of(name, pkgs)
                if src is None or dst is None:
                    continue
                if top_level:
                    src_top, dst_top = src.split(".")[0], dst.split(".")[0]
                    if src_top != dst_top:
                        edges[src_top].setdefault(dst_top, str(path.relative_to(root)))
                elif dst != src:
                    edges[src].setdefault(dst, str(path.relative_to(root)))
    return edges


def cycles(edges: Edges) -> list[list[str]]:
    """Each cycle once, as the path of packages that closes it."""
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()

    def walk(node: str, path: list[str]) -> None:
        for nxt in sorted(edges.get(node, {})):
            if nxt in path:
                loop = [*path[path.index(nxt):], nxt]
                if frozenset(loop) not in seen:
                    seen.add(frozenset(loop))
                    found.append(loop)
            elif len(path) < 12:
                walk(nxt, [*path, nxt])

    for start in sorted(edges):
        walk(start, [start])
    return found


def explain(loop: list[str], edges: Edges) -> str:
    where = "; ".join(f"{a}->{b}: {edges[a][b]}" for a, b in itertools.pairwise(loop))
    return f"{' -> '.join(loop)}  ({where})"


@pytest.mark.parametrize("top_level", [True, False], ids=["top-level", "packages"])
def test_no_import_cycle_between_packages(top_level: bool) -> None:
    edges = import_graph(ROOT, top_level)
    assert edges, "no imports found: the graph reader is broken"
    assert [explain(c, edges) for c in cycles(edges)] == []


def test_the_intended_direction() -> None:
    """The edges that define the architecture exist, so the test above is reading real imports."""
    top = import_graph(ROOT, top_level=True)
    wanted = [("alerts", "stack"), ("dashboards", "stack"), ("chaos", "runbooks"), ("loadtests", "chaos")]
    for src, dst in wanted:
        assert dst in top[src], (src, dst)
    inner = import_graph(ROOT)
    # stack.serving is the bottom: the config reuses its arg models, and it imports nothing of ours.
    assert "stack.serving" in inner["stack"]
    assert not set(inner["stack.serving"]) - {"stack.serving.models", "stack.serving.observability"}
    for src, dst in [("stack.local", "stack"), ("stack.tools", "stack.local"), ("stack.k8s", "stack")]:
        assert dst in inner[src], (src, dst)


def test_a_back_import_is_caught(tmp_path: Path) -> None:
    """Break a copy: make stack's config import alerts, which imports stack, and a lazy one in serving."""
    for rel in ("stack/__init__.py", "stack/config.py", "stack/serving/__init__.py",
                "stack/serving/schemas.py", "stack/serving/settings.py", "stack/local/__init__.py",
                "stack/local/rollout.py",
                "alerts/__init__.py", "alerts/generate.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text((ROOT / rel).read_text())
    assert cycles(import_graph(tmp_path, top_level=True)) == []
    assert cycles(import_graph(tmp_path)) == []
    config = tmp_path / "stack" / "config.py"
    config.write_text(config.read_text() + "\nfrom alerts import generate  # noqa\n")
    (loop,) = cycles(import_graph(tmp_path, top_level=True))
    assert set(loop) == {"alerts", "stack"}
    schemas = tmp_path / "stack" / "serving" / "schemas.py"
    schemas.write_text(schemas.read_text() + "\n\ndef late():\n    from stack.local import rollout  # noqa\n")
    rollout = tmp_path / "stack" / "local" / "rollout.py"
    rollout.write_text(rollout.read_text() + "\nfrom stack.serving import schemas  # noqa\n")
    assert {"stack.local", "stack.serving"} in [set(loop) for loop in cycles(import_graph(tmp_path))]
