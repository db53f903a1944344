"""What the scorecard reads from Prometheus: instant values and ranges, with every label.

`Source` is the seam: `LiveSource` asks the local Prometheus through stack/prom.py; tests pass fakes.
The reads built on it (a route's traffic around a fault, firing alerts over a window, replicas' RSS)
are plain functions of a Source.
"""

from __future__ import annotations

from typing import Protocol

from alerts.slo_rules import LATENCY, REQUESTS, le_value
from scorecard.bounds import Traffic
from stack import prom
from stack.config import OpsConfig

Labels = dict[str, str]
Points = list[tuple[float, float]]


class Source(Protocol):
    def instant(self, expr: str, at: float) -> list[tuple[Labels, float]]: ...

    def series(self, expr: str, start: float, end: float) -> list[tuple[Labels, Points]]: ...


class LiveSource:
    """The local Prometheus. stack.prom.query_range keeps one label; the scorecard names alerts and
    replicas by all of theirs, so it reads the same API through stack.prom.api."""

    def __init__(self, ops: OpsConfig) -> None:
        self.ops = ops

    def instant(self, expr: str, at: float) -> list[tuple[Labels, float]]:
        data = prom.api(self.ops, "/api/v1/query", query=expr, time=f"{at:.3f}")
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def series(self, expr: str, start: float, end: float) -> list[tuple[Labels, Points]]:
        data = prom.api(self.ops, "/api/v1/query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}",
                        step=str(self.ops.observability.scrape_interval_s))
        return [(r["metric"], [(float(t), float(v)) for t, v in r["values"]]) for r in data["result"]]


def scalar(source: Source, expr: str, at: float) -> float:
    """The sum of an instant query's values; 0 when it has none (no traffic, no series yet)."""
    return sum(v for _, v in source.instant(expr, at))


def traffic(source: Source, route: str, fault: float, until: float, long_s: float, short_s: float,
            latency_le_ms: float | None, min_span_s: float) -> Traffic:
    """A route around a fault: requests in each window before it, then the rate and the bad share from
    the fault to `until` (the detection). Bad: a 5xx, or with latency_le_ms slower than the objective."""
    sel = f'route="{route}"'

    def increase(selector: str, window_s: float, at: float, metric: str = REQUESTS) -> float:
        return scalar(source, f"sum(increase({metric}{{{selector}}}[{round(window_s)}s]))", at)

    span = max(until - fault, min_span_s)
    end = fault + span
    total = increase(sel, span, end)
    if latency_le_ms is None:
        bad = increase(f'{sel},status_code=~"5.."', span, end)
        share = bad / total if total else 0.0
    else:
        count = increase(sel, span, end, f"{LATENCY}_count")
        fast = increase(f'{sel},le="{le_value(latency_le_ms)}"', span, end, f"{LATENCY}_bucket")
        share = 1 - fast / count if count else 0.0
    return Traffic(n_long=increase(sel, long_s, fault), n_short=increase(sel, short_s, fault),
                   rate_per_s=total / span, bad_share=share)


def alerts(source: Source, start: float, end: float, severity: str) -> list[tuple[Labels, Points]]:
    return source.series(f'ALERTS{{alertstate="firing",severity="{severity}"}}', start, end)


def alert_points(source: Source, labels: Labels, start: float, end: float) -> Points:
    """One firing series for an alert's labels (any instance of it firing counts)."""
    matchers = ",".join(f'{k}="{v}"' for k, v in {**labels, "alertstate": "firing"}.items())
    found = source.series(f"max(ALERTS{{{matchers}}})", start, end)
    return found[0][1] if found else []
