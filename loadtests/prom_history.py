"""What Prometheus saw during a run: replicas per deployment and the alerts that fired."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from stack.config import OpsConfig
from stack.monitoring import api

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
