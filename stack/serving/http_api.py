"""FastAPI apps: the error contract and request observer every app gets, and POST at an app's own prefix."""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from stack.serving import direct_ingress
from stack.serving.api_errors import error_response, install, mark_error
from stack.serving.faults import FAULT_KIND, FaultInjected, FaultInjector
from stack.serving.observability import switch
from stack.serving.observability.request_observer import RequestObserver
from stack.serving.settings import ApiLimits, FaultSettings

# At import, so in every replica process that unpickles an app built here, before its first request.
direct_ingress.name_root_route()


class SlashAtPrefix:
    """Serve mounts an app under its route prefix, so `/embed` reaches it as the empty path, which
    no FastAPI route can match (Serve's router refuses ""); treat it as `/embed/`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            root, path = scope.get("root_path", ""), scope["path"]
            if (path[len(root):] if root and path.startswith(root) else path) == "":
                scope = {**scope, "path": path + "/", "raw_path": (path + "/").encode()}
        await self.app(scope, receive, send)


class FaultGate:
    """Pure ASGI middleware: the injector's faults on every request to the app, before any of its
    checks; an injected error is answered with the error contract's body."""

    def __init__(self, app: ASGIApp, injector: FaultInjector) -> None:
        self.app, self.injector = app, injector

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                await self.injector.apply()
            except FaultInjected as fault:
                await fault_response(scope, fault)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def fault_response(scope: Scope, fault: FaultInjected) -> JSONResponse:
    # fault.message, not str(fault): Ray re-raises a handle's error with its traceback as str().
    mark_error(scope, FAULT_KIND)
    return error_response(fault.status, fault.message, None, FAULT_KIND)


def add_fault_hook(app: FastAPI, faults: FaultSettings) -> None:
    """The gate, and the mapping of a fault raised below the ingress (a handle's call) to its answer."""

    async def on_fault(request: Request, exc: FaultInjected) -> JSONResponse:
        return fault_response(request.scope, exc)

    app.add_exception_handler(FaultInjected, on_fault)
    app.add_middleware(FaultGate, injector=FaultInjector.from_settings(faults))


def harden(app: FastAPI, limits: ApiLimits, faults: FaultSettings | None = None) -> FastAPI:
    """What every serveops app gets: the error contract with the app's body limit, the fault hook when
    the app's args enable it, then (outermost) the request observer, unless instrumentation is off:
    outside the hook, so serveops_requests_total counts what an injected fault answered."""
    install(app, limits.max_body_bytes)
    if faults is not None:
        add_fault_hook(app, faults)
    if switch.enabled():
        app.add_middleware(RequestObserver)
    return app


def new_api(title: str, limits: ApiLimits, faults: FaultSettings | None = None) -> FastAPI:
    api = harden(FastAPI(title=title, version="1"), limits, faults)
    api.add_middleware(SlashAtPrefix)
    return api
