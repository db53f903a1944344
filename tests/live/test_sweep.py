"""`make loadtest SHAPE=sweep SWEEP=short`: three Poisson rates per family against the live stack, the
knee, the server's own figures per rate, the advice with its reasons, and the plots."""

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
FAMILIES = ("llm", "embed")


@pytest.fixture(scope="module")
def sweep(live_stack: OpsConfig, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("sweep")
    env = {**os.environ, "REPORT_DIR": str(out), "SHAPE": "sweep", "SWEEP": "short",
           "FAMILIES": ",".join(FAMILIES)}
    result = subprocess.run([sys.executable, "-m", "loadtests.run"], cwd=ROOT, capture_output=True, text=True,
                            timeout=900, env=env)
    # 0: every family found a knee; 1: one found none. Either is a verdict; 2 or a crash is not.
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return out, result.stdout


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_runs_three_rates_with_the_servers_figures(sweep: tuple[Path, str], family: str) -> None:
    out, stdout = sweep
    doc = json.loads((out / family / "sweep.json").read_text())
    assert len(doc["rates_per_s"]) == 3 and doc["rates_per_s"] == sorted(doc["rates_per_s"])
    steps = doc["steps"]
    assert steps and steps[0]["arrivals"] > 0
    # The lowest rate is a fraction of what a replica serves here: a healthy stack meets its SLO there.
    assert steps[0]["verdict"]["passed"], steps[0]
    for step in steps:
        assert step["server"]["deployment_replicas_max"] >= 1, step["server"]  # from Prometheus, not made up
        assert step["e2e_ms"]["p99"] >= step["e2e_ms"]["p50"] > 0
    if family == "llm":
        assert steps[0]["ttft_ms"]["p50"] > 0 and steps[0]["tpot_ms"]["p50"] > 0
    for png in ("latency.png", "goodput.png"):
        assert (out / family / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert f"sweep {family}" in stdout


@pytest.mark.parametrize("family", FAMILIES)
def test_the_knee_and_the_advice_come_with_their_reasons(sweep: tuple[Path, str], family: str) -> None:
    out, _ = sweep
    doc = json.loads((out / family / "sweep.json").read_text())
    knee, advice = doc["knee"], doc["advice"]
    assert knee["rate_per_s"] in doc["rates_per_s"]
    assert advice["per_replica_rate_per_s"] > 0 and advice["target_ongoing_requests"] >= 1
    assert advice["max_replicas"] >= 1 and advice["replicas_known"]
    assert len(advice["reasons"]) >= 3 and any("Little's law" in r for r in advice["reasons"])
    md = (out / family / "sweep.md").read_text()
    assert "knee" in md and "latency.png" in md and "goodput.png" in md
