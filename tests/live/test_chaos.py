"""Every chaos experiment in short mode against the live stack: the alert fires, the runbook's
diagnosis finds the cause, its mitigation recovers, and the verdict passes. Runs last (conftest)."""

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
ORDER = experiment.in_run_order()  # make chaos's order: the memory surge last


def test_run_order_places_every_experiment() -> None:
    assert sorted(experiment.RUN_ORDER) == experiment.names()


@pytest.mark.parametrize("name", ORDER)
def test_experiment(live_stack: OpsConfig, tmp_path: Path, name: str) -> None:
    done = subprocess.run([sys.executable, "-m", "chaos.run", "--short", name], cwd=ROOT, capture_output=True,
                          text=True, timeout=1200, env={**os.environ, "REPORT_DIR": str(tmp_path)})
    out = done.stdout + done.stderr
    (report,) = tmp_path.glob(f"chaos-{name}-*")
    result = json.loads((report / "result.json").read_text())
    assert done.returncode == 0 and result["passed"], f"{result['problems']}\n{out[-4000:]}"
    exp = experiment.load(name)
    for alert, seconds in result["detect_s"].items():
        assert seconds is not None and seconds <= exp.detect_within_s, alert
    assert len(result["detect_s"]) == len(exp.expect)
    assert result["recover_s"] is not None and result["recover_s"] <= exp.recover_within_s
    assert result["sent"] > 0
    if exp.runbook:
        assert set(result["diagnosis"]) == set(exp.runbook.finds)
        assert all(code == 0 for code in result["mitigation"].values()) and result["mitigation"]
    assert (report / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    summary = (report / "summary.md").read_text()
    assert "time to detect" in summary and "requests failed / sent" in summary
    assert f"{name}: PASSED" in done.stdout
