"""A sweep's record and its words: sweep.json and sweep.md per family, the console table, the summary."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from loadtests.sweep.figures import Quantiles
from loadtests.sweep.sweep import FamilyResult, Step

LAG_WARN_MS = 100  # requests leaving this late: the generator's event loop, not the server, is behind


def _num(value: float | None, fmt: str = ".1f") -> str:
    return "-" if value is None else format(value, fmt)


def _q(q: Quantiles | None, key: str) -> str:
    return "-" if q is None else _num(q.get(key))


def rules(result: FamilyResult) -> str:
    p, f = result.plan, result.family
    return (f"Good = {f.objective}; target {f.target:.2%} of arrivals. Over-saturated = any arrival dropped "
            f"at {p.max_in_flight} in flight, served under {p.throughput_ratio:.0%} of the arrivals drawn, "
            f"or more than twice the mean open at the step's end (floor {p.backlog_floor} requests).")


def warnings(result: FamilyResult, cpu_warn_percent: float) -> list[str]:
    out = []
    for s in result.steps:
        f = s.figures
        if f.generator_cpu_percent >= cpu_warn_percent:
            out.append(f"at {s.rate_per_s:g}/s the load generator used {f.generator_cpu_percent:g}% of a "
                       "core: it, not the stack, may have set the pace")
        if f.send_lag_p99_ms is not None and f.send_lag_p99_ms > LAG_WARN_MS:
            out.append(f"at {s.rate_per_s:g}/s requests left up to {f.send_lag_p99_ms:g} ms late (p99): "
                       "the load generator fell behind its schedule")
        if s.server.error:
            out.append(f"at {s.rate_per_s:g}/s Prometheus: {s.server.error}")
    return list(dict.fromkeys(out))


def _columns(result: FamilyResult) -> list[tuple[str, Any]]:
    cols: list[tuple[str, Any]] = [
        ("rate/s", lambda s: f"{s.rate_per_s:g}"),
        ("drawn/s", lambda s: f"{s.figures.achieved_per_s:g}"),
        ("served/s", lambda s: f"{s.figures.throughput_per_s:g}"),
        ("good/s", lambda s: f"{s.figures.goodput_per_s:g}"),
        ("good %", lambda s: "-" if s.figures.good_share is None else f"{s.figures.good_share:.2%}"),
        ("drop", lambda s: str(s.figures.dropped)),
        ("fail", lambda s: str(s.figures.failed)),
    ]
    for key in ("p50", "p90", "p99"):
        cols.append((f"e2e {key}", lambda s, k=key: _q(s.figures.e2e_ms, k)))
    if result.family.streams:
        for metric in ("ttft", "tpot"):
            for key in ("p50", "p99"):
                cols.append((f"{metric} {key}",
                             lambda s, m=metric, k=key: _q(getattr(s.figures, f"{m}_ms"), k)))
    cols += [
        ("open", lambda s: f"{s.figures.mean_in_flight:g}"),
        ("at end", lambda s: str(s.figures.in_flight_end)),
        ("queue", lambda s: _num(s.server.values.get("queue_depth_max"), "g")),
        ("replicas", lambda s: _num(s.server.values.get("deployment_replicas_max"), "g")),
    ]
    if result.family.streams:
        cols += [("waiting", lambda s: _num(s.server.values.get("vllm_waiting_max"), "g")),
                 ("kv", lambda s: _num(s.server.values.get("kv_cache_usage_max"), ".2f"))]
    return cols


def _verdict(result: FamilyResult, i: int, s: Step) -> str:
    return ("knee" if i == result.knee.index else "ok") if s.verdict.passed else s.verdict.line()


def _rows(result: FamilyResult) -> tuple[list[str], list[list[str]]]:
    cols = _columns(result)
    heads = [h for h, _ in cols] + ["verdict"]
    rows = [[fn(s) for _, fn in cols] + [_verdict(result, i, s)] for i, s in enumerate(result.steps)]
    return heads, rows


def knee_line(result: FamilyResult) -> str:
    k = result.knee_step
    if k is None:
        return f"no knee: no rate met the target ({result.knee.why}); lower start_rate_per_s"
    tail = ("the last configured rate, reached without over-saturating: the real knee is higher"
            if result.knee.last_rate_reached else f"the next rate failed: {result.knee.why}")
    return f"knee: {k.rate_per_s:g} req/s ({tail})"


def advice_lines(result: FamilyResult) -> list[str]:
    a = result.advice
    if a is None:
        return ["no advice: without a knee there is no rate per replica to size from"]
    return [f"per-replica rate {a.per_replica_rate_per_s:g} req/s, target_ongoing_requests "
            f"{a.target_ongoing_requests}, max_replicas {a.max_replicas} for {a.peak_rate_per_s:g} req/s",
            *(f"- {r}" for r in a.reasons)]


def table(result: FamilyResult) -> str:
    """The console table of one family, with its knee and advice."""
    heads, rows = _rows(result)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(heads)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths[:-1]) + "  {}"
    f = result.family
    return "\n".join([f"{f.name}  {f.route}  ({rules(result)})", fmt.format(*heads),
                      *(fmt.format(*r) for r in rows), knee_line(result), *advice_lines(result)])


def markdown(result: FamilyResult, plots: list[str], cpu_warn_percent: float) -> str:
    f, p = result.family, result.plan
    heads, rows = _rows(result)
    lines = [f"# Sweep: {f.name} ({f.route})", "",
             f"Mode {p.mode}: {p.step_s:g} s per rate, the first {p.settle_s:g} s left out of the figures; "
             f"open-loop Poisson arrivals at {', '.join(f'{r:g}' for r in p.rates[f.name])} req/s, "
             f"stopping at the first rate that fails. {rules(result)}", "",
             "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "Latencies in ms; drawn/s is the step's Poisson draw of the rate; served/s and good/s "
              "count requests that ended in the measured window; queue, replicas (of the scaled deployment "
              f"`{f.deployment}`), waiting and kv are Prometheus' most over the step ('-': it gave nothing).",
              "", "## Knee", "", knee_line(result), "", "## Recommendation", ""]
    lines += advice_lines(result)
    warned = warnings(result, cpu_warn_percent)
    if warned:
        lines += ["", "## Warnings", "", *(f"- {w}" for w in warned)]
    lines += ["", "## Plots", "", *(f"- [{name}]({name})" for name in plots)]
    return "\n".join(lines) + "\n"


def to_json(result: FamilyResult, plots: list[str]) -> dict[str, Any]:
    f, p, k = result.family, result.plan, result.knee
    steps = [{"rate_per_s": s.rate_per_s, "window": list(s.window), **asdict(s.figures),
              "server": s.server.values, "prometheus_error": s.server.error,
              "verdict": {"passed": s.verdict.passed, "met_target": s.verdict.met_target,
                          "oversaturated": s.verdict.oversaturated,
                          "reasons": [asdict(r) for r in s.verdict.reasons]}} for s in result.steps]
    knee = result.knee_step
    return {
        "family": f.name, "route": f.route, "app": f.app, "deployment": f.deployment,
        "model": f.model or None, "objective": f.objective, "target": f.target, "mode": p.mode,
        "step_s": p.step_s, "settle_s": p.settle_s,
        "drain_timeout_s": p.drain_timeout_s, "rates_per_s": list(p.rates[f.name]),
        "rules": {"max_in_flight": p.max_in_flight, "throughput_ratio": p.throughput_ratio,
                  "backlog_floor": p.backlog_floor, "seed": p.seed},
        "steps": steps,
        "knee": None if knee is None else {"rate_per_s": knee.rate_per_s, "step": k.index},
        "last_rate_reached": k.last_rate_reached, "stopped": k.why,
        "advice": None if result.advice is None else asdict(result.advice),
        "plots": plots,
    }


def summary(results: list[FamilyResult]) -> str:
    """The top-level sweep.md: each family's knee and advice, and where its report is."""
    lines = ["# Sweep", "", "| family | knee req/s | per replica req/s | target_ongoing_requests "
             "| max_replicas | peak req/s | report |", "|---|---|---|---|---|---|---|"]
    for r in results:
        a, k = r.advice, r.knee_step
        cells = ["-"] * 4 if a is None else [f"{a.per_replica_rate_per_s:g}", str(a.target_ongoing_requests),
                                             str(a.max_replicas), f"{a.peak_rate_per_s:g}"]
        knee = "none" if k is None else f"{k.rate_per_s:g}" + (" (floor)" if r.knee.last_rate_reached else "")
        lines.append(f"| {r.family.name} | {knee} | " + " | ".join(cells)
                     + f" | [{r.family.name}/sweep.md]({r.family.name}/sweep.md) |")
    lines += ["", *(f"- {r.family.name}: {knee_line(r)}" for r in results)]
    return "\n".join(lines) + "\n"
