"""/embed against raw MiniLM: serving efficiency, batching gain, and texts/s with lists of texts."""

from __future__ import annotations

import contextlib
import json
import statistics
from collections.abc import Iterator
from typing import Any

from loadtests.bench import cpu, raw_bert, wrk
from stack.config import BenchMode, OpsConfig
from stack.local import rollout

APP, DEPLOYMENT = "embed", "Embedder"


def saturate(ops: OpsConfig, body: dict[str, Any], connections: int, mode: BenchMode) -> dict[str, Any]:
    """A warm-up, then a measured wrk run; with the mean batch the replica ran and CPU per request.

    The mean batch comes from the batch_size of every answer (Ray's histogram sum is approximate)."""
    url, payload = f"{ops.listen.serve_url}/embed", json.dumps(body)
    wrk.run(url, payload, connections, mode.warmup_s)
    cpu0 = cpu.snapshot()
    run = wrk.run(url, payload, connections, mode.duration_s, field="batch_size")
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


def figures(ops: OpsConfig, profile: str, mode: BenchMode) -> dict[str, Any]:
    bench = ops.bench
    options = ops.profile(profile).deployment(APP, DEPLOYMENT)
    assert options.batching and options.max_ongoing_requests
    max_batch = options.batching.max_batch_size
    # Enough clients to fill two batches, within what the replica admits (so none queue at the proxy).
    connections = min(2 * max_batch, options.max_ongoing_requests)
    one_text = {"text": bench.embed_text}
    raw_s = min(mode.duration_s, 10)

    efficiency, gains, runs = [], [], []
    for _ in range(mode.repeats):
        batched = saturate(ops, one_text, connections, mode)
        raw = raw_bert.throughput([bench.embed_text], max(1, round(batched["mean_batch_size"])), raw_s)
        with user_config(ops, max_batch_size=1):
            unbatched = saturate(ops, one_text, connections, mode)
        efficiency.append(batched["ok_per_s"] / raw["texts_per_s"])
        gains.append(batched["ok_per_s"] / unbatched["ok_per_s"])
        runs.append({"batched": batched, "raw_at_same_batch": raw, "max_batch_size_1": unbatched})
    raw_1 = raw_bert.throughput([bench.embed_text], 1, raw_s)
    raw_max = raw_bert.throughput([bench.embed_text], max_batch, raw_s)

    lists = saturate(ops, {"text": [bench.embed_text] * max_batch}, bench.lists_concurrency, mode)
    texts_per_s = lists["ok_per_s"] * max_batch
    common = {"route": "/embed", "text_tokens": raw_bert.tokens(bench.embed_text),
              "batching": options.batching.model_dump(), "torch_threads_in_replica": options.torch_threads,
              "duration_s": mode.duration_s, "warmup_s": mode.warmup_s, "repeats": mode.repeats}
    return {
        "bert_serve_efficiency": {
            "value": round(statistics.mean(efficiency), 3),
            "inputs": {**common, "concurrency": connections, "texts_per_request": 1,
                       "per_repeat": [round(e, 3) for e in efficiency]},
            "runs": runs,
        },
        "batching_gain": {
            "value": round(statistics.mean(gains), 3),
            "inputs": {**common, "concurrency": connections, "compared_with": "user_config max_batch_size=1",
                       "per_repeat": [round(g, 3) for g in gains]},
            "raw_ceiling": round(raw_max["texts_per_s"] / raw_1["texts_per_s"], 3),
            "raw": {"batch_1": raw_1, f"batch_{max_batch}": raw_max},
        },
        "texts_efficiency": {
            "value": round(texts_per_s / raw_max["texts_per_s"], 3),
            "inputs": {**common, "concurrency": bench.lists_concurrency, "texts_per_request": max_batch},
            "serve_texts_per_s": round(texts_per_s, 1), "run": lists, "raw": raw_max,
        },
    }
