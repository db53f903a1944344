"""Prometheus, Alertmanager and the local webhook receiver, on loopback beside the Ray head.

Prometheus scrapes Ray through the service-discovery file Ray writes, plus our exporters'
target files, and loads the rules under alerts/. Alertmanager routes every alert to the receiver,
which records notifications in .run/alerts/notifications.jsonl. Configs are generated from the
ops config into .run/ at `make up` (they hold absolute paths, so they are not committed).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from stack import ROOT
from stack.config import OpsConfig
from stack.local import daemons, second_node

RUN_DIR = daemons.RUN_DIR
PROM_DIR = RUN_DIR / "prometheus"
TARGETS_DIR = PROM_DIR / "targets"
AM_DIR = RUN_DIR / "alertmanager"
NOTIFICATIONS = RUN_DIR / "alerts" / "notifications.jsonl"
RAY_SD_FILE = Path("/tmp/ray/prom_metrics_service_discovery.json")
RULE_FILES = ROOT / "alerts" / "*.rules.yaml"


def prometheus_config(ops: OpsConfig) -> dict[str, Any]:
    listen, obs = ops.listen, ops.observability
    return {
        "global": {"scrape_interval": f"{obs.scrape_interval_s}s",
                   "evaluation_interval": f"{obs.evaluation_interval_s}s"},
        "rule_files": [str(RULE_FILES)],
        "alerting": {"alertmanagers": [{"static_configs": [
            {"targets": [f"{listen.host}:{listen.alertmanager_port}"]}]}]},
        "scrape_configs": [
            {
                "job_name": "ray",
                # Re-read often: Ray rewrites the file when a node joins, and file watches can miss it.
                "file_sd_configs": [{"files": [str(RAY_SD_FILE)], "refresh_interval": "10s"}],
                # Ray lists the node's external address; every port it names also answers on loopback,
                # and the head keeps its own traffic there. A second node (NODES=2) keeps its address.
                "relabel_configs": [
                    {"source_labels": ["__address__"], "regex": f"{second_node.NODE_IP_REGEX}:\\d+",
                     "target_label": "__tmp_second_node", "replacement": "1"},
                    {"source_labels": ["__tmp_second_node", "__address__"], "regex": r";[^:]+:(\d+)",
                     "target_label": "__address__", "replacement": f"{listen.host}:$1"}],
            },
            {"job_name": "serveops", "file_sd_configs": [{"files": [str(TARGETS_DIR / "*.json")]}]},
            {"job_name": "prometheus",
             "static_configs": [{"targets": [f"{listen.host}:{listen.prometheus_port}"]}]},
            {"job_name": "alertmanager",
             "static_configs": [{"targets": [f"{listen.host}:{listen.alertmanager_port}"]}]},
        ],
    }


def alertmanager_config(ops: OpsConfig) -> dict[str, Any]:
    receiver = f"http://{ops.listen.host}:{ops.listen.alert_receiver_port}/alerts"
    return {
        "route": {"receiver": "local-webhook", "group_by": ["alertname", "severity"],
                  "group_wait": "5s", "group_interval": "30s", "repeat_interval": "4h"},
        "receivers": [{"name": "local-webhook",
                       "webhook_configs": [{"url": receiver, "send_resolved": True}]}],
    }


def register_target(name: str, address: str, labels: dict[str, str] | None = None) -> None:
    """Have Prometheus scrape an exporter of ours (file_sd picks the file up without a reload)."""
    TARGETS_DIR.mkdir(parents=True, exist_ok=True)
    target = [{"targets": [address], "labels": {"exporter": name, **(labels or {})}}]
    (TARGETS_DIR / f"{name}.json").write_text(json.dumps(target) + "\n")


def wait_ready(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout_s:.0f}s")


def start(ops: OpsConfig) -> None:
    listen = ops.listen
    for d in (PROM_DIR / "data", AM_DIR / "data", TARGETS_DIR, NOTIFICATIONS.parent):
        d.mkdir(parents=True, exist_ok=True)
    (PROM_DIR / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config(ops), sort_keys=False))
    (AM_DIR / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager_config(ops), sort_keys=False))
    daemons.start("alert-receiver", [sys.executable, "-m", "stack.local.alert_receiver",
                                     "--host", listen.host, "--port", str(listen.alert_receiver_port),
                                     "--out", str(NOTIFICATIONS)])
    daemons.start("alertmanager", [
        "prometheus-alertmanager", f"--config.file={AM_DIR / 'alertmanager.yml'}",
        f"--storage.path={AM_DIR / 'data'}", f"--web.listen-address={listen.host}:{listen.alertmanager_port}",
        "--cluster.listen-address=",  # no HA gossip: it would listen on 0.0.0.0:9094
    ])
    daemons.start("prometheus", [
        "prometheus", f"--config.file={PROM_DIR / 'prometheus.yml'}",
        f"--storage.tsdb.path={PROM_DIR / 'data'}", "--storage.tsdb.retention.time=2d",
        f"--web.listen-address={listen.host}:{listen.prometheus_port}", "--web.enable-lifecycle",
    ])
    wait_ready(f"{listen.url(listen.alertmanager_port)}/-/ready")
    wait_ready(f"{listen.url(listen.prometheus_port)}/-/ready")
    wait_ready(f"{listen.url(listen.alert_receiver_port)}/")
