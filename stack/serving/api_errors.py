"""One error contract for every route: a 4xx with a JSON body naming the field and the problem.

The body has OpenAI's shape, so the LLM routes and ours answer alike:
    {"error": {"message": "...", "type": "invalid_request_error", "param": "text", "code": 422}}
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BODY_METHODS = {"POST", "PUT", "PATCH"}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: int


class ErrorBody(BaseModel):
    error: ErrorDetail


# For each route's OpenAPI entry, so the spec shows the error body clients really get.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Malformed JSON or a bad header"},
    404: {"model": ErrorBody, "description": "Unknown model or tenant"},
    413: {"model": ErrorBody, "description": "Body over the size limit"},
    415: {"model": ErrorBody, "description": "Content-Type is not application/json"},
    422: {"model": ErrorBody, "description": "A field is missing, extra, of the wrong type or out of range"},
}


def mark_error(scope: Scope, error_class: str) -> None:
    """Say why a request failed, for the request observer's serveops_requests_total{error_class}.

    error_class is one of our error kinds or a pydantic error type: a fixed set, never user input.
    """
    scope.setdefault("state", {})["error_class"] = error_class


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind


def error_body(status: int, message: str, param: str | None = None,
               kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def error_response(status: int, message: str, param: str | None = None,
                   kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse(error_body(status, message, param, kind), status_code=status)


# Pydantic puts union-branch tags into an error's loc ("str", "function-after[...]", a model class name);
# they are not field names, so a param keeps only ints and snake_case names that are not type tags.
_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "bytes",
              "body", "header", "query", "path", "cookie"}


def field_path(loc: tuple[Any, ...] | list[Any]) -> str | None:
    """("body", "messages", 0, "content", "str") -> "messages[0].content"."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).isidentifier() and str(part).islower() and part not in _TYPE_TAGS:
            out += f".{part}" if out else str(part)
    return out or None


def pydantic_error_message(errors: list[Any]) -> tuple[str, str | None]:
    """The first error as (message, param), with a count of the rest."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    param = field_path(tuple(first.get("loc", ())))
    message = f"{param}: {first['msg']}" if param else first["msg"]
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return message, param


def validation_response(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if errors and errors[0].get("type") == "json_invalid":
        detail = errors[0].get("ctx", {}).get("error", errors[0]["msg"])
        return error_response(400, f"malformed JSON: {detail}", kind="invalid_json")
    return error_response(422, *pydantic_error_message(list(errors)))


# Headers whose values Serve's proxy or ray.serve.llm's ingress decode as UTF-8, strictly: one byte that
# is not UTF-8 there is an uncaught UnicodeDecodeError, a plain-text 500 (ray/serve/_private/proxy.py
# setup_request_context_and_handle, http_util.parse_request_timeout_header,
# proxy_request_response.populate_tracing_context; ray.serve.llm's SetRequestIdMiddleware). Names match
# as Serve matches the multiplexed model id: case-insensitive, "-" and "_" alike.
DECODED_HEADERS = ("serve_multiplexed_model_id", "x-session-id", "x-request-id", "x-request-timeout-seconds",
                   "traceparent")
_DECODED = {name.replace("-", "_"): name for name in DECODED_HEADERS}


def bad_header(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, str] | None:
    """(param, message) for the first header that must be ASCII and is not, else None.

    ASCII rather than UTF-8: every value these headers take (ids, numbers, W3C trace context) is ASCII,
    so a byte above 0x7f is a client bug, whatever the encoding.
    """
    for raw_name, value in headers:
        if not raw_name.isascii():
            return None, "header names must be ASCII"
        name = _DECODED.get(raw_name.decode().lower().replace("-", "_"))
        if name is not None and not value.isascii():
            return name, f"header {name}: the value must be ASCII"
    return None


class HeaderGuard:
    """Pure ASGI middleware: a non-ASCII value in a header that Serve or the app decodes is a 400 naming
    it, not a 500. On every app, and on Serve's proxy (stack.serving.proxy_guard), which decodes some of
    them before a replica sees the request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = bad_header(scope["headers"]) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        mark_error(scope, "invalid_header")
        await error_response(400, found[1], found[0], "invalid_header")(scope, receive, send)


class JsonBodyGuard:
    """Pure ASGI middleware: a body-carrying request must be JSON (else 415) and fit the limit (else 413).

    Pure ASGI rather than BaseHTTPMiddleware so streamed responses pass through untouched. The body is
    read here, counted as it arrives: a chunked body (no Content-Length) past the limit is refused as
    soon as it passes it, and the rest is never read. Refusing from inside the app's receive instead
    does not work: FastAPI turns any error while reading the body into a 400.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app, self.max_body_bytes = app, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            shown = media_type[:100].encode("ascii", "backslashreplace").decode() or "none"
            mark_error(scope, "unsupported_media_type")
            await error_response(415, f"Content-Type must be application/json, got {shown}",
                                 "Content-Type", "unsupported_media_type")(scope, receive, send)
            return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(scope, receive, send)
            return
        first = await self._read_body(receive)
        if first is None:
            await self._too_large(scope, receive, send)
            return
        await self.app(scope, _replay(first, receive), send)

    async def _read_body(self, receive: Receive) -> Message | None:
        """The whole body as one http.request message; None once it passes the limit.

        A disconnect mid-body is handed on as it came, so the app sees what it would have seen.
        """
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        mark_error(scope, "request_too_large")
        await error_response(413, f"request body exceeds {self.max_body_bytes} bytes", None,
                             "request_too_large")(scope, receive, send)


def _replay(first: Message, receive: Receive) -> Receive:
    """Receive that yields the message already read, then the client's own (a disconnect, later)."""
    pending: list[Message] = [first]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


def install(app: FastAPI, max_body_bytes: int) -> FastAPI:
    """Give a FastAPI app the error contract: JSON 4xx for bad input, never a 500 for it."""

    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        mark_error(request.scope, exc.kind)
        return error_response(exc.status, exc.message, exc.param, exc.kind)

    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        mark_error(request.scope, str(errors[0].get("type", "invalid")) if errors else "invalid")
        return validation_response(exc)

    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found" if exc.status_code == 404 else "invalid_request_error"
        mark_error(request.scope, f"http_{exc.status_code}")
        return error_response(exc.status_code, str(exc.detail), None, kind)

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_middleware(JsonBodyGuard, max_body_bytes=max_body_bytes)
    # Outside the body guard: a bad header is refused before any of the body is read.
    app.add_middleware(HeaderGuard)
    return app
