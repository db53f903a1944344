"""Read what a stack exports: Prometheus' HTTP API and Ray's own /metrics, read-only.

The one place that loadtests, chaos, preflight, the serveops CLI and the tests query metrics from.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from stack import targets
from stack.config import OpsConfig
from stack.polling import eventually

# Prometheus' and Alertmanager's HTTP APIs.

def api(ops: OpsConfig, path: str, **params: str) -> Any:
    """The `data` of a Prometheus HTTP API answer, e.g. api(ops, "/api/v1/query", query="up")."""
    r = httpx.get(f"{ops.targets.prometheus_url}{path}", params=params, headers=targets.headers("prometheus"),
                  timeout=30)
    r.raise_for_status()
    return r.json()["data"]


def firing_alerts(ops: OpsConfig) -> list[dict[str, Any]]:
    """Alerts Prometheus holds as firing (not pending)."""
    return [a for a in api(ops, "/api/v1/alerts")["alerts"] if a.get("state") == "firing"]


def alertmanager_alerts(ops: OpsConfig) -> list[dict[str, Any]]:
    """Alerts Alertmanager holds as active: what would page, silenced and inhibited ones left out."""
    r = httpx.get(f"{ops.targets.alertmanager_url}/api/v2/alerts", headers=targets.headers("alertmanager"),
                  params={"active": "true", "silenced": "false", "inhibited": "false"}, timeout=10)
    r.raise_for_status()
    return r.json()


def parse_time(stamp: str) -> float:
    """Unix seconds of a Prometheus RFC 3339 time, whose fraction may have nine digits."""
    head, _, frac = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + (float(f"0.{frac}") if frac else 0.0)


def alerting_rules(ops: OpsConfig) -> list[dict[str, Any]]:
    """The alerting rules Prometheus runs (name, labels, duration: the `for` in seconds, ...)."""
    return [rule for group in api(ops, "/api/v1/rules", type="alert")["groups"] for rule in group["rules"]]


def rule_for_s(rules: list[dict[str, Any]], alert: str, labels: dict[str, str]) -> float | None:
    """The `for`, in seconds, of the rule an alert with these labels comes from. Several rules share a
    name (the burn-rate pages: 2m on 1h/5m, 15m on 6h/30m, 1h on 1d/2h), told apart by their static
    labels: a rule matches when it agrees on every label both have. Where still ambiguous, the longest
    `for`, a bound that holds whichever fired; None where no rule matches."""
    found = [float(r.get("duration", 0)) for r in rules if r["name"] == alert and all(
        r.get("labels", {}).get(k, v) == v for k, v in labels.items())]
    return max(found) if found else None


# Ranges over a run: replicas per deployment and the alerts that fired.

REPLICAS = "sum by (application, deployment) (ray_serve_deployment_replica_healthy)"
FIRING = 'max by (alertname) (ALERTS{alertstate="firing"})'

Series = dict[str, list[tuple[float, float]]]


@dataclass
class History:
    replicas: Series = field(default_factory=dict)
    alerts: Series = field(default_factory=dict)
    error: str | None = None  # why Prometheus gave nothing

    def alerts_fired(self) -> list[str]:
        return sorted(name for name, points in self.alerts.items() if any(v > 0 for _, v in points))

    def replica_range(self) -> dict[str, dict[str, int]]:
        return {name: {"min": int(min(v for _, v in pts)), "max": int(max(v for _, v in pts))}
                for name, pts in self.replicas.items() if pts}


def query_range(ops: OpsConfig, expr: str, start: float, end: float, label: str) -> Series:
    """One series per value of `label` (joined labels for several)."""
    step = str(ops.observability.scrape_interval_s)
    data = api(ops, "/api/v1/query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=step)
    out: Series = {}
    for result in data["result"]:
        name = "/".join(result["metric"].get(part, "?") for part in label.split(","))
        out[name] = [(float(t), float(v)) for t, v in result["values"]]
    return out


def fetch(ops: OpsConfig, start: float, end: float) -> History:
    try:
        return History(replicas=query_range(ops, REPLICAS, start, end, "application,deployment"),
                       alerts=query_range(ops, FIRING, start, end, "alertname"))
    except httpx.HTTPError as err:
        return History(error=f"Prometheus: {err}")


# Ray's Prometheus export (127.0.0.1:8080) read directly, for a figure now rather than a scrape ago.

Samples = list[tuple[str, dict[str, str], float]]


def scrape(metrics_url: str) -> Samples:
    text = httpx.get(f"{metrics_url}/metrics", timeout=10).text
    return [(s.name, s.labels, s.value) for fam in text_string_to_metric_families(text) for s in fam.samples]


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include the given ones."""
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == w for k, w in labels.items()))


def wait_for(metrics_url: str, predicate: Callable[[Samples], bool], timeout_s: float = 60) -> Samples:
    """Poll until predicate holds; Ray reports metrics every few seconds, not per request."""
    last: Samples = []

    def check() -> bool:
        nonlocal last
        last = scrape(metrics_url)
        return predicate(last)

    eventually(check, timeout_s, every_s=2)
    return last


def wait_settled(metrics_url: str, value: Callable[[Samples], float], settle_s: float = 10,
                 timeout_s: float = 90) -> float:
    """Poll until a figure has moved and then held still for settle_s: Ray has exported it all."""
    start = value(scrape(metrics_url))
    deadline = time.monotonic() + timeout_s
    last, since = start, time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(2)
        now = value(scrape(metrics_url))
        if now != last:
            last, since = now, time.monotonic()
        elif now != start and time.monotonic() - since >= settle_s:
            break
    return last
