"""One step's client-side figures, from its records alone (pure).

Two bases, on purpose. Shares and latencies: the arrivals scheduled in the measured window (after
settle_s), so every request is judged once. Throughput and goodput per second: requests that ended in
the window, what the server actually got done; a queue that grows shows as a shortfall against the
arrivals.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from loadtests.sweep.driver import Record, StepRun
from loadtests.sweep.families import Family
from stack.stats import percentile

Quantiles = dict[str, float | None]  # p50, p90, p99 in ms; None without a value


def quantiles(values: Iterable[float | None]) -> Quantiles:
    known = [v for v in values if v is not None]
    return {f"p{q}": (round(percentile(known, q), 2) if known else None) for q in (50, 90, 99)}


@dataclass(frozen=True)
class Figures:
    offered_per_s: float  # the nominal rate
    arrivals: int  # scheduled in the measured window, dropped ones included
    achieved_per_s: float  # arrivals / window: this step's Poisson draw of the nominal rate
    throughput_per_s: float  # succeeded and ended in the window, per second
    goodput_per_s: float  # good and ended in the window, per second
    good: int  # good among the arrivals
    good_share: float | None  # good / arrivals; None without arrivals
    dropped: int
    failed: int  # sent and not ok, including those still open after the drain
    mean_in_flight: float  # time-weighted over the window
    in_flight_end: int  # open when the arrivals ended
    e2e_ms: Quantiles
    mean_e2e_ms: float | None  # succeeded requests: Little's law at the knee
    ttft_ms: Quantiles | None  # the LLM only
    tpot_ms: Quantiles | None
    output_tokens_per_s: float | None
    generator_cpu_percent: float  # of one core; near 100 the load generator, not the stack, sets the pace
    send_lag_p99_ms: float | None  # how late requests left against their schedule


def in_flight(records: Iterable[Record], start: float, end: float) -> tuple[float, int]:
    """Mean requests open over [start, end), weighted by time, and how many were open at `end`."""
    area, at_end = 0.0, 0
    for r in records:
        if r.sent is None:
            continue
        closed = r.end if r.end is not None else float("inf")
        area += max(0.0, min(closed, end) - max(r.sent, start))
        at_end += r.sent <= end < closed
    return area / (end - start), at_end


def step_figures(run: StepRun, family: Family) -> Figures:
    start, end = run.settle_s, run.step_s
    window_s = end - start
    measured = [r for r in run.records if r.scheduled >= start]
    sent = [r for r in measured if not r.dropped]
    good = [r for r in sent if family.good(r.ok, r.ttft_ms, r.e2e_ms or 0.0, r.tokens)]
    ended = [r for r in run.records if r.ok and r.end is not None and start <= r.end < end]
    good_ended = [r for r in ended if family.good(True, r.ttft_ms, r.e2e_ms or 0.0, r.tokens)]
    mean_open, open_at_end = in_flight(run.records, start, end)
    ok = [r for r in sent if r.ok]
    e2e = [r.e2e_ms for r in ok if r.e2e_ms is not None]
    tokens = sum(r.tokens for r in ended)
    lags = [(r.sent - r.scheduled) * 1000 for r in run.records if r.sent is not None]
    return Figures(
        offered_per_s=run.rate_per_s,
        arrivals=len(measured),
        achieved_per_s=round(len(measured) / window_s, 3),
        throughput_per_s=round(len(ended) / window_s, 3),
        goodput_per_s=round(len(good_ended) / window_s, 3),
        good=len(good),
        good_share=round(len(good) / len(measured), 4) if measured else None,
        dropped=len(measured) - len(sent),
        failed=len(sent) - len(ok),
        mean_in_flight=round(mean_open, 2),
        in_flight_end=open_at_end,
        e2e_ms=quantiles(e2e),
        mean_e2e_ms=round(sum(e2e) / len(e2e), 2) if e2e else None,
        ttft_ms=quantiles(r.ttft_ms for r in ok) if family.streams else None,
        tpot_ms=quantiles(r.tpot_ms for r in ok) if family.streams else None,
        output_tokens_per_s=round(tokens / window_s, 1) if family.streams else None,
        generator_cpu_percent=round(100 * run.cpu_s / max(run.elapsed_s, 1e-9), 1),
        send_lag_p99_ms=round(percentile(lags, 99), 2) if lags else None,
    )
