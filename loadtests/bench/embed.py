"""/embed against raw MiniLM: serving efficiency, batching gain, and texts/s with lists of texts."""

from __future__ import annotations

import contextlib
import json
import math
import statistics
from collections.abc import Iterator
from typing import Any

from loadtests.bench import cpu, raw_bert, spread, wrk
from stack.config import BenchMode, DeploymentOptions, OpsConfig
from stack.local import rollout

APP, DEPLOYMENT = "embed", "Embedder"


def saturate(ops: OpsConfig, body: dict[str, Any], connections: int, mode: BenchMode) -> dict[str, Any]:
    """A warm-up, then a measured wrk run; with the mean batch the replica ran and CPU per request.

    The mean batch comes from the batch_size of every answer (Ray's histogram sum is approximate)."""
    url, payload = f"{ops.listen.serve_url}/embed", json.dumps(body)
    wrk.run(url, payload, connections, mode.warmup_s)
    cpu0 = cpu.snapshot()
    run = wrk.run(url, payload, connections, mode.duration_s, field="batch_size")
    if run.requests == run.failed:  # a ratio of nothing: a ZeroDivisionError, or a 0 that looks measured
        raise RuntimeError(f"/embed answered none of {run.requests} requests with a 2xx "
                           f"in {mode.duration_s:g}s")
    figures = run.as_dict()
    figures["mean_batch_size"] = figures.pop("field_harmonic_mean")
    return {**figures, "cpu_ms_per_request": cpu.per_request_ms(cpu0, cpu.snapshot(), run.requests)}


@contextlib.contextmanager
def user_config(ops: OpsConfig, **values: Any) -> Iterator[None]:
    """The Embedder retuned in place (user_config reaches reconfigure(); no restart), then put back."""
    deployed = rollout.read(rollout.DEPLOYED)
    rollout.roll_out(ops, rollout.with_options(deployed, APP, DEPLOYMENT,
                                               {f"user_config.{k}": v for k, v in values.items()}))
    try:
        yield
    finally:
        rollout.roll_out(ops, deployed)


def replica_torch_threads(options: DeploymentOptions, cluster_env: dict[str, str]) -> tuple[int, str]:
    """The torch threads an Embedder replica runs with, and where that number comes from."""
    if options.torch_threads:
        return options.torch_threads, "torch_threads in the ops config (user_config, set in reconfigure)"
    if "OMP_NUM_THREADS" in cluster_env:
        return int(cluster_env["OMP_NUM_THREADS"]), "OMP_NUM_THREADS in the profile's cluster env"
    # Unset, Ray sets OMP_NUM_THREADS in the worker to the floor of the actor's CPUs (at least 1), and torch
    # sizes its pool from it; Serve gives a replica 1 CPU when ray_actor_options has no num_cpus.
    num_cpus = (options.ray_actor_options or {}).get("num_cpus")
    cpus = 1.0 if num_cpus is None else float(num_cpus)
    return max(math.floor(cpus), 1), f"Ray's OMP_NUM_THREADS for an actor of {cpus:g} CPU"


def figures(ops: OpsConfig, profile: str, mode: BenchMode) -> dict[str, Any]:
    bench = ops.bench
    options = ops.profile(profile).deployment(APP, DEPLOYMENT)
    assert options.batching and options.max_ongoing_requests
    max_batch = options.batching.max_batch_size
    threads, threads_from = replica_torch_threads(options, ops.profile(profile).cluster.env)
    # Enough clients to fill two batches, within what the replica admits (so none queue at the proxy).
    connections = min(2 * max_batch, options.max_ongoing_requests)
    one_text = {"text": bench.embed_text}
    raw_s = min(mode.duration_s, 10)

    def raw_at(batch_size: int) -> dict[str, Any]:
        return raw_bert.throughput([bench.embed_text], batch_size, raw_s, threads)

    efficiency, gains, texts, runs, list_runs = [], [], [], [], []
    for _ in range(mode.repeats):
        batched = saturate(ops, one_text, connections, mode)
        raw = raw_at(max(1, round(batched["mean_batch_size"])))
        with user_config(ops, max_batch_size=1):
            unbatched = saturate(ops, one_text, connections, mode)
        lists = saturate(ops, {"text": [bench.embed_text] * max_batch}, bench.lists_concurrency, mode)
        raw_max = raw_at(max_batch)
        efficiency.append(batched["ok_per_s"] / raw["texts_per_s"])
        gains.append(batched["ok_per_s"] / unbatched["ok_per_s"])
        texts.append(lists["ok_per_s"] * max_batch / raw_max["texts_per_s"])
        runs.append({"batched": batched, "raw_at_same_batch": raw, "max_batch_size_1": unbatched})
        list_runs.append({"lists": lists, "raw_at_max_batch": raw_max})
    raw_1 = raw_at(1)
    raw_max_tps = statistics.mean(r["raw_at_max_batch"]["texts_per_s"] for r in list_runs)
    lists_per_s = statistics.mean(r["lists"]["ok_per_s"] for r in list_runs)

    common = {"route": "/embed", "text_tokens": raw_bert.tokens(bench.embed_text),
              "batching": options.batching.model_dump(), "torch_threads_in_replica": threads,
              "torch_threads_in_replica_from": threads_from, "torch_threads_raw": raw_1["torch_threads"],
              "duration_s": mode.duration_s, "warmup_s": mode.warmup_s, "repeats": mode.repeats}
    return {
        "bert_serve_efficiency": {
            **spread.figure(efficiency),
            "inputs": {**common, "concurrency": connections, "texts_per_request": 1},
            "runs": runs,
        },
        "batching_gain": {
            **spread.figure(gains),
            "inputs": {**common, "concurrency": connections, "compared_with": "user_config max_batch_size=1"},
            "raw_ceiling": round(raw_max_tps / raw_1["texts_per_s"], 3),
            "raw": {"batch_1": raw_1, f"batch_{max_batch}": list_runs[-1]["raw_at_max_batch"]},
        },
        "texts_efficiency": {
            **spread.figure(texts),
            "inputs": {**common, "concurrency": bench.lists_concurrency, "texts_per_request": max_batch},
            "serve_texts_per_s": round(lists_per_s * max_batch, 1),
            "runs": list_runs, "raw": list_runs[-1]["raw_at_max_batch"],
        },
    }
