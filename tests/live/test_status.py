"""`make status` shows the cluster and each application and deployment with replica counts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stack import ROOT, levers
from stack.config import OpsConfig
from stack.local import instrumentation

pytestmark = pytest.mark.live


def test_status_lists_apps_and_deployments(live_stack: OpsConfig, model_id: str) -> None:
    out = subprocess.run([sys.executable, "-m", "stack.local.cluster", "status"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Active:" in out.stdout  # ray status
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith("llm ")]
    deployments = {r[2]: (r[1], r[3], r[4]) for r in rows}
    # With one_hop_llm the model's deployment serves the routes itself: no OpenAiIngress.
    one_hop = "one_hop_llm" in levers.parse(instrumentation.running_levers())
    expected = {f"LLMServer:{model_id}"} | (set() if one_hop else {"OpenAiIngress"})
    assert deployments == {name: ("RUNNING", "HEALTHY", "1/1") for name in expected}
