"""Sampling as the stack runs it, in process: Serve's ParentBasedTraceIdRatio at a low ratio.

Ray's own tracing helpers (ray.serve._private.tracing_utils) drive the proxy -> router -> replica hops
here, so these tests pin the Serve behaviour we rely on: a client's sampled traceparent is kept at
ratio 0, and an unsampled request gets no current span in the replica (request_trace's fallback).
"""

from __future__ import annotations

import asyncio
import contextvars
import re
import secrets
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry import context, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from ray.serve._private import tracing_utils as serve_tracing

from stack.serving.observability import request_observer, tracing
from stack.serving.observability.request_observer import RequestObserver

HEX32 = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Serve's sampler at ratio 0 in a provider of our own (the global one can be set only once),
    used by Ray's tracing helpers and by tracing.span alike; what it records lands in the exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBasedTraceIdRatio(0))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(serve_tracing, "_tracing_enabled", True)
    monkeypatch.setattr(serve_tracing, "_tracer", provider.get_tracer(serve_tracing.__name__))
    monkeypatch.setattr(tracing, "tracer", lambda: provider.get_tracer("serveops"))
    yield exporter
    provider.shutdown()


def isolated(fn: Callable[[], Any]) -> Any:
    # Serve's TraceContextManager attaches contexts it never detaches: keep them out of other tests.
    return contextvars.copy_context().run(fn)


def traceparent(trace_id: str, sampled: bool) -> str:
    return f"00-{trace_id}-{secrets.token_hex(8)}-{'01' if sampled else '00'}"


def serve_request(headers: dict[str, str], handler: Callable[[], Any]) -> Any:
    """One request through Serve's tracing as the proxy, router and replica do it; handler runs as the
    user code, in the replica's context."""
    def hops() -> Any:
        # proxy_request_response.py: populate_tracing_context, from the traceparent header alone.
        if "traceparent" in headers:
            serve_tracing.set_trace_context(serve_tracing.extract_propagated_context(
                {"traceparent": headers["traceparent"]}))
        with serve_tracing.TraceContextManager("proxy_http_request"):
            # router.py: assign_request propagates only while a span records.
            with serve_tracing.TraceContextManager("route_to_replica"):
                recording = serve_tracing.is_span_recording()
                sent = serve_tracing.create_propagated_context() if recording else None

        def replica() -> Any:  # another process: a fresh context
            received = serve_tracing.extract_propagated_context(sent)
            with serve_tracing.TraceContextManager("replica_handle_request", trace_context=received):
                return handler()

        return contextvars.Context().run(replica)

    return isolated(hops)


def test_sampled_traceparent_is_kept_at_ratio_zero(exported: InMemorySpanExporter) -> None:
    client_trace = secrets.token_hex(16)

    def user_code() -> str | None:
        with tracing.span("pipeline.classify"), tracing.span("embed.batch"):
            return tracing.current_trace_id()

    seen = serve_request({"traceparent": traceparent(client_trace, sampled=True)}, user_code)
    spans = exported.get_finished_spans()
    assert seen == client_trace
    assert [s.name for s in spans] == ["route_to_replica", "proxy_http_request", "embed.batch",
                                       "pipeline.classify", "replica_handle_request"]
    assert {format(s.context.trace_id, "032x") for s in spans} == {client_trace}
    by_name = {s.name: s for s in spans}
    assert by_name["replica_handle_request"].parent.span_id == by_name["route_to_replica"].context.span_id
    assert by_name["pipeline.classify"].parent.span_id == by_name["replica_handle_request"].context.span_id


def test_unsampled_spans_have_a_trace_id(exported: InMemorySpanExporter) -> None:
    def user_code() -> tuple[str | None, bool]:
        with tracing.span("pipeline.classify") as current:
            return tracing.current_trace_id(), current.is_recording()

    trace_id, recording = isolated(user_code)
    assert trace_id and HEX32.match(trace_id) and not recording
    assert exported.get_finished_spans() == ()


def test_serve_makes_no_unsampled_span_current(exported: InMemorySpanExporter) -> None:
    """Why request_trace has a fallback: Serve's replica span, unsampled, is current nowhere."""
    assert serve_request({}, tracing.current_trace_id) is None
    assert exported.get_finished_spans() == ()


def observe(headers: list[tuple[bytes, bytes]], app: Any, parent: context.Context | None = None) -> dict:
    """The response headers of one request through RequestObserver around app."""
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    async def call() -> None:
        if parent is not None:
            context.attach(parent)  # as Serve leaves its replica span current; this task's copy only
        scope = {"type": "http", "path": "/classify", "headers": headers, "state": {}}
        await RequestObserver(app)(scope, receive, send)

    asyncio.run(call())
    return dict(sent[0]["headers"])


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Callable[[], Any]:
    """An app that opens one of our spans and says which trace it ran in (in x-seen)."""
    counted = SimpleNamespace(requests=SimpleNamespace(inc=lambda tags=None: None))
    monkeypatch.setattr(request_observer, "metrics", lambda: counted)

    async def inner(scope: dict, receive: Any, send: Any) -> None:
        with tracing.span("pipeline.classify"):
            seen = tracing.current_trace_id() or ""
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-seen", seen.encode())]})
        await send({"type": "http.response.body", "body": b"{}"})

    return inner


