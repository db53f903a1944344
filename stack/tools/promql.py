"""`serveops promql EXPR`, the runbooks' most common step, on a fast path.

A diagnosis runs it dozens of times, each in a fresh process; through the full CLI each call first
imports the ops config, pydantic and httpx (most of a second idle, seconds beside a busy stack). Here it
needs only the standard library and the Prometheus URL, which runbooks.execute passes its steps as
SERVEOPS_PROMETHEUS_URL. Without that variable the call goes through stack.tools.cli, which reads the
URL from the ops config; both print the same lines.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from stack import targets  # standard library only

URL_ENV = targets.URL_ENV["prometheus"]
# Labels every Ray series carries; they say nothing about the cause.
NOISE_LABELS = {"Component", "NodeAddress", "SessionName", "Version", "WorkerId", "instance", "job",
                "otel_scope_name", "otel_scope_schema_url", "otel_scope_version", "ray_io_cluster"}
# Shown only when the series come from more than one Ray session (a restarted stack's old series).
SESSION_LABEL = "SessionName"


class QueryError(RuntimeError):
    """Prometheus refused the query, or could not be reached."""


def query(base_url: str, expr: str, timeout_s: float = 30) -> list[dict[str, Any]]:
    url = f"{base_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    request = urllib.request.Request(url, headers=targets.headers("prometheus"))
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            return json.load(answer)["data"]["result"]
    except urllib.error.HTTPError as err:  # Prometheus says why it refused (e.g. a parse error)
        try:
            why = json.load(err).get("error", err.reason)
        except ValueError:
            why = err.reason
        raise QueryError(f"Prometheus refused {expr!r}: HTTP {err.code}: {why}") from None
    except OSError as err:
        raise QueryError(f"Prometheus at {base_url} did not answer: {err}") from None


def show(expr: str, result: list[dict[str, Any]]) -> None:
    print(f"query: {expr}")
    if not result:
        print("found: nothing (no series matched)")
        return
    print(f"found: {len(result)} series")
    sessions = {series["metric"].get(SESSION_LABEL) for series in result}
    for series in result:
        metric = series["metric"]
        labels = ", ".join(f"{k}={v}" for k, v in sorted(metric.items()) if k not in NOISE_LABELS)
        if len(sessions) > 1:  # last, so that patterns on the leading labels still match
            labels += f"{', ' if labels else ''}{SESSION_LABEL}={metric.get(SESSION_LABEL, '?')}"
        print(f"  {series['value'][1]:>14}  {labels or '{}'}")


def main(argv: list[str] | None = None) -> int:
    """The `serveops` console script: `promql EXPR` here when the URL is given, all else the full CLI."""
    args = sys.argv[1:] if argv is None else argv
    url = os.environ.get(URL_ENV)
    if url and len(args) == 2 and args[0] == "promql" and not args[1].startswith("-"):
        try:
            show(args[1], query(url, args[1]))
        except (QueryError, targets.TargetError) as err:
            print(f"serveops promql: {err}", file=sys.stderr)
            return 1
        return 0
    from stack.tools import cli
    return cli.main(args)


if __name__ == "__main__":
    sys.exit(main())
