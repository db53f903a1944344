"""ASGI middleware on every serveops app: count each request's outcome and latency, return its trace id."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stack.serving.observability import exemplars
from stack.serving.observability.metrics import metrics, outcome, route_label
from stack.serving.observability.tracing import TRACE_HEADER, request_trace, sampled


class RequestObserver:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.latency = exemplars.recorder()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan" and self.latency is not None:
                self.latency.start()  # Serve runs the lifespan as the replica starts
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # The same dict travels in every copy of the scope, so api_errors.mark_error can fill it.
        state = scope.setdefault("state", {})
        status = 500
        # Every request gets an id, sampled or not; only a sampled one has spans (tracing.request_trace).
        with request_trace(scope.get("headers", ())) as trace_id:

            async def observed_send(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    header = (TRACE_HEADER.encode(), trace_id.encode())
                    message["headers"] = [*message.get("headers", []), header]
                await send(message)

            try:
                await self.app(scope, receive, observed_send)
            finally:
                route = route_label(scope["path"])
                error_class = state.get("error_class") or ("none" if status < 400 else f"http_{status}")
                metrics().requests.inc(tags={"route": route, "outcome": outcome(status),
                                             "error_class": error_class})
                if self.latency is not None:
                    # Only a sampled trace has spans to find: an unsampled id would lead nowhere.
                    self.latency.observe(route, (time.perf_counter() - started) * 1000,
                                         trace_id if sampled() else None)
