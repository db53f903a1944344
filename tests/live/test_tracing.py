"""One /classify request carrying a client traceparent gives one trace: Ray's spans and ours, linked.

The stack samples observability.tracing_sampling_ratio of requests (0.01 by default), so every request
here that expects spans sends a sampled traceparent (flags 01), which Serve keeps at any ratio.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys

import httpx
import pytest

from stack import ROOT, levers
from stack.local import instrumentation, serve_deploy
from stack.local.cluster import RAY_LOGS
from stack.local.ray_head import trace_dir
from stack.polling import eventually
from stack.serving.observability.tracing import TRACE_HEADER
from stack.tools.traces import load_trace

pytestmark = pytest.mark.live


def ingress_span(deployment: str) -> str:
    """The span the request path opens first: Serve's proxy's, or, where HAProxy sends each request
    straight to an ingress replica (the haproxy_ingress lever), that replica's (Serve names it
    "<kind> <deployment> ...")."""
    if "haproxy_ingress" in levers.parse(instrumentation.running_levers()):
        return f"replica_handle_request {deployment} "
    return "proxy_http_request"


def traced_post(http: httpx.Client, path: str, body: dict) -> tuple[str, str, httpx.Response]:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    r = http.post(path, json=body, headers={"traceparent": f"00-{trace_id}-{parent}-01"})
    assert r.status_code == 200, r.text
    return trace_id, parent, r


def spans_of(trace_id: str, want: set[str], timeout_s: float = 30) -> list[dict]:
    """The trace's spans, once a span whose name starts with each wanted prefix is in the sink."""
    def complete() -> list[dict]:
        spans = load_trace(trace_id, trace_dir())
        names = [s["name"] for s in spans]
        return spans if all(any(n.startswith(w) for n in names) for w in want) else []

    return eventually(complete, timeout_s) or load_trace(trace_id, trace_dir())


def test_classify_trace(http: httpx.Client) -> None:
    trace_id, client_span, r = traced_post(http, "/classify", {"text": "Tracing works nicely."})
    assert r.headers[TRACE_HEADER] == trace_id
    ours = {"pipeline.preprocess", "pipeline.classify", "pipeline.postprocess", "embed.batch"}
    # The ingress's span ends, and is written, after the response: wait for it too.
    spans = spans_of(trace_id, ours | {ingress_span("Pipeline")})
    names = {s["name"] for s in spans}
    assert ours <= names, names
    assert len(spans) >= 4
    ids = {s["span_id"] for s in spans}
    for s in spans:  # every parent is in the trace, or is the client's own span
        assert s["parent_span_id"] in ids or s["parent_span_id"] == client_span, s
    by_name = {s["name"]: s for s in spans}
    batch = by_name["embed.batch"]
    assert batch["attributes"]["batch.size"] >= 1
    # embed.batch sits under pipeline.classify: walk up the parents.
    parents = {s["span_id"]: s["parent_span_id"] for s in spans}
    node, chain = batch["span_id"], []
    while node in parents:
        node = parents[node]
        chain.append(node)
    assert by_name["pipeline.classify"]["span_id"] in chain


def test_sampled_traceparent_gets_the_whole_tree_at_the_stacks_ratio(http: httpx.Client, live_stack) -> None:
    """Whatever the ratio: the ingress's span under the client's, routing, a replica span per hop, ours."""
    ratio = live_stack.observability.tracing_sampling_ratio
    trace_id, client_span, r = traced_post(http, "/classify", {"text": "Sampled by the client."})
    assert r.headers[TRACE_HEADER] == trace_id
    # Serve names its spans "<kind> <deployment> ..." once it knows them.
    hops = ("Pipeline", "Preprocessor", "Classifier", "Embedder", "Postprocessor")
    first = ingress_span("Pipeline")
    want = {first, "route_to_replica", *(f"replica_handle_request {d} " for d in hops),
            "pipeline.preprocess", "pipeline.classify", "pipeline.postprocess", "embed.batch"}

    def missing(spans: list[dict]) -> set[str]:
        return {w for w in want if not any(s["name"].startswith(w) for s in spans)}

    def whole() -> list[dict]:
        # Each process flushes on its own: wait until every parent but the client's is in too.
        spans = load_trace(trace_id, trace_dir())
        ids = {s["span_id"] for s in spans} | {client_span}
        return spans if not missing(spans) and all(s["parent_span_id"] in ids for s in spans) else []

    spans = eventually(whole, 30) or load_trace(trace_id, trace_dir())
    assert not missing(spans), f"ratio {ratio}: no {sorted(missing(spans))} in {[s['name'] for s in spans]}"
    roots = [s for s in spans if s["parent_span_id"] == client_span]
    assert len(roots) == 1 and roots[0]["name"].startswith(first), roots
    ids = {s["span_id"] for s in spans}
    assert all(s["parent_span_id"] in ids for s in spans if s not in roots), spans


def test_every_response_names_a_trace(http: httpx.Client) -> None:
    """Sampled or not, every response has x-trace-id; a client's unsampled traceparent keeps its id."""
    ids = []
    for _ in range(2):
        r = http.post("/classify", json={"text": "No traceparent."})
        assert r.status_code == 200, r.text
        ids.append(r.headers[TRACE_HEADER])
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) and i != "0" * 32 for i in ids) and ids[0] != ids[1], ids
    client_trace = secrets.token_hex(16)
    r = http.post("/classify", json={"text": "Not sampled by the client."},
                  headers={"traceparent": f"00-{client_trace}-{secrets.token_hex(8)}-00"})
    assert r.status_code == 200, r.text
    named = r.headers[TRACE_HEADER]
    # Serve routes an unsampled request on without its context and samples the replica's root again,
    # at the ratio: then the response names that new, recorded trace instead.
    assert named == client_trace or eventually(lambda: load_trace(named, trace_dir()), 30), named


def test_llm_request_span(http: httpx.Client, model_id: str) -> None:
    body = {"model": model_id, "prompt": "hi", "max_tokens": 3}
    trace_id, _, _ = traced_post(http, "/v1/completions", body)
    spans = spans_of(trace_id, {"llm.request"})
    llm = [s for s in spans if s["name"] == "llm.request"]
    assert llm and llm[0]["attributes"]["llm.completion_tokens"] == 3


def test_make_traces_prints_the_trace(http: httpx.Client) -> None:
    trace_id, _, _ = traced_post(http, "/classify", {"text": "Print me."})
    spans_of(trace_id, {"pipeline.postprocess"})
    out = subprocess.run([sys.executable, "-m", "stack.tools.traces", trace_id], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) >= 4 and all(line.startswith(trace_id) for line in lines)
    assert any("pipeline.classify" in line for line in lines)


def test_unknown_trace_fails() -> None:
    out = subprocess.run([sys.executable, "-m", "stack.tools.traces", "0" * 32], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1


def test_request_logs_carry_request_and_trace_ids(http: httpx.Client, live_stack) -> None:
    trace_id, _, r = traced_post(http, "/classify", {"text": "Log me."})
    request_id = r.headers["x-request-id"]
    details = serve_deploy.details(live_stack.listen.dashboard_url)
    replica = details["applications"]["classify"]["deployments"]["Pipeline"]["replicas"][0]
    # Serve gives the path relative to the session's logs directory.
    log_path = str(RAY_LOGS) + replica["log_file_path"]
    lines = eventually(lambda: [json.loads(line) for line in open(log_path) if request_id in line], 30)
    assert lines, f"no log line with request_id {request_id} in {log_path}"
    for line in lines:
        assert line["request_id"] == request_id and line["trace_id"] == trace_id
