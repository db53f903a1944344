"""What Serve's proxy does with request headers before any replica sees them, and the guard in front of it.

The stand-in proxy is Serve's own code: its RequestIdMiddleware, its middleware stacking and validation
of the proxy callback, and the header reads of HTTPProxy.setup_request_context_and_handle,
parse_request_timeout_header and ASGIProxyRequest.populate_tracing_context; only routing to a replica
is left out. Those reads decode as strict UTF-8, so one byte that is not UTF-8 raises, and uvicorn
answers a plain-text 500. stack.serving.proxy_guard answers a 400 in the error contract instead.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ray.serve._private import http_util, proxy_request_response
from ray.serve._private.proxy import HTTPProxy
from ray.serve._private.proxy_request_response import ASGIProxyRequest
from ray.serve._private.utils import call_function_from_import_path
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from loadtests.bench.openapi_fuzz import HEADER_BYTES, SERVE_HEADERS, spelled, violations
from stack.serving import proxy_guard
from tests.isolated_replica import Answer, asgi_request


class Handle:
    def options(self, **_: Any) -> Handle:
        return self


async def serve_header_reads(scope: Scope, receive: Receive, send: Send) -> None:
    """The header reads Serve's proxy makes for every request it routes, then a 200."""
    request = ASGIProxyRequest(scope, receive, send)
    request.populate_tracing_context()
    HTTPProxy.setup_request_context_and_handle(
        SimpleNamespace(), app_name="predict", handle=Handle(), route="/predict", proxy_request=request,
        internal_request_id="fuzz")
    http_util.parse_request_timeout_header(dict(request.headers), None)
    await JSONResponse({"routed": True})(scope, receive, send)


@pytest.fixture(autouse=True)
def tracing_on(monkeypatch: pytest.MonkeyPatch) -> None:
    # The stack traces (stack.local.ray_head sets the exporter), so the proxy reads traceparent.
    monkeypatch.setattr(proxy_request_response, "is_tracing_enabled", lambda: True)
    monkeypatch.setattr(proxy_request_response, "set_trace_context", lambda context: None)


def proxy(guarded: bool) -> Any:
    """Serve's proxy app as start_asgi_http_server stacks it, with the callback's middlewares or none."""
    # What Serve's configure_http_middlewares does with RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH.
    loaded = call_function_from_import_path(proxy_guard.IMPORT_PATH) if guarded else []
    middlewares = http_util.validate_http_proxy_callback_return(loaded)
    return http_util._apply_middlewares(serve_header_reads, middlewares)


def get(app: Any, headers: list[tuple[bytes, bytes]]) -> Answer:
    # Raw ASGI: a TestClient would re-encode b"\xff" as UTF-8 before the app saw it.
    return asgi_request(app, "GET", "/predict", headers)


@pytest.mark.parametrize("header", SERVE_HEADERS)
def test_serves_proxy_raises_on_a_header_that_is_not_utf8(header: str) -> None:
    with pytest.raises(UnicodeDecodeError):
        get(proxy(guarded=False), [(header.encode(), b"\xff")])
    assert get(proxy(guarded=False), [(header.encode(), "é".encode())]).status == 200  # UTF-8 passes


def test_serves_proxy_routes_good_headers() -> None:
    headers = [(b"serve_multiplexed_model_id", b"acme"), (b"x-request-id", b"abc"),
               (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]
    for guarded in (False, True):
        assert json.loads(get(proxy(guarded), headers).body) == {"routed": True}


@settings(max_examples=150, database=None, deadline=None)
@given(name=st.sampled_from(SERVE_HEADERS).flatmap(spelled),
       value=st.lists(st.sampled_from(HEADER_BYTES), max_size=24).map(bytes))
def test_the_guarded_proxy_never_raises_on_header_bytes(name: str, value: bytes) -> None:
    answer = get(proxy(guarded=True), [(name.encode(), value)])
    assert not violations(answer.status, answer.content_type, answer.body)
    if value.isascii():
        assert json.loads(answer.body) == {"routed": True}
    else:
        canonical = next(h for h in SERVE_HEADERS if h.replace("-", "_") == name.lower().replace("-", "_"))
        assert answer.status == 400 and json.loads(answer.body)["error"]["param"] == canonical
