"""The server's own figures over a step's window, from Prometheus: Serve's queue, replicas and
ongoing requests, and vLLM's running and waiting requests and KV cache.

A query that fails or returns nothing is None, never a guess. Prometheus sees a figure a scrape
interval (plus Ray's own report period) after it happened, so the run queries after the last step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from loadtests.sweep.families import Family
from stack import prom
from stack.config import OpsConfig

Query = Callable[[str, float], Any]  # (PromQL, unix time) -> the `data` of an instant query


@dataclass(frozen=True)
class Probe:
    name: str
    over_time: str  # max | avg: how the step's window is folded into one figure
    expr: str


def probes(family: Family) -> list[Probe]:
    app = f'application="{family.app}"'
    dep = f'{app},deployment=~"{family.deployment}"'
    out = [
        Probe("queue_depth_max", "max", f"sum(ray_serve_deployment_queued_queries{{{app}}})"),
        Probe("replicas_max", "max", f"sum(ray_serve_deployment_replica_healthy{{{app}}})"),
        # The advice's denominator: the deployment it scales, not every deployment of the app.
        Probe("deployment_replicas_max", "max", f"sum(ray_serve_deployment_replica_healthy{{{dep}}})"),
        # What the replicas themselves report: with the HAProxy ingress no handle routes the requests,
        # so Serve's handle-side gauge (ray_serve_num_ongoing_requests_at_replicas) stays near 0.
        Probe("ongoing_at_replicas_mean", "avg", f"sum(ray_serve_replica_processing_queries{{{app}}})"),
        Probe("ongoing_at_replicas_max", "max", f"sum(ray_serve_replica_processing_queries{{{app}}})"),
    ]
    if family.streams:
        out += [Probe("vllm_running_max", "max", "sum(ray_vllm_num_requests_running)"),
                Probe("vllm_waiting_max", "max", "sum(ray_vllm_num_requests_waiting)"),
                Probe("kv_cache_usage_max", "max", "max(ray_vllm_kv_cache_usage_perc)")]
    return out


def window_expr(probe: Probe, window_s: float) -> str:
    # A subquery at 1 s resolution: every value Prometheus held during the window, whatever the scrape.
    return f"{probe.over_time}_over_time(({probe.expr})[{max(1, math.ceil(window_s))}s:1s])"


def scalar(data: Any) -> float | None:
    """The one value of an instant query's vector; None for no series or NaN."""
    result = (data or {}).get("result") or []
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if math.isnan(value) else round(value, 4)


@dataclass(frozen=True)
class ServerFigures:
    values: dict[str, float | None]
    error: str | None = None  # the first query that failed, and why


def fetch(query: Query, family: Family, windows: Sequence[tuple[float, float]]) -> list[ServerFigures]:
    """Each window's figures. Once Prometheus cannot be reached, the rest are None without asking."""
    out: list[ServerFigures] = []
    unreachable: str | None = None
    for start, end in windows:
        values: dict[str, float | None] = {}
        error = unreachable
        for p in probes(family):
            if unreachable:
                values[p.name] = None
                continue
            try:
                values[p.name] = scalar(query(window_expr(p, end - start), end))
            except httpx.TransportError as err:
                unreachable = error = f"Prometheus unreachable: {err}"
                values[p.name] = None
            except (httpx.HTTPError, LookupError, ValueError, TypeError) as err:  # a missing figure only
                values[p.name] = None
                error = error or f"{p.name}: {type(err).__name__}: {err}"[:200]
        out.append(ServerFigures(values, error))
    return out


def prometheus(ops: OpsConfig) -> Query:
    return lambda expr, at: prom.api(ops, "/api/v1/query", query=expr, time=f"{at:.3f}")
