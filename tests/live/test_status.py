"""`make status` shows the cluster and each application and deployment with replica counts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stack import ROOT
from stack.config import OpsConfig

pytestmark = pytest.mark.live


def test_status_lists_apps_and_deployments(live_stack: OpsConfig, model_id: str) -> None:
    out = subprocess.run([sys.executable, "-m", "stack.local.cluster", "status"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Active:" in out.stdout  # ray status
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith("llm ")]
    deployments = {r[2]: (r[1], r[3], r[4]) for r in rows}
    assert deployments[f"LLMServer:{model_id}"] == ("RUNNING", "HEALTHY", "1/1")
    assert deployments["OpenAiIngress"] == ("RUNNING", "HEALTHY", "1/1")
