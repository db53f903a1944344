"""From a latency bucket to a trace: serveops_request_latency_ms's exemplars, as Prometheus stores them.

Each request sends its own traceparent: sampled ones (flags 01) must show up as the exemplar of the
bucket they fell in, under the route they went to, and lead to spans in the sink; an unsampled one
(flags 00) is counted but never becomes an exemplar, since its id would lead to no spans.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import httpx
import pytest

from stack import prom
from stack.config import OpsConfig
from stack.local.ray_head import trace_dir
from stack.polling import eventually
from stack.serving.observability import exemplars
from stack.tools.traces import load_trace

pytestmark = pytest.mark.live


def post(http: httpx.Client, path: str, body: dict[str, Any], sampled: bool) -> str:
    trace_id = secrets.token_hex(16)
    flags = "01" if sampled else "00"
    r = http.post(path, json=body, headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-{flags}"})
    assert r.status_code == 200, r.text
    return trace_id


def count(ops: OpsConfig, route: str) -> float:
    series = prom.api(ops, "/api/v1/query", query=f'sum({exemplars.NAME}_count{{route="{route}"}})')["result"]
    return float(series[0]["value"][1]) if series else 0.0


def stored(ops: OpsConfig, route: str, since: float) -> dict[str, float]:
    """trace id -> latency (ms) of every exemplar Prometheus holds for the route's buckets since `since`."""
    data = prom.api(ops, "/api/v1/query_exemplars", query=f'{exemplars.NAME}_bucket{{route="{route}"}}',
                    start=f"{since:.3f}", end=f"{time.time() + 60:.3f}")
    found = {}
    for series in data:
        for ex in series["exemplars"]:
            value = float(ex["value"])
            # In the bucket it fell in (at most its bound), under the replica's application.
            assert value <= float(series["seriesLabels"]["le"]), (ex, series["seriesLabels"])
            assert series["seriesLabels"].get("application"), series["seriesLabels"]
            found[ex["labels"]["trace_id"]] = value
    return found


@pytest.mark.parametrize(("path", "body"), [
    ("/classify", {"text": "Exemplars lead to traces."}),
    ("/embed", {"text": ["one", "two"]}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}),
])
def test_a_sampled_request_is_its_buckets_exemplar(live_stack: OpsConfig, http: httpx.Client, model_id: str,
                                                  path: str, body: dict[str, Any]) -> None:
    if path.startswith("/v1/"):
        body = {**body, "model": model_id}
    since = time.time() - 1
    before = count(live_stack, path)
    unsampled = post(http, path, body, sampled=False)
    # Scraped before the sampled one is sent: were it kept as an exemplar, no later one could replace it.
    assert eventually(lambda: count(live_stack, path) > before, timeout_s=60), f"{path} was not counted"
    sampled = post(http, path, body, sampled=True)
    found = eventually(lambda: (s := stored(live_stack, path, since)) and sampled in s and s, timeout_s=60)
    assert found, f"no exemplar for trace {sampled} on {path}: {stored(live_stack, path, since)}"
    assert unsampled not in found
    assert found[sampled] > 0
    assert eventually(lambda: load_trace(sampled, trace_dir()), timeout_s=30), "the exemplar leads nowhere"
