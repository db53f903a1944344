"""FastAPI apps: the error contract and request observer every app gets, and POST at an app's own prefix."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from stack.serving.api_errors import install
from stack.serving.observability import switch
from stack.serving.observability.request_observer import RequestObserver
from stack.serving.settings import ApiLimits


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


def harden(app: FastAPI, limits: ApiLimits) -> FastAPI:
    """What every serveops app gets: the error contract with the app's body limit, then (outermost)
    the request observer, unless instrumentation is off."""
    install(app, limits.max_body_bytes)
    if switch.enabled():
        app.add_middleware(RequestObserver)
    return app


def new_api(title: str, limits: ApiLimits) -> FastAPI:
    api = harden(FastAPI(title=title, version="1"), limits)
    api.add_middleware(SlashAtPrefix)
    return api
