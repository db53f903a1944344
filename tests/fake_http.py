"""A stand-in HTTP service for unit tests: a real server on 127.0.0.1 that answers GETs by path and
records what it was sent (path, headers), so a test sees exactly what a client put on the wire."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

# path -> handler(query) -> (status, JSON body)
Route = Callable[[dict[str, list[str]]], tuple[int, Any]]


@dataclass
class Service:
    url: str
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (path, headers) per request

    def headers_of(self, path: str) -> list[dict[str, str]]:
        return [h for p, h in self.seen if p == path]


@contextmanager
def serve(routes: dict[str, Route]) -> Iterator[Service]:
    service = Service("")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            service.seen.append((url.path, {k.lower(): v for k, v in self.headers.items()}))
            route = routes.get(url.path)
            code, body = route(parse_qs(url.query)) if route else (404, {"error": f"no route {url.path}"})
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    service.url = f"http://127.0.0.1:{server.server_port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield service
    finally:
        server.shutdown()
        server.server_close()
