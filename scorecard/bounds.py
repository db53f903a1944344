"""Each alert's detection bound: window term + `for` + pipeline, the window term from a table.

The pipeline is what every alert waits on after its condition holds in the replica: Ray's metrics
export interval, a scrape, an evaluation, and Alertmanager's group_wait. The window term is how long
the fault takes to make the rule's expression true, per alert:

- burn: the window arithmetic of a burn-rate pair (`burn_window_s`), the larger of its two windows;
- health_check: two missed health checks, 2 x (period + timeout), plus the watchdog's threshold when
  the deployment has one (a hung handler fails checks only once its oldest request is that old);
- range: the rule's own longest range selector (a rate window, a stall window);
- oscillation: the changes the rule counts, each half a period of the experiment's square wave;
- replacement: the replacement replica's start (Serve's startup latency for it) and one health-check
  period, after which its healthy gauge counts it;
- event / gauge: 0 from the fault mark (a counter's first rise, a gauge crossing a line).

An alert not in the table has no bound: shown as such, never a pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from scorecard.model import Bound, Identity, Pipeline
from scorecard.rules import seconds

RAY_EXPORT_S = 10.0  # Ray's metrics_report_interval_ms default: a replica's figure reaches /metrics this late

WINDOW_TERMS: dict[str, str] = {
    "ServeErrorBudgetBurn": "burn",
    "ServeLatencyBudgetBurn": "burn",
    "LLMGoodputBudgetBurn": "burn",
    "ServeReplicaUnhealthy": "health_check",
    "ServeReplicaStalled": "range",  # the stall window: no request completed over it
    "RayGCSUnreachable": "range",  # its rate window must hold no answered RPC
    "ServeReplicaMemoryGrowing": "range",
    "LLMTimeToFirstTokenHigh": "range",
    "ServeAutoscalerOscillation": "oscillation",
    "ServeReplicaOOMKilled": "event",
    "ServeReplicaRestarts": "replacement",
    "ServeDeploymentFailed": "event",
    "RayMetricMissing": "event",
    "RayMetricsTargetDown": "event",
    "RayMetricsAbsent": "event",
    "ServeDeploymentBelowTarget": "gauge",
    "ServeRequestQueueBuildup": "gauge",
    "RayNodeMemoryHigh": "gauge",
    "ServeReplicaMemoryHigh": "gauge",
    "LLMKVCacheSaturated": "gauge",
    "GPUMemoryHigh": "gauge",
    "RayScrapeSlow": "gauge",
    "RayTargetSeriesGrowth": "gauge",
    "RayStaleReplicaSeries": "gauge",  # the healthy gauge goes stale at the next scrape
}

_RANGE = re.compile(r"\[(\d+(?:\.\d+)?(?:ms|s|m|h|d|w)(?:\d+(?:ms|s|m|h|d|w))*)(?::[^\]]*)?\]")


@dataclass(frozen=True)
class Traffic:
    """A route's traffic around a fault, read from Prometheus: requests in each window of the pair
    before the fault, the request rate during it, and the bad share (5xx, or slower than the
    objective) during it."""

    n_long: float
    n_short: float
    rate_per_s: float
    bad_share: float


@dataclass(frozen=True)
class HealthCheck:
    period_s: float
    timeout_s: float
    watchdog_s: float | None = None


@dataclass(frozen=True)
class Inputs:
    """What a window term needs, filled by the caller according to the alert's kind."""

    traffic: Traffic | None = None
    threshold: float | None = None  # burn: factor x budget
    long_s: float | None = None
    short_s: float | None = None
    health: HealthCheck | None = None
    changes: int | None = None  # oscillation: changes the rule counts
    period_s: float | None = None  # oscillation: the experiment's square-wave period
    startup_s: float | None = None  # replacement: how long the replacement replica took to start