def test_unsampled_request_gets_a_trace_id_and_no_stray_spans(exported, app) -> None:
    headers = observe([], app)
    trace_id = headers[tracing.TRACE_HEADER.encode()].decode()
    assert HEX32.match(trace_id) and trace_id != "0" * 32
    assert headers[b"x-seen"].decode() == trace_id  # our span ran in that trace, unrecorded
    assert exported.get_finished_spans() == ()
    assert observe([], app)[tracing.TRACE_HEADER.encode()].decode() != trace_id


def test_unsampled_traceparent_keeps_the_clients_trace_id(exported, app) -> None:
    client_trace = secrets.token_hex(16)
    header = (b"traceparent", traceparent(client_trace, sampled=False).encode())
    assert observe([header], app)[tracing.TRACE_HEADER.encode()].decode() == client_trace
    assert exported.get_finished_spans() == ()
    # Malformed or not UTF-8: a new id, no error.
    for bad in (b"00-zz", b"\xff\xfe"):
        assert HEX32.match(observe([(b"traceparent", bad)], app)[tracing.TRACE_HEADER.encode()].decode())


def test_sampled_request_reports_serves_trace(exported, app) -> None:
    client_trace = secrets.token_hex(16)
    carrier = {"traceparent": traceparent(client_trace, sampled=True)}
    replica = trace.set_span_in_context(tracing.tracer().start_span(
        "replica_handle_request", context=TraceContextTextMapPropagator().extract(carrier)))
    headers = observe([], app, parent=replica)
    assert headers[tracing.TRACE_HEADER.encode()].decode() == client_trace == headers[b"x-seen"].decode()
    assert [s.name for s in exported.get_finished_spans()] == ["pipeline.classify"]


def test_the_slowest_sampled_requests_to_a_route_lead_to_their_traces(tmp_path) -> None:
    """No exemplars through Ray: a slow bucket leads to a trace through the sink (stack.tools.traces)."""
    import json as _json

    from stack.tools.traces import slowest

    def spans(tid: str, route: str, ms: float) -> list[dict]:
        return [{"trace_id": tid, "span_id": "a" * 16, "parent_span_id": None, "name": "proxy_http_request",
                 "duration_ms": ms, "attributes": {}},
                {"trace_id": tid, "span_id": "b" * 16, "parent_span_id": "a" * 16, "name": "route_to_replica",
                 "duration_ms": ms - 5, "attributes": {"route": route}}]

    records = [*spans("1" * 32, "/classify", 1200), *spans("2" * 32, "/classify", 300),
               *spans("3" * 32, "/embed", 2000)]
    (tmp_path / "spans-1.jsonl").write_text("".join(_json.dumps(r) + "\n" for r in records))
    assert slowest(tmp_path, "/classify") == [("1" * 32, 1200, "proxy_http_request"),
                                              ("2" * 32, 300, "proxy_http_request")]
    assert slowest(tmp_path, "/classify", over_ms=1000) == [("1" * 32, 1200, "proxy_http_request")]
    assert slowest(tmp_path, "/predict") == []  # the route filter holds: /embed's 2 s trace is not listed


class LatencyStub:
    def __init__(self) -> None:
        self.seen: list[tuple[str, float, str | None]] = []

    def observe(self, route: str, value_ms: float, trace_id: str | None) -> None:
        self.seen.append((route, value_ms, trace_id))


@pytest.fixture
def latency(monkeypatch: pytest.MonkeyPatch) -> LatencyStub:
    from stack.serving.observability import exemplars

    stub = LatencyStub()
    monkeypatch.setattr(exemplars, "recorder", lambda: stub)
    return stub


def test_a_sampled_requests_latency_carries_its_trace_id(exported, app, latency) -> None:
    """The exemplar: a slow bucket of serveops_request_latency_ms leads to this trace."""
    client_trace = secrets.token_hex(16)
    carrier = {"traceparent": traceparent(client_trace, sampled=True)}
    replica = trace.set_span_in_context(tracing.tracer().start_span(
        "replica_handle_request", context=TraceContextTextMapPropagator().extract(carrier)))
    observe([], app, parent=replica)
    [(route, value_ms, trace_id)] = latency.seen
    assert (route, trace_id) == ("/classify", client_trace) and value_ms > 0


def test_an_unsampled_requests_latency_is_counted_without_an_exemplar(exported, app, latency) -> None:
    """Its id would lead to no spans."""
    header = (b"traceparent", traceparent(secrets.token_hex(16), sampled=False).encode())
    observe([header], app)
    observe([], app)
    assert [(r, t) for r, _, t in latency.seen] == [("/classify", None), ("/classify", None)]
