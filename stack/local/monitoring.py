"""Prometheus, Alertmanager and the local webhook receiver, on loopback beside the Ray head.

Prometheus scrapes Ray through the service-discovery file Ray writes, plus our exporters'
target files, and loads the rules under alerts/. Alertmanager routes every alert to the receiver,
which records notifications in .run/alerts/notifications.jsonl. Configs are generated from the
ops config into .run/ at `make up` (they hold absolute paths, so they are not committed).

For chaos, drop_metric() has Prometheus drop a metric family of the Ray job at scrape time (as if
Ray had renamed it: RayMetricMissing must page) and restore_metrics() takes every drop back; both
rewrite the config and reload Prometheus. `make up` writes the config afresh, without drops.
"""

from __future__ import annotations

import json
import re
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
PROM_CONFIG = PROM_DIR / "prometheus.yml"
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def duration(seconds: float) -> str:
    """A Prometheus duration: whole seconds, else milliseconds (it takes no fractions)."""
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{round(seconds * 1000)}ms"


def prometheus_config(ops: OpsConfig, dropped: tuple[str, ...] = ()) -> dict[str, Any]:
    """dropped: metric families of the Ray job that Prometheus drops after each scrape (chaos)."""
    listen, obs = ops.listen, ops.observability
    ray_job: dict[str, Any] = {
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
    }
    if dropped:
        ray_job["metric_relabel_configs"] = [drop_rule(dropped)]
    return {
        "global": {"scrape_interval": f"{obs.scrape_interval_s}s",
                   "scrape_timeout": duration(obs.scrape_timeout_s),
                   "evaluation_interval": f"{obs.evaluation_interval_s}s"},
        "rule_files": [str(RULE_FILES)],
        "alerting": {"alertmanagers": [{"static_configs": [
            {"targets": [f"{listen.host}:{listen.alertmanager_port}"]}]}]},
        "scrape_configs": [
            ray_job,
            {"job_name": "serveops", "file_sd_configs": [{"files": [str(TARGETS_DIR / "*.json")]}]},
            {"job_name": "prometheus",
             "static_configs": [{"targets": [f"{listen.host}:{listen.prometheus_port}"]}]},
            {"job_name": "alertmanager",
             "static_configs": [{"targets": [f"{listen.host}:{listen.alertmanager_port}"]}]},
        ],
    }


def drop_rule(names: tuple[str, ...]) -> dict[str, Any]:
    """A metric_relabel_configs rule dropping exactly these families (the regex is anchored)."""
    for name in names:
        if not METRIC_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a metric name")
    return {"source_labels": ["__name__"], "regex": "|".join(sorted(set(names))), "action": "drop"}


def dropped_metrics(config: dict[str, Any]) -> tuple[str, ...]:
    """The families a config's Ray job drops (what drop_metric() wrote)."""
    ray_job = next(j for j in config["scrape_configs"] if j["job_name"] == "ray")
    rules = [r for r in ray_job.get("metric_relabel_configs") or []
             if r.get("action") == "drop" and r.get("source_labels") == ["__name__"]]
    return tuple(sorted({n for r in rules for n in r["regex"].split("|")}))


def drop_metric(ops: OpsConfig, name: str) -> tuple[str, ...]:
    """Have Prometheus drop a Ray metric family, as if Ray had renamed it. Returns every family now
    dropped (drops add up until restore_metrics())."""
    current = yaml.safe_load(PROM_CONFIG.read_text()) if PROM_CONFIG.exists() else None
    dropped = tuple(sorted({*(dropped_metrics(current) if current else ()), name}))
    write_prometheus_config(ops, dropped)
    reload(ops)
    return dropped


def restore_metrics(ops: OpsConfig) -> None:
    """Take back every drop_metric(): the config `make up` writes, reloaded."""
    write_prometheus_config(ops)
    reload(ops)


def write_prometheus_config(ops: OpsConfig, dropped: tuple[str, ...] = ()) -> None:
    PROM_DIR.mkdir(parents=True, exist_ok=True)
    tmp = PROM_CONFIG.with_suffix(".yml.tmp")  # Prometheus never reads half a file
    tmp.write_text(yaml.safe_dump(prometheus_config(ops, dropped), sort_keys=False))
    tmp.replace(PROM_CONFIG)


def reload(ops: OpsConfig) -> None:
    """Prometheus (--web.enable-lifecycle) re-reads its config; it answers 500 and keeps the old one
    when the new one is invalid, which raises here."""
    httpx.post(f"{ops.listen.url(ops.listen.prometheus_port)}/-/reload", timeout=30).raise_for_status()


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


def unregister_target(name: str) -> None:
    (TARGETS_DIR / f"{name}.json").unlink(missing_ok=True)


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
    write_prometheus_config(ops)
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
        "--enable-feature=exemplar-storage",  # the trace ids on serveops_request_latency_ms
    ])
    wait_ready(f"{listen.url(listen.alertmanager_port)}/-/ready")
    wait_ready(f"{listen.url(listen.prometheus_port)}/-/ready")
    wait_ready(f"{listen.url(listen.alert_receiver_port)}/")
