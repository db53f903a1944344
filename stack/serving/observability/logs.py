"""Put the trace id on every Serve log line a replica writes, beside Ray's request_id.

Serve's JSON formatter writes every non-standard attribute of a log record, so a handler filter
that stamps trace_id and span_id is all it takes. Filters run when a record is handled, inside
the request's context, even though Serve buffers records before writing them.
"""

from __future__ import annotations

import logging

from opentelemetry import trace

SERVE_LOGGER = "ray.serve"


class TraceContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            record.trace_id = format(ctx.trace_id, "032x")
            record.span_id = format(ctx.span_id, "016x")
        return True


def install_trace_log_filter() -> None:
    """Idempotent; call from a replica's constructor, after Serve has configured its logger."""
    for handler in logging.getLogger(SERVE_LOGGER).handlers:
        if not any(isinstance(f, TraceContextFilter) for f in handler.filters):
            handler.addFilter(TraceContextFilter())
