"""`make traces TRACE_ID=<id>`: one trace's spans from the local JSON-lines sink, as a tree.
`make traces SLOWEST=/classify [OVER_MS=1000]`: the slowest sampled requests to a route, their trace ids.

Each line: trace id, indentation for depth, span name, duration, span and parent ids, attributes.
The second form finds a trace for a slow latency bucket that has no exemplar (no sampled request fell in
it while serveops_request_latency_ms was scraped): the sink is searched for sampled requests that slow.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from stack.local.ray_head import trace_dir


def load_trace(trace_id: str, directory: Path) -> list[dict[str, Any]]:
    spans = []
    for path in sorted(directory.glob("*.jsonl")):
        with path.open() as lines:
            for line in lines:
                if trace_id in line:
                    record = json.loads(line)
                    if record["trace_id"] == trace_id:
                        spans.append(record)
    return spans


def as_tree(spans: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """Depth-first, children by start time; a span whose parent is not in the sink is a root."""
    ids = {s["span_id"] for s in spans}
    children: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for s in spans:
        children[s["parent_span_id"] if s["parent_span_id"] in ids else None].append(s)
    ordered: list[tuple[int, dict[str, Any]]] = []

    def walk(parent: str | None, depth: int) -> None:
        for s in sorted(children[parent], key=lambda s: s["start_unix_ns"]):
            ordered.append((depth, s))
            walk(s["span_id"], depth + 1)

    walk(None, 0)
    return ordered


# Ray repeats these on every span; the tree already says what they say.
QUIET = ("resource.", "rpc.", "is_", "request_method", "request_route_path", "request_type", "call_method",
         "http.method", "route")


def render(depth: int, s: dict[str, Any]) -> str:
    attrs = " ".join(f"{k}={v}" for k, v in sorted(s["attributes"].items())
                     if v not in ("", None) and not k.startswith(QUIET))
    return (f"{s['trace_id']} {'  ' * depth}{s['name']} {s['duration_ms']:.1f}ms "
            f"span={s['span_id']} parent={s['parent_span_id'] or '-'} {attrs}").rstrip()


def slowest(directory: Path, route: str, over_ms: float = 0, limit: int = 10) -> list[tuple[str, float, str]]:
    """(trace id, duration ms, root span name) of the sampled requests to route that took over_ms,
    slowest first. A request's duration is its root span's (the proxy's, or the replica's where no
    proxy traced it); its route is the one Serve's routing span records."""
    roots: dict[str, tuple[float, str]] = {}
    routes: dict[str, str] = {}
    for path in sorted(directory.glob("*.jsonl")):
        with path.open() as lines:
            for line in lines:
                s = json.loads(line)
                tid = s["trace_id"]
                if s["attributes"].get("route"):
                    routes.setdefault(tid, s["attributes"]["route"])
                if s["parent_span_id"] is None and s["duration_ms"] > roots.get(tid, (-1.0, ""))[0]:
                    roots[tid] = (s["duration_ms"], s["name"])
    found = [(tid, ms, name) for tid, (ms, name) in roots.items()
             if routes.get(tid) == route and ms >= over_ms]
    return sorted(found, key=lambda t: -t[1])[:limit]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("trace_id", nargs="?", help="32 hex digits, e.g. from a response's x-trace-id header")
    parser.add_argument("--dir", type=Path, default=None, help="span sink directory")
    parser.add_argument("--slowest", metavar="ROUTE", help="list the slowest sampled requests to ROUTE")
    parser.add_argument("--over-ms", type=float, default=0, help="with --slowest: only those over this")
    args = parser.parse_args()
    directory = args.dir or trace_dir()
    if args.slowest:
        found = slowest(directory, args.slowest, args.over_ms)
        if not found:
            print(f"no sampled request to {args.slowest} over {args.over_ms:g} ms under {directory}",
                  file=sys.stderr)
            return 1
        for tid, ms, name in found:
            print(f"{tid} {ms:.1f}ms {name}")
        return 0
    if not args.trace_id:
        parser.error("give a trace id, or --slowest ROUTE")
    trace_id = args.trace_id.strip().lower()
    spans = load_trace(trace_id, directory)
    if not spans:
        print(f"no spans for trace {trace_id} under {directory}", file=sys.stderr)
        return 1
    for depth, s in as_tree(spans):
        print(render(depth, s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
