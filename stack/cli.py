"""`serveops`: the small tools the runbooks call, each printing what it did and what it found.

  serveops promql EXPR             instant query, one line per series
  serveops alerts                  alerts firing in Prometheus
  serveops replicas [APP]          Serve replicas: state, pid, start time
  serveops logs REGEX [--last N]   matching lines of this Ray session's logs
  serveops tune APP DEPLOYMENT key=value ...   change deployment options, roll out (keeps last good)
  serveops rollback                roll out the last config that reached RUNNING
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from stack import monitoring, rollout, serve_deploy
from stack.config import OpsConfig, load

# Labels every Ray series carries; they say nothing about the cause.
NOISE_LABELS = {"Component", "NodeAddress", "SessionName", "Version", "WorkerId", "instance", "job",
                "otel_scope_name", "otel_scope_schema_url", "otel_scope_version", "ray_io_cluster"}
RAY_LOGS = Path("/tmp/ray/session_latest/logs")


def promql(ops: OpsConfig, expr: str) -> int:
    result = monitoring.api(ops, "/api/v1/query", query=expr)["result"]
    print(f"query: {expr}")
    if not result:
        print("found: nothing (no series matched)")
        return 0
    print(f"found: {len(result)} series")
    for series in result:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(series["metric"].items()) if k not in NOISE_LABELS)
        print(f"  {series['value'][1]:>14}  {labels or '{}'}")
    return 0


def alerts(ops: OpsConfig) -> int:
    firing = monitoring.firing_alerts(ops)
    print(f"found: {len(firing)} firing alert(s)" if firing else "found: no alert firing")
    for a in firing:
        name, severity = a["labels"]["alertname"], a["labels"].get("severity", "?")
        labels = {k: v for k, v in a["labels"].items() if k not in NOISE_LABELS | {"alertname", "severity"}}
        print(f"  {name} [{severity}] since {a['activeAt']} {labels}")
    return 0


def replicas(ops: OpsConfig, app: str | None) -> int:
    found = 0
    apps = serve_deploy.details(ops.listen.dashboard_url).get("applications") or {}
    for app_name, app_info in sorted(apps.items()):
        if app and app_name != app:
            continue
        for dep_name, dep in sorted(app_info.get("deployments", {}).items()):
            for r in dep.get("replicas") or []:
                found += 1
                age = time.time() - (r.get("start_time_s") or time.time())
                print(f"  {app_name}/{dep_name} replica {r['replica_id']} {r['state']} pid {r.get('pid')} "
                      f"up {age:.0f}s")
    print(f"found: {found} replica(s)")
    return 0


def logs(regex: str, last: int) -> int:
    pattern = re.compile(regex)
    hits: list[tuple[float, str]] = []
    for path in RAY_LOGS.rglob("*"):
        if not path.is_file() or path.suffix not in (".log", ".out", ".err"):
            continue
        with open(path, errors="replace") as f:
            hits += [(path.stat().st_mtime, f"{path.relative_to(RAY_LOGS)}: {line.rstrip()[:300]}")
                     for line in f if pattern.search(line)]
    print(f"searched {RAY_LOGS} for /{regex}/")
    print(f"found: {len(hits)} line(s)" + (f", the last {last}:" if len(hits) > last else ""))
    for _, line in sorted(hits)[-last:]:
        print(f"  {line}")
    return 0


def _value(raw: str) -> Any:
    return yaml.safe_load(raw)  # 16 -> int, 0.5 -> float, true -> bool


def tune(ops: OpsConfig, app: str, deployment: str, settings: list[str]) -> int:
    options = {}
    for item in settings:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"tune: {item!r} is not key=value")
        options[key] = _value(raw)
    config = rollout.with_options(rollout.read(rollout.DEPLOYED), app, deployment, options)
    print(f"rolling out {app}/{deployment} with {options}")
    rollout.roll_out(ops, config)
    print(f"done: every application RUNNING; {rollout.LAST_GOOD} updated")
    return 0


def rollback(ops: OpsConfig) -> int:
    print(f"rolling back to {rollout.LAST_GOOD}")
    rollout.rollback(ops)
    print("done: every application RUNNING")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="serveops", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("promql").add_argument("expr")
    sub.add_parser("alerts")
    sub.add_parser("replicas").add_argument("app", nargs="?")
    p = sub.add_parser("logs")
    p.add_argument("regex")
    p.add_argument("--last", type=int, default=20)
    p = sub.add_parser("tune")
    p.add_argument("app")
    p.add_argument("deployment")
    p.add_argument("settings", nargs="+", metavar="key=value")
    sub.add_parser("rollback")
    args = parser.parse_args(argv)
    ops = load()
    if args.command == "promql":
        return promql(ops, args.expr)
    if args.command == "alerts":
        return alerts(ops)
    if args.command == "replicas":
        return replicas(ops, args.app)
    if args.command == "logs":
        return logs(args.regex, args.last)
    if args.command == "tune":
        return tune(ops, args.app, args.deployment, args.settings)
    return rollback(ops)


if __name__ == "__main__":
    sys.exit(main())
