"""`make scorecard`, short: the soak above and the chaos runs of tests/live/test_chaos.py, scored
(conftest runs this after both). Every page fired by an experiment or a named gap, every detection
within its alert's own bound, the SLO pages' reset measured, no false page."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chaos import experiment
from stack import ROOT
from stack.config import OpsConfig

pytestmark = pytest.mark.live


def test_the_scorecard(live_stack: OpsConfig, session_reports: Path) -> None:
    out = session_reports / "scorecard"
    cmd = [sys.executable, "-m", "scorecard.run", "--short", "--out", str(out)]
    chaos = session_reports / "chaos"
    if {p.parent.name.rsplit("-", 2)[0][len("chaos-"):] for p in chaos.glob("chaos-*/result.json")} >= set(
            experiment.names()):
        cmd += ["--reuse", str(chaos)]  # else it runs every experiment itself
    if (out / "soak.json").exists():
        cmd += ["--soak-from", str(out / "soak.json")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3600, env=dict(os.environ))
    log = (done.stdout + done.stderr)[-4000:]
    card = json.loads((out / "scorecard.json").read_text())
    assert card["recall"]["unexplained"] == [], log
    assert card["recall"]["covered"] + len(card["recall"]["gaps"]) == card["recall"]["page_identities"]
    fired = [d for d in card["detection"] if d["detect_s"] is not None]
    over = [d for d in fired if d["verdict"] != "within"]
    assert fired and not over, over
    assert all(d["bound"]["total_s"] is not None for d in fired)
    by_alert = {d["alert"] for d in fired}
    assert {"ServeErrorBudgetBurn", "ServeLatencyBudgetBurn", "ServeReplicaStalled",
            "ServeReplicaUnhealthy", "RayMetricMissing"} <= by_alert
    slo = [r for r in card["reset"] if r["experiment"] == "slo-burn"]
    assert len(slo) == 2 and all(r["source"] == "experiment" and r["reset_s"] is not None for r in slo), slo
    assert card["precision"]["false_pages"] == [] and card["precision"]["error"] is None
    assert card["half_alive"]["watched"] and card["half_alive"]["unwatched"], card["half_alive"]
    text = (out / "scorecard.md").read_text()
    for section in ("## Recall", "## Detection", "## Reset", "## Precision", "## Leak watch", "## Loss"):
        assert section in text
    assert (out / "scorecard.png").read_bytes()[:4] == b"\x89PNG"
    assert done.returncode == 0 and card["exit_code"] == 0, card["failures"]
