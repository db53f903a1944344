"""A local Alertmanager webhook receiver: appends every notification to a JSON-lines file.

Alertmanager posts to http://127.0.0.1:<port>/alerts; the chaos experiments and tests read the
file to prove that an alert reached the end of the paging path, not just Prometheus.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def handler_for(out: Path) -> type[BaseHTTPRequestHandler]:
    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                payload = json.loads(self.rfile.read(length))
            except (ValueError, OSError):
                self.send_error(400, "body must be JSON")
                return
            with out.open("a") as f:
                f.write(json.dumps({"received_unix": time.time(), "path": self.path, **payload}) + "\n")
            self.send_response(200)
            self.end_headers()

        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok\n")

        def log_message(self, *args) -> None:  # keep the daemon log for errors only
            pass

    return Receiver


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    server = ThreadingHTTPServer((args.host, args.port), handler_for(args.out))
    print(f"alert receiver on http://{args.host}:{args.port}, writing {args.out}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
