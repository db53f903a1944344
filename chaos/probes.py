"""Steady-state probes: each answers (holds, what it saw)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx

from chaos.context import Context
from stack import prom, queries
from stack.local import second_node, serve_deploy
from stack.local.ray_head import BIN

Probe = Callable[..., tuple[bool, str]]
PROBES: dict[str, Probe] = {}


def probe(fn: Probe) -> Probe:
    PROBES[fn.__name__] = fn
    return fn


@probe
def apps_running(ctx: Context) -> tuple[bool, str]:
    try:
        apps = serve_deploy.details(ctx.ops.listen.dashboard_url).get("applications") or {}
    except Exception as err:  # the dashboard needs the GCS; either may be down mid-fault
        return False, f"Serve details unavailable: {type(err).__name__}"
    states = {name: a.get("status") for name, a in apps.items()}
    bad = {n: s for n, s in states.items() if s != "RUNNING"}
    return not bad and bool(states), f"not RUNNING: {bad}" if bad else f"{len(states)} apps RUNNING"


@probe
def target_healthy(ctx: Context) -> tuple[bool, str]:
    t = ctx.exp.target
    try:
        rows = serve_deploy.states(serve_deploy.details(ctx.ops.listen.dashboard_url))
    except Exception as err:
        return False, f"Serve details unavailable: {type(err).__name__}"
    row = next((r for r in rows if r.app == t.app and r.deployment == t.deployment), None)
    if row is None:
        return False, f"{t.app}/{t.deployment} not deployed"
    ok = row.status == "HEALTHY" and row.running >= max(row.target, 1)
    return ok, f"{t.app}/{t.deployment} {row.status}, {row.running}/{row.target} replicas RUNNING"


@probe
def fault_replica_replaced(ctx: Context) -> tuple[bool, str]:
    """The replica the fault went into is gone: a half-alive replica passes every health check, so
    target_healthy alone would call it recovered."""
    if ctx.fault_replica is None:
        return False, "no replica was faulted"
    t = ctx.exp.target
    try:
        deployment = serve_deploy.details(ctx.ops.listen.dashboard_url)["applications"][t.app]["deployments"]
    except Exception as err:
        return False, f"Serve details unavailable: {type(err).__name__}"
    states = {r["replica_id"]: r["state"] for r in deployment[t.deployment]["replicas"]}
    state = states.get(ctx.fault_replica)
    return state is None, (f"replica {ctx.fault_replica} gone" if state is None
                           else f"replica {ctx.fault_replica} still {state}")


@probe
def metric_present(ctx: Context, name: str) -> tuple[bool, str]:
    """Prometheus has fresh samples of the metric again."""
    try:
        result = prom.api(ctx.ops, "/api/v1/query", query=f"count({{__name__={name!r}}})")["result"]
    except Exception as err:
        return False, f"Prometheus unavailable: {type(err).__name__}"
    count = int(float(result[0]["value"][1])) if result else 0
    return count > 0, f"{count} series of {name}"


@probe
def route_ok(ctx: Context) -> tuple[bool, str]:
    load = ctx.exp.load
    try:
        r = httpx.post(f"{ctx.ops.listen.serve_url}{load.route}", json=load.body, headers=load.headers,
                       timeout=30)
    except httpx.HTTPError as err:
        return False, f"{load.route}: {type(err).__name__}"
    return r.status_code == 200, f"{load.route}: HTTP {r.status_code}"


@probe
def load_clean(ctx: Context, window_s: float = 10) -> tuple[bool, str]:
    """The background load's last window: some requests, none failed, and none hung: a request in
    flight past the route's latency objective fails the probe before its client timeout ends it."""
    now = time.time()
    recent = ctx.load.between(now - window_s, now)
    failed = sum(not o.ok for o in recent)
    hung = ctx.load.hung_now(now)
    return (bool(recent) and failed == 0 and hung == 0,
            f"last {window_s:g}s: {len(recent)} requests, {failed} failed, "
            f"{hung} in flight past {ctx.load.objective_s:g}s")


@probe
def gcs_answers(ctx: Context) -> tuple[bool, str]:
    try:
        done = subprocess.run([str(BIN / "ray"), "status", "--address", ctx.ops.listen.gcs_address],
                              capture_output=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False, "ray status timed out"
    return done.returncode == 0, "ray status answers" if done.returncode == 0 else "ray status failed"


@probe
def nodes_alive(ctx: Context, count: int) -> tuple[bool, str]:
    try:
        alive = second_node.alive_nodes(ctx.ops, wait_for=count, timeout_s=0)
    except Exception as err:
        return False, f"node list unavailable: {type(err).__name__}"
    return alive >= count, f"{alive} Ray nodes alive, {count} wanted"


def target_changes(ctx: Context, at: float, window_s: float) -> int:
    """Changes of the target's autoscaling target over the window ending at `at` (Prometheus)."""
    t = ctx.exp.target
    selector = f'application="{t.app}",deployment="{t.deployment}"'
    step_s = ctx.ops.observability.scrape_interval_s
    expr = f"max({queries.target_changes(f'{int(window_s)}s', step_s, selector)})"
    result = prom.api(ctx.ops, "/api/v1/query", query=expr, time=f"{at:.3f}")["result"]
    return int(float(result[0]["value"][1])) if result else 0


@probe
def scale_changes_dropped(ctx: Context, window_s: float) -> tuple[bool, str]:
    """Under the same load, the window after the mitigation sees fewer scale changes than the one before.

    Waits out the window after the mitigation (plus two scrapes for the export to land).
    """
    mitigated = ctx.marks.get("mitigated")
    if mitigated is None:
        return False, "no mitigation ran"
    lag = 2 * ctx.ops.observability.scrape_interval_s + 10
    wait = mitigated + window_s + lag - time.time()
    if wait > 0:
        time.sleep(wait)
    before = target_changes(ctx, ctx.marks["mitigation_started"] + lag, window_s)
    after = target_changes(ctx, mitigated + window_s + lag, window_s)
    ctx.marks.setdefault("changes_measured", time.time())
    return after < before and after <= 1, f"scale changes per {window_s:g}s: {before} before, {after} after"


def check(ctx: Context, name: str, args: dict[str, Any]) -> tuple[bool, str]:
    return PROBES[name](ctx, **args)