def burn_window_s(threshold: float, n: float, rate_per_s: float, bad_share: float,
                  window_s: float | None = None) -> float | None:
    """Seconds until a window's bad ratio crosses `threshold` once a fault starts.

    After t seconds the window holds the n requests it had before the fault and rate x t new ones,
    bad_share of them bad: bad_share.r.t / (n + r.t) = thr  =>  t = thr.n / (r.(s - thr)). A window
    with no earlier traffic crosses at once. Never (None) when the bad share stays at or under the
    threshold. Capped at the window: by then it holds fault-time requests only.
    """
    if rate_per_s <= 0 or bad_share <= threshold:
        return None
    t = threshold * n / (rate_per_s * (bad_share - threshold))
    return min(t, window_s) if window_s is not None else t


def longest_range_s(expr: str) -> float | None:
    found = [seconds(m) for m in _RANGE.findall(expr)]
    return max(found) if found else None


def window_term(identity: Identity, inputs: Inputs) -> tuple[str, float | None, str]:
    """(kind, seconds, how) of the identity's window term; seconds None: no bound, `how` says why."""
    kind = WINDOW_TERMS.get(identity.alert, "unknown")
    if kind == "burn":
        t, thr = inputs.traffic, inputs.threshold
        if t is None or thr is None or inputs.long_s is None or inputs.short_s is None:
            return kind, None, "no bound: the route's traffic around the fault is unknown"
        long_t = burn_window_s(thr, t.n_long, t.rate_per_s, t.bad_share, inputs.long_s)
        short_t = burn_window_s(thr, t.n_short, t.rate_per_s, t.bad_share, inputs.short_s)
        if long_t is None or short_t is None:
            return kind, None, (f"no bound: a bad share of {t.bad_share:.2%} at {t.rate_per_s:.2f}/s never "
                                f"crosses {thr:.4g}")
        return kind, round(max(long_t, short_t), 1), (
            f"thr {thr:.4g}, {t.rate_per_s:.2f}/s with {t.bad_share:.1%} bad; N {t.n_long:.0f} (long) / "
            f"{t.n_short:.0f} (short) -> {long_t:.1f} s / {short_t:.1f} s")
    if kind == "health_check":
        h = inputs.health
        if h is None:
            return kind, None, "no bound: the deployment's health-check settings are unknown"
        t = 2 * (h.period_s + h.timeout_s) + (h.watchdog_s or 0)
        watchdog = f" + watchdog {h.watchdog_s:g}" if h.watchdog_s else ""
        return kind, t, f"2 x (period {h.period_s:g} + timeout {h.timeout_s:g}){watchdog}"
    if kind == "range":
        r = longest_range_s(identity.expr)
        return kind, r, (f"the rule's window {r:g} s" if r is not None else "no bound: the rule has no range")
    if kind == "oscillation":
        if inputs.changes is None or inputs.period_s is None:
            return kind, None, "no bound: the experiment's square-wave period is unknown"
        return kind, inputs.changes * inputs.period_s / 2, (
            f"{inputs.changes} changes x half a period of {inputs.period_s:g} s")
    if kind == "replacement":
        h = inputs.health
        if inputs.startup_s is None or h is None:
            return kind, None, "no bound: the replacement's startup latency is unknown"
        return kind, round(inputs.startup_s + h.period_s, 1), (
            f"the replacement's start {inputs.startup_s:.1f} s + a health-check period {h.period_s:g} s")
    if kind in ("event", "gauge"):
        return kind, 0.0, "0 from the fault mark"
    return kind, None, "no bound: the alert is not in scorecard/bounds.py"


def bound(identity: Identity, inputs: Inputs, pipeline: Pipeline) -> Bound:
    kind, window, how = window_term(identity, inputs)
    total = None if window is None else round(window + identity.for_s + pipeline.total_s, 1)
    return Bound(kind=kind, window_s=window, for_s=identity.for_s, pipeline_s=pipeline.total_s,
                 total_s=total, detail=how)


def pipeline(scrape_interval_s: float, evaluation_interval_s: float, group_wait: str) -> Pipeline:
    return Pipeline(ray_export_s=RAY_EXPORT_S, scrape_interval_s=scrape_interval_s,
                    evaluation_interval_s=evaluation_interval_s, group_wait_s=seconds(group_wait))
