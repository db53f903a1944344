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
def test_experiment(live_stack: OpsConfig, session_reports: Path, name: str) -> None:
    reports = session_reports / "chaos"  # the scorecard test reads them afterwards
    done = subprocess.run([sys.executable, "-m", "chaos.run", "--short", name], cwd=ROOT, capture_output=True,
                          text=True, timeout=1200, env={**os.environ, "REPORT_DIR": str(reports)})
    out = done.stdout + done.stderr
    (report,) = reports.glob(f"chaos-{name}-2*")
    result = json.loads((report / "result.json").read_text())
    assert done.returncode == 0 and result["passed"], f"{result['problems']}\n{out[-4000:]}"
    exp = experiment.load(name)
    for alert, seconds in result["detect_s"].items():
        assert seconds is not None and seconds <= exp.detect_within_s, alert
    assert len(result["detect_s"]) == len(exp.expect)
    assert result["recover_s"] is not None and result["recover_s"] <= exp.recover_within_s
    assert result["sent"] > 0 and exp.loss.allows(result["failed"], result["sent"])
    if exp.reset_within_s is not None:  # every page that fired stopped firing within the bound
        assert set(result["reset_s"]) == set(result["detect_s"])
        assert all(s is not None and s <= exp.reset_within_s for s in result["reset_s"].values())
    assert result["loss_bound"] == exp.loss.describe() and result["hung"] >= 0
    if exp.runbook:
        assert set(result["diagnosis"]) == set(exp.runbook.finds)
        # every mitigation the plan names ran and exited 0 (metric-missing heals with its own step: none)
        assert set(result["mitigation"]) == set(exp.runbook.mitigation)
        assert all(code == 0 for code in result["mitigation"].values())
    assert (report / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    summary = (report / "summary.md").read_text()
    assert "time to detect" in summary and "requests failed / sent" in summary and "hung past" in summary
    assert f"{name}: PASSED" in done.stdout


def test_a_later_run_does_not_pass_on_an_earlier_run_s_evidence(live_stack: OpsConfig) -> None:
    """replica-crash again, with its fault made a no-op: the crash of the run above is still in the
    session's logs, dead actors and metrics. Without SINCE the diagnosis finds that old crash (the
    trap is real); with it, the engine's default, nothing is found and the run fails."""
    from chaos import engine
    from chaos.experiment import Step

    crash = experiment.load("replica-crash")
    noop = crash.model_copy(update={
        "name": "replica-crash-noop", "inject": [Step(name="sleep", args={"seconds": 2})], "expect": [],
        "runbook": crash.runbook.model_copy(update={"mitigation": []})})

    def without_since(name, ops, *, confirm, env, kinds=None, only=None):  # type: ignore[no-untyped-def]
        stale_ok = {k: v for k, v in env.items() if k != "SINCE"}
        return engine.run_runbook(name, ops, confirm=confirm, env=stale_ok, kinds=kinds, only=only)

    blind, _ = engine.run(noop, live_stack, "short", engine.Effects(runbook=without_since))
    assert any(not found.startswith("NOT FOUND") for found in blind.diagnosis.values()), blind.diagnosis
    fresh, _ = engine.run(noop, live_stack, "short")
    assert not fresh.passed
    assert all(found.startswith("NOT FOUND") for found in fresh.diagnosis.values()), fresh.diagnosis
    assert all("did not find" in p for p in fresh.problems), fresh.problems
