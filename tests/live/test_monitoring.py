"""Prometheus scrapes Ray and our metrics; an alert travels Alertmanager -> the local receiver."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys

import httpx
import pytest

from stack import ROOT, prom
from stack.config import OpsConfig
from stack.local import monitoring
from stack.polling import eventually

pytestmark = pytest.mark.live


def query(ops: OpsConfig, promql: str) -> list[dict]:
    return prom.api(ops, "/api/v1/query", query=promql)["result"]


def test_prometheus_scrapes_ray_on_loopback(live_stack: OpsConfig) -> None:
    up = eventually(lambda: query(live_stack, 'up{job="ray"} == 1'))
    assert up, query(live_stack, 'up{job="ray"}')
    for series in query(live_stack, 'up{job="ray"}'):
        assert series["metric"]["instance"].startswith("127.0.0.1:")
        assert series["value"][1] == "1"


def test_serve_and_serveops_metrics_reach_prometheus(live_stack: OpsConfig, http: httpx.Client) -> None:
    assert http.post("/embed", json={"text": "to prometheus"}).status_code == 200
    healthy = 'ray_serve_deployment_replica_healthy{deployment="Embedder"}'
    assert eventually(lambda: query(live_stack, healthy))
    assert eventually(lambda: query(live_stack, 'ray_serveops_requests_total{route="/embed"}'))


def test_alert_reaches_the_receiver(live_stack: OpsConfig) -> None:
    name = f"ServeopsPagingPathTest{secrets.token_hex(3)}"
    alert = [{"labels": {"alertname": name, "severity": "info"},
              "annotations": {"summary": "paging path test"}}]
    am = live_stack.listen.url(live_stack.listen.alertmanager_port)
    assert httpx.post(f"{am}/api/v2/alerts", json=alert, timeout=10).status_code == 200

    def received() -> bool:
        if not monitoring.NOTIFICATIONS.exists():
            return False
        for line in monitoring.NOTIFICATIONS.read_text().splitlines():
            if any(a["labels"]["alertname"] == name for a in json.loads(line).get("alerts", [])):
                return True
        return False

    assert eventually(received, timeout_s=60)


def test_status_lists_firing_alerts(live_stack: OpsConfig) -> None:
    out = subprocess.run([sys.executable, "-m", "stack.local.cluster", "status"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert "firing alerts:" in out.stdout
