"""One /classify request carrying a client traceparent gives one trace: Ray's spans and ours, linked."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys

import httpx
import pytest

from stack import ROOT
from stack.local import serve_deploy
from stack.local.cluster import RAY_LOGS
from stack.local.ray_head import trace_dir
from stack.polling import eventually
from stack.serving.observability.tracing import TRACE_HEADER
from stack.tools.traces import load_trace

pytestmark = pytest.mark.live


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
    # The proxy's span ends, and is written, after the response: wait for it too.
    spans = spans_of(trace_id, ours | {"proxy_http_request"})
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
