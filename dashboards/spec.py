"""Dashboards as data: the generator renders these, and the live test runs every query in them."""

from __future__ import annotations

from dataclasses import dataclass, field

# Metrics a healthy local stack does not export (yet), and why; every other name a dashboard or rule
# uses must exist in a live Prometheus after a short mixed load.
NO_GPU = "serveops_gpu_* exist only where NVML sees a GPU"
EVENT_ONLY_METRICS = {
    "ray_memory_manager_worker_eviction_total": "created by Ray's memory monitor's first kill",
    "ray_serveops_model_load_failures_total": "created by the first failed model load",
    "ray_serve_health_check_failures_total": "created by the first failed health check",
    "serveops_gpu_memory_used_bytes": NO_GPU,
    "serveops_gpu_memory_total_bytes": NO_GPU,
    "serveops_gpu_utilization_ratio": NO_GPU,
}

# Filters every Serve panel shares; the dashboard variables fill them.
APP = 'application=~"$application"'
# Serve's HTTP series of user requests: with the HAProxy ingress, its health checks of every ingress
# replica (/-/healthz, /-/routes) are counted as requests too.
HTTP = APP + ',route!~"/-/.*"'
DEP = 'application=~"$application",deployment=~"$deployment"'
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class PanelSpec:
    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"  # or "stat"
    runbook: str | None = None  # the alert this panel is the picture of
    # Why a panel may be empty on a healthy local stack (e.g. no GPU, no error yet); None: never empty.
    event_only: str | None = None


@dataclass(frozen=True)
class DashboardSpec:
    uid: str
    title: str
    description: str
    panels: tuple[PanelSpec, ...]
    variables: tuple[str, ...] = ("application", "deployment")
    tags: tuple[str, ...] = field(default=("serveops",))


def q(expr: str, legend: str) -> Query:
    return Query(expr, legend)


def quantiles(metric: str, by: str, flt: str, scale: str = "") -> tuple[Query, ...]:
    """p50, p95 and p99 of a histogram, one series per `by` value."""
    return tuple(
        q(f"histogram_quantile({p}, sum by (le, {by}) (rate({metric}_bucket{{{flt}}}[{RATE}]))){scale}",
          f"p{int(p * 100)} {{{{{by}}}}}")
        for p in (0.5, 0.95, 0.99)
    )
