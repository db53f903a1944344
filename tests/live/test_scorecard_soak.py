"""The scorecard's soak, short, on the clean stack before any fault (conftest runs it with the clean-load
checks): every shape runs, and no page fires. A page here is a false page: fix its rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stack import ROOT
from stack.config import OpsConfig

pytestmark = pytest.mark.live


def test_a_clean_soak_pages_nobody(live_stack: OpsConfig, session_reports: Path) -> None:
    out = session_reports / "scorecard"
    cmd = [sys.executable, "-m", "scorecard.run", "--short", "--soak-only", "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1500, env=dict(os.environ))
    soak = json.loads((out / "soak.json").read_text())
    precision, leak = soak["precision"], soak["leak"]
    log = (done.stdout + done.stderr)[-3000:]
    assert [s["shape"] for s in precision["shapes"]] == ["step", "spike", "oscillation"], log
    # 0: the shape's SLO gate passed, 1: it did not (30 s is a few dozen requests a route: one slow
    # answer breaks a 99% objective); 2: the run itself failed.
    assert all(s["exit_code"] in (0, 1) for s in precision["shapes"]), log
    assert precision["error"] is None and precision["false_pages"] == [], precision["false_pages"]
    assert precision["end"] > precision["start"] and precision["grace_s"] > 0
    assert leak["error"] is None and leak["deployments"], leak  # RSS was read for every deployment
    assert {(d["application"], d["deployment"]) for d in leak["deployments"]} >= {
        ("embed", "Embedder"), ("classify", "Preprocessor")}
    assert done.returncode == 0, log
