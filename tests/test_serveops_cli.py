"""The read-only `serveops` subcommands the runbooks' diagnosis reads: what they print, on canned answers."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from stack.config import OpsConfig, load
from stack.tools import cli


@pytest.fixture(scope="module")
def ops() -> OpsConfig:
    return load()


def deployment(status: str, message: str = "", running: int = 1, target: int = 1) -> dict[str, Any]:
    return {"status": status, "message": message, "target_num_replicas": target,
            "replicas": [{"state": "RUNNING"}] * running,
            "deployment_config": {"max_ongoing_requests": 8, "autoscaling_config": {"min_replicas": 1,
                                                                                    "max_replicas": 4}}}


def test_deployments_names_the_failed_one_and_serves_message(ops: OpsConfig, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    traceback = "\n".join(f"  line {i}" for i in range(30)) + "\nValueError: model does not fit"
    failed = deployment("DEPLOY_FAILED", f"The deployment failed to start 3 times.\n{traceback}", running=0)
    apps = {"embed": {"status": "RUNNING", "deployments": {"Embedder": deployment("HEALTHY")}},
            "llm": {"status": "DEPLOY_FAILED", "deployments": {"LLMServer:m": failed}},
            "broken": {"status": "DEPLOY_FAILED", "message": "ImportError: no module x", "deployments": {}}}
    monkeypatch.setattr(cli.serve_deploy, "details", lambda _: {"applications": apps})
    assert cli.deployments(ops, None, config=True) == 0
    out = capsys.readouterr().out
    assert "LLMServer:m DEPLOY_FAILED 0/1 running" in out
    assert "ValueError: model does not fit" in out and "line 0\n" not in out  # the message's tail
    assert "ImportError: no module x" in out
    assert "max_ongoing_requests=8 min_replicas=1 max_replicas=4" in out
    assert out.strip().endswith("found: 3 not HEALTHY: broken DEPLOY_FAILED, llm DEPLOY_FAILED, "
                                "llm/LLMServer:m DEPLOY_FAILED")


def test_deployments_all_healthy(ops: OpsConfig, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    apps = {"embed": {"status": "RUNNING", "deployments": {"Embedder": deployment("HEALTHY")}}}
    monkeypatch.setattr(cli.serve_deploy, "details", lambda _: {"applications": apps})
    cli.deployments(ops, "embed")
    assert capsys.readouterr().out.strip().endswith("found: every deployment HEALTHY")


def test_targets_counts_the_down_ones(ops: OpsConfig, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    active = [{"labels": {"job": "ray", "instance": "127.0.0.1:8080"}, "scrapeUrl": "http://127.0.0.1:8080/metrics",
               "health": "down", "lastError": "connection refused"},
              {"labels": {"job": "prometheus", "instance": "127.0.0.1:9090"},
               "scrapeUrl": "http://127.0.0.1:9090/metrics", "health": "up", "lastError": ""}]
    monkeypatch.setattr(cli.prom, "api", lambda *_, **__: {"activeTargets": active})
    cli.targets(ops)
    out = capsys.readouterr().out
    assert "job=ray http://127.0.0.1:8080/metrics down  connection refused" in out
    assert "found: 2 target(s) in jobs prometheus, ray; 1 down" in out


def test_deaths_shows_memory_kills(ops: OpsConfig, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    oom = ("1 worker(s) were killed due to the node running low on memory. Memory on the node "
           "(IP: 10.0.0.1) was 22.55GB used / 23.54GB limit")
    dead = [SimpleNamespace(class_name="ServeReplica:embed:Embedder", pid=1,
                            death_cause={"actor_died_error_context": {"error_message": oom}}),
            SimpleNamespace(class_name="ServeReplica:predict:TenantModels", pid=2,
                            death_cause={"actor_died_error_context": {"error_message": "ray.kill"}})]
    monkeypatch.setattr("ray.util.state.list_actors", lambda **_: dead)
    cli.deaths(ops, last=1)
    out = capsys.readouterr().out
    assert "Embedder pid 1 (memory): 1 worker(s) were killed due to the node running low" in out
    assert "found: 2 dead actor(s) in this Ray session, 1 killed for memory, 0 crashed" in out
