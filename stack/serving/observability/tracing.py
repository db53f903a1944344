"""Spans: Ray Serve's own (proxy, routing, replica) plus ours, in one OpenTelemetry pipeline.

`make up` sets RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH to span_processors below, so every Serve
process (proxy and replicas) exports through it: a JSON-lines file per process under the trace
directory (the default sink, read by `make traces`), and OTLP when OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
names an endpoint (Tempo, Jaeger). Ray calls span_processors with no arguments, so both come from the
process environment; the endpoint travels in the Serve config (see stack/serve_config.py, tracing_env).
Ray keeps the OpenTelemetry context current while it handles a request, so a span opened with span()
nests under Ray's replica span, and a client's W3C traceparent is honoured.

Sampling is Serve's: ParentBasedTraceIdRatio(RAY_SERVE_TRACING_SAMPLING_RATIO) in every process. The
proxy decides for a request without a sampled traceparent; a sampled one is always kept, at any ratio.
Serve makes an unsampled span current nowhere, so request_trace() gives such a request a root of its
own, unsampled: the request still has a trace id (x-trace-id), and our spans under it stay unrecorded
instead of each starting a trace of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry import context, trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACE_DIR_ENV = "SERVEOPS_TRACE_DIR"
# Whoever turns tracing on sets SERVEOPS_TRACE_DIR too (the local head: .run/traces; a pod: its Ray
# volume); without it, spans land where Ray keeps its own files.
DEFAULT_TRACE_DIR = Path("/tmp/ray/serveops-traces")
# OpenTelemetry's own variable, so a cluster that already sets it for other services exports here too.
OTLP_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
TRACE_HEADER = "x-trace-id"
TRACEPARENT = "traceparent"
EXPORT_DELAY_MS = 500


def span_record(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.get_span_context()
    start, end = span.start_time or 0, span.end_time or 0
    return {
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_span_id": format(span.parent.span_id, "016x") if span.parent else None,
        "name": span.name,
        "kind": span.kind.name,
        "start_unix_ns": start,
        "duration_ms": round((end - start) / 1e6, 3),
        "status": span.status.status_code.name,
        "attributes": {k: v if isinstance(v, str | int | float | bool) else list(v)
                       for k, v in (span.attributes or {}).items()},
        "pid": os.getpid(),
    }


class JsonlSpanExporter(SpanExporter):
    """One JSON object per span per line; line-buffered so `make traces` sees spans at once."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", buffering=1)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(span_record(s)) + "\n" for s in spans)
        with self._lock:
            if self._file.closed:
                return SpanExportResult.FAILURE
            self._file.write(lines)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()


def trace_dir(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get(TRACE_DIR_ENV) or DEFAULT_TRACE_DIR)


def otlp_endpoint(env: Mapping[str, str] = os.environ) -> str | None:
    return env.get(OTLP_ENDPOINT_ENV, "").strip() or None


def span_processors() -> list[SpanProcessor]:
    """Ray Serve's tracing exporter hook: takes no arguments, returns span processors."""
    # Batched off the request path: a synchronous export per span cost the proxy a few % of its CPU.
    # A process killed with SIGKILL loses at most the last half second of spans.
    processors: list[SpanProcessor] = [
        BatchSpanProcessor(JsonlSpanExporter(trace_dir() / f"spans-{os.getpid()}.jsonl"),
                           schedule_delay_millis=EXPORT_DELAY_MS)
    ]
    endpoint = otlp_endpoint()
    if endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processors.append(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return processors


def tracer() -> trace.Tracer:
    return trace.get_tracer("serveops")


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[trace.Span]:
    """A child of whatever span is current; a no-op span when tracing is off."""
    with tracer().start_as_current_span(name, attributes=attributes) as current:
        yield current


def current_trace_id() -> str | None:
    """The current span's trace id, sampled or not: an unsampled (non-recording) span has one too."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


_ids = RandomIdGenerator()
_propagator = TraceContextTextMapPropagator()


def client_trace_id(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The trace id of a valid traceparent among raw ASGI headers, sampled or not."""
    for key, value in headers:
        if key == TRACEPARENT.encode():
            # latin-1 never raises; a malformed value simply extracts as no context.
            carrier = {TRACEPARENT: value.decode("latin-1")}
            ctx = trace.get_current_span(_propagator.extract(carrier)).get_span_context()
            return ctx.trace_id if ctx.is_valid else None
    return None


def unsampled_span(headers: Iterable[tuple[bytes, bytes]]) -> trace.NonRecordingSpan:
    """A root for a request Serve did not sample: the client's trace id if it sent one, else a new one."""
    trace_id = client_trace_id(headers) or _ids.generate_trace_id()
    return trace.NonRecordingSpan(trace.SpanContext(
        trace_id, _ids.generate_span_id(), is_remote=False,
        trace_flags=trace.TraceFlags(trace.TraceFlags.DEFAULT)))


@contextlib.contextmanager
def request_trace(headers: Iterable[tuple[bytes, bytes]]) -> Iterator[str]:
    """The request's trace id, for x-trace-id and the app's log lines, with a span current meanwhile.

    A sampled request has Serve's replica span current: its id. Serve's TraceContextManager makes an
    unsampled span current nowhere, and routes an unsampled request on without its context, so there
    is no span here; an unsampled root of ours stands in. Being unsampled, it keeps the proxy's
    decision: ParentBased drops every span under it, where each span() would otherwise be a new root
    sampled at the ratio, a stray fragment of a trace.
    """
    current = current_trace_id()
    if current is not None:
        yield current
        return
    root = unsampled_span(headers)
    token = context.attach(trace.set_span_in_context(root))
    try:
        yield format(root.get_span_context().trace_id, "032x")
    finally:
        context.detach(token)


def sampled() -> bool:
    """Whether the current span is recorded: its trace id is worth keeping as an exemplar."""
    return trace.get_current_span().get_span_context().trace_flags.sampled
