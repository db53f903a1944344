"""What instrumentation costs: the same routes with serveops' metrics and tracing (sampling 1.0) on
and off. Switching needs a fresh head (the proxy reads tracing settings at start), so the runs go
full, off, full (off, full again per further repeat): every off run sits between two full ones, and
drift between them shows as noise.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from loadtests.bench import wrk
from stack.config import BenchMode, OpsConfig
from stack.local import instrumentation, second_node
from stack.serving.observability import switch


def restart(mode: str, log: Path) -> None:
    """`make down`, then `make up` with SERVEOPS_INSTRUMENTATION=mode (and the second node, if one ran)."""
    env = {**os.environ, switch.ENV: mode, **({"NODES": "2"} if second_node.exists() else {})}
    with log.open("a") as out:
        for action in ("down", "up"):
            out.write(f"\n== stack.local.cluster {action} ({switch.ENV}={mode})\n")
            out.flush()
            proc = subprocess.run([sys.executable, "-m", "stack.local.cluster", action], env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
            if proc.returncode != 0:
                raise RuntimeError(f"stack.local.cluster {action} with {switch.ENV}={mode} exited "
                                   f"{proc.returncode}; see {log}")


def measure(ops: OpsConfig, mode: BenchMode) -> dict[str, dict[str, Any]]:
    """Per route: p50 latency one request at a time, and requests/s at throughput_concurrency."""
    bench = ops.bench
    body = json.dumps({"text": bench.embed_text})
    out = {}
    for route in bench.instrumentation_routes:
        url = f"{ops.listen.serve_url}{route}"
        wrk.run(url, body, bench.throughput_concurrency, mode.warmup_s)
        latency = wrk.run(url, body, bench.latency_concurrency, mode.duration_s)
        throughput = wrk.run(url, body, bench.throughput_concurrency, mode.duration_s)
        out[route] = {"latency": latency.as_dict(), "throughput": throughput.as_dict()}
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
    per_route = {}
    for route in ops.bench.instrumentation_routes:
        seen = {side: {"p50_ms": [r[route]["latency"]["p50_ms"] for r in runs[side]],
                       "ok_per_s": [r[route]["throughput"]["ok_per_s"] for r in runs[side]]} for side in runs}
        full, off = ({k: statistics.mean(v) for k, v in seen[side].items()} for side in ("full", "off"))
        per_route[route] = {"latency_ratio": round(full["p50_ms"] / off["p50_ms"], 3),
                            "throughput_ratio": round(full["ok_per_s"] / off["ok_per_s"], 3), "runs": seen}
    inputs = {"routes": ops.bench.instrumentation_routes,
              "order": ", ".join(order) + " (a fresh head each switch)",
              "full_means": "custom metrics, request observer, spans at sampling "
                            f"{ops.observability.tracing_sampling_ratio}",
              "latency_concurrency": ops.bench.latency_concurrency,
              "throughput_concurrency": ops.bench.throughput_concurrency,
              "duration_s": mode.duration_s, "warmup_s": mode.warmup_s, "load_generator": "wrk"}
    return {
        "instrumentation_latency_ratio": {
            "value": max(r["latency_ratio"] for r in per_route.values()),
            "inputs": {**inputs, "statistic": "p50 full / p50 off; the worst route"}, "per_route": per_route},
        "instrumentation_throughput_ratio": {
            "value": min(r["throughput_ratio"] for r in per_route.values()),
            "inputs": {**inputs, "statistic": "requests/s full / off; the worst route"},
            "per_route": per_route},
    }
