"""One generation pipeline: `make check` passes on the tree and fails on a hand-edited copy.

The drift check itself (stack/artifacts.py) is unit-tested on temporary files: an edited, a missing
and a stray artifact are each named.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from stack import ROOT, artifacts

MAKE = shutil.which("make")


def make_check(root: Path) -> subprocess.CompletedProcess[str]:
    # -o setup: the venv is this checkout's; a copy would otherwise install its own.
    return subprocess.run([MAKE or "make", "-s", "-o", "setup", "check", f"PY={ROOT / '.venv/bin/python'}"],
                          cwd=root, capture_output=True, text=True, timeout=600)


def test_nothing_drifted() -> None:
    out = make_check(ROOT)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


def test_make_check_fails_on_a_hand_edited_copy(tmp_path: Path) -> None:
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split("\0")
    for rel in filter(None, tracked):
        if (ROOT / rel).is_file():
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, tmp_path / rel)
    board = tmp_path / artifacts.DASHBOARDS_DIR.relative_to(ROOT) / "serveops-serve.json"
    board.write_text(board.read_text().replace('"Requests per second by route"', '"edited by hand"', 1))
    assert "edited by hand" in board.read_text()
    out = make_check(tmp_path)
    assert out.returncode != 0
    assert "dashboards/json/serveops-serve.json drifted" in out.stderr, out.stderr[-2000:]


def test_check_names_an_edited_a_missing_and_a_stray_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(artifacts, "ROOT", tmp_path)
    owned = tmp_path / "out"
    outputs = {owned / "a.yaml": "a: 1\n", owned / "b.yaml": "b: 2\n", tmp_path / "loose.yaml": "c: 3\n"}
    assert artifacts.emit("gen", lambda: outputs, owned=(owned,), argv=[]) == 0
    assert artifacts.emit("gen", lambda: outputs, owned=(owned,), argv=["--check"]) == 0
    (owned / "a.yaml").write_text("a: 2\n")
    (owned / "b.yaml").unlink()
    (owned / "stray.yaml").write_text("left over\n")
    capsys.readouterr()
    assert artifacts.emit("gen", lambda: outputs, owned=(owned,), argv=["--check"]) == 1
    err = capsys.readouterr().err
    for name in ("out/a.yaml", "out/b.yaml", "out/stray.yaml"):
        assert f"gen: {name} drifted" in err
    assert "loose.yaml" not in err
    # Writing repairs all three: the stray file goes, since it would still be applied or loaded.
    assert artifacts.emit("gen", lambda: outputs, owned=(owned,), argv=[]) == 0
    assert sorted(p.name for p in owned.iterdir()) == ["a.yaml", "b.yaml"]
    assert (owned / "a.yaml").read_text() == "a: 1\n"


def test_every_generated_yaml_carries_the_one_header() -> None:
    generated = [*artifacts.SERVE_DIR.glob("*.yaml"), artifacts.RULES_FILE,
                 *artifacts.PROVISIONING_DIR.glob("*.yaml"), *artifacts.MANIFESTS_DIR.glob("*.yaml")]
    assert len(generated) >= 11
    for path in generated:
        first = path.read_text().splitlines()[0]
        assert first.startswith("# Generated from stack/ops.yaml by `make generate` ("), path
