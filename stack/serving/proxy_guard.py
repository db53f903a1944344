"""Serve's HTTP proxy callback: the header check of the error contract, in front of the proxy itself.

Serve's proxy decodes serve_multiplexed_model_id, x-session-id, x-request-id, x-request-timeout-seconds
and traceparent as UTF-8 before any replica sees the request; a value that is not UTF-8 raises there,
and uvicorn answers a plain-text 500 that no replica can prevent. Serve wraps the proxy in the Starlette
middlewares this returns when its processes have
RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=stack.serving.proxy_guard:middlewares
(read by each proxy at start, like the tracing settings: the controller's runtime_env env_vars reach it).
"""

from __future__ import annotations

from starlette.middleware import Middleware

from stack.serving.api_errors import HeaderGuard

IMPORT_PATH = "stack.serving.proxy_guard:middlewares"


def middlewares() -> list[Middleware]:
    return [Middleware(HeaderGuard)]
