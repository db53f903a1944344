"""What instrumentation costs: the same routes with serveops' metrics and tracing (the ops sampling) on
and off. Switching needs a fresh head (the proxy reads tracing settings at start), so the runs go
full, off, full (off, full again per further repeat): every off run sits between two full ones, and
each repeat's ratio sets the off run against the mean of its two neighbours, so drift shows as spread.

Each full run is also set against the next (an A/A comparison): on the 2-core box two heads with the same
settings have served /embed at 113 and 168 req/s, and a ratio that moves that much with nothing changed
cannot judge a 3% goal (spread.verdict's null_floor). CPU ms per request by process group, per run, says where
instrumentation's cost would show.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtests import stack_client
from loadtests.bench import cpu, spread, wrk
from stack.config import BenchMode, OpsConfig
from stack.local import instrumentation
from stack.serving.observability import switch


def restart(mode: str, log: Path) -> None:
    stack_client.restart({switch.ENV: mode}, log)


def measure(ops: OpsConfig, mode: BenchMode) -> dict[str, dict[str, Any]]:
    """Per route: p50 latency one request at a time, and requests/s at throughput_concurrency."""
    bench = ops.bench
    body = json.dumps({"text": bench.embed_text})
    out = {}
    for route in bench.instrumentation_routes:
        url = f"{ops.listen.serve_url}{route}"
        wrk.run(url, body, bench.throughput_concurrency, mode.warmup_s)
        latency = wrk.run(url, body, bench.latency_concurrency, mode.duration_s)
        before = cpu.snapshot()
        throughput = wrk.run(url, body, bench.throughput_concurrency, mode.duration_s)
        spent = cpu.per_request_ms(before, cpu.snapshot(), throughput.requests)
        out[route] = {"latency": latency.as_dict(), "throughput": {**throughput.as_dict(), "cpu_ms": spent}}
    return out


def figures(ops: OpsConfig, mode: BenchMode, out: Path) -> dict[str, Any]:
    log = out / "restarts.log"
    runs: dict[str, list[dict[str, Any]]] = {"full": [], "off": []}
    if instrumentation.running_mode() != "full":
        restart("full", log)
    order = ["full", *["off", "full"] * mode.repeats]  # each off run between two full ones
    for side in order:
        if side != instrumentation.running_mode():
            restart(side, log)
        runs[side].append(measure(ops, mode))
    per_route = {route: pair_ratios(runs, route) for route in ops.bench.instrumentation_routes}
    null = "each full run against the next, same settings (A/A): the ratio's largest distance from 1"
    inputs = {"routes": ops.bench.instrumentation_routes,
              "order": ", ".join(order) + " (a fresh head each switch)",
              "full_means": "custom metrics, request observer, spans at sampling "
                            f"{ops.observability.tracing_sampling_ratio}",
              "latency_concurrency": ops.bench.latency_concurrency,
              "throughput_concurrency": ops.bench.throughput_concurrency,
              "duration_s": mode.duration_s, "warmup_s": mode.warmup_s, "load_generator": "wrk"}
    return {
        "instrumentation_latency_ratio": {
            **spread.figure(worst(per_route, "latency_ratio", max)),
            "null": {"floor": null_floor(per_route, "latency_ratio"), "what": null},
            "inputs": {**inputs, "statistic": "p50 full / p50 off; the worst route, per repeat"},
            "per_route": per_route},
        "instrumentation_throughput_ratio": {
            **spread.figure(worst(per_route, "throughput_ratio", min)),
            "null": {"floor": null_floor(per_route, "throughput_ratio"), "what": null},
            "inputs": {**inputs, "statistic": "requests/s full / off; the worst route, per repeat"},
            "per_route": per_route},
    }


def pair_ratios(runs: dict[str, list[dict[str, Any]]], route: str) -> dict[str, Any]:
    """Per off run, full / off for one route, full being the mean of the full runs either side of it
    (runs go full, off, full, ...: off run i sits between full runs i and i + 1)."""
    seen = {side: {"p50_ms": [r[route]["latency"]["p50_ms"] for r in runs[side]],
                   "ok_per_s": [r[route]["throughput"]["ok_per_s"] for r in runs[side]],
                   "cpu_ms": [r[route]["throughput"].get("cpu_ms", {}) for r in runs[side]]} for side in runs}
    if len(seen["full"]["p50_ms"]) != len(seen["off"]["p50_ms"]) + 1:
        raise ValueError("every off run needs a full run on either side")

    def ratios(key: str) -> list[float]:
        full, off = seen["full"][key], seen["off"][key]
        return [(full[i] + full[i + 1]) / 2 / off[i] for i in range(len(off))]

    def null(key: str) -> list[float]:
        full = seen["full"][key]
        return [full[i + 1] / full[i] for i in range(len(full) - 1)]

    return {name: {**spread.figure(ratios(key)), "null": spread.figure(null(key))}
            for name, key in (("latency_ratio", "p50_ms"), ("throughput_ratio", "ok_per_s"))} | {"runs": seen}


def null_floor(per_route: dict[str, dict[str, Any]], ratio: str) -> float:
    """The furthest any route's A/A ratio (a full run against the next) strayed from 1."""
    return round(max(abs(v - 1) for r in per_route.values() for v in r[ratio]["null"]["per_repeat"]), 3)


def markdown(figure: dict[str, Any]) -> str:
    """Per route and side: req/s and p50 of each run, and the busiest groups' mean CPU ms per request."""
    rows = ["| route | instrumentation | req/s per run | p50 ms per run | CPU ms per request (mean) |",
            "|---|---|---|---|---|"]
    for route, r in figure["per_route"].items():
        for side, seen in r["runs"].items():
            groups: dict[str, list[float]] = {}
            for spent in seen["cpu_ms"]:
                for group, ms in spent.items():
                    groups.setdefault(group, []).append(ms)
            # Only groups among the busiest in every run: a mean over the runs one happened to top misleads.
            shown = ", ".join(f"{g.removeprefix('ray::')} {sum(v) / len(v):.2f}" for g, v in groups.items()
                              if len(v) == len(seen["cpu_ms"]))
            rows.append(f"| {route} | {side} | {', '.join(f'{v:g}' for v in seen['ok_per_s'])} | "
                        f"{', '.join(f'{v:g}' for v in seen['p50_ms'])} | {shown} |")
    return "\n".join(rows) + "\n"


def worst(per_route: dict[str, dict[str, Any]], ratio: str,
          pick: Callable[[list[float]], float]) -> list[float]:
    """Per repeat, the worst route's ratio (pick: max for latency, min for throughput): the goal has to
    hold for every route in every repeat."""
    repeats = zip(*(r[ratio]["per_repeat"] for r in per_route.values()), strict=True)
    return [pick(list(values)) for values in repeats]
