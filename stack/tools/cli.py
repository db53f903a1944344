"""`serveops`: the small tools the runbooks call, each printing what it did and what it found.

  serveops promql EXPR             instant query, one line per series
  serveops alerts                  alerts firing in Prometheus
  serveops replicas [APP]          Serve replicas: state, pid, start time
  serveops deployments [APP] [--config]   Serve deployments: status, replicas running/target, Serve's
                                   message; --config adds the options the runbooks tune
  serveops targets                 Prometheus scrape targets: health and last error
  serveops deaths [--last N]       dead actors of this Ray session and why they died
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

from stack import prom
from stack.config import OpsConfig, load
from stack.local import rollout, serve_deploy

# Labels every Ray series carries; they say nothing about the cause.
NOISE_LABELS = {"Component", "NodeAddress", "SessionName", "Version", "WorkerId", "instance", "job",
                "otel_scope_name", "otel_scope_schema_url", "otel_scope_version", "ray_io_cluster"}
RAY_LOGS = Path("/tmp/ray/session_latest/logs")


def promql(ops: OpsConfig, expr: str) -> int:
    result = prom.api(ops, "/api/v1/query", query=expr)["result"]
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
    firing = prom.firing_alerts(ops)
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


def _print_message(message: str, keep: int = 12) -> None:
    """Serve's message, indented; of a long one (a traceback) the last lines, which name the error."""
    lines = [line.rstrip()[:300] for line in message.strip().splitlines() if line.strip()]
    for line in (["..."] if len(lines) > keep else []) + lines[-keep:]:
        print(f"      {line}")


# Deployment options the runbooks tune, shown by `serveops deployments --config`.
TUNED_OPTIONS = ("max_ongoing_requests", "health_check_timeout_s", "autoscaling_config.min_replicas",
                 "autoscaling_config.max_replicas", "autoscaling_config.target_ongoing_requests",
                 "autoscaling_config.upscale_delay_s", "autoscaling_config.downscale_delay_s",
                 "autoscaling_config.upscaling_factor", "autoscaling_config.downscaling_factor")


def _options(deployment_config: dict[str, Any]) -> str:
    shown = []
    for key in TUNED_OPTIONS:
        node: Any = deployment_config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            shown.append(f"{key.removeprefix('autoscaling_config.')}={node}")
    return " ".join(shown)


def deployments(ops: OpsConfig, app: str | None, config: bool = False) -> int:
    apps = serve_deploy.details(ops.listen.dashboard_url).get("applications") or {}
    bad: list[str] = []
    for app_name, app_info in sorted(apps.items()):
        if app and app_name != app:
            continue
        app_status, deps = app_info.get("status", "?"), app_info.get("deployments") or {}
        print(f"  {app_name}: {app_status}")
        if app_status != "RUNNING":
            bad.append(f"{app_name} {app_status}")
            if not deps:  # failed before any deployment existed (import, build): the app says why
                _print_message(app_info.get("message") or "")
        for row in serve_deploy.states({"applications": {app_name: app_info}}):
            print(f"    {row.deployment} {row.status} {row.running}/{row.target} running")
            if config:
                print(f"      {_options(deps[row.deployment].get('deployment_config') or {})}")
            if row.status != "HEALTHY":
                bad.append(f"{app_name}/{row.deployment} {row.status}")
                _print_message(row.message)
    print(f"found: {len(bad)} not HEALTHY: {', '.join(bad)}" if bad else "found: every deployment HEALTHY")
    return 0


def targets(ops: OpsConfig) -> int:
    active = prom.api(ops, "/api/v1/targets", state="active")["activeTargets"]
    down = [t for t in active if t.get("health") != "up"]
    for t in sorted(active, key=lambda t: (t["labels"].get("job", ""), t["labels"].get("instance", ""))):
        error = f"  {t['lastError']}" if t.get("lastError") else ""
        print(f"  job={t['labels'].get('job')} {t['scrapeUrl']} {t.get('health')}{error}")
    jobs = sorted({t["labels"].get("job", "?") for t in active})
    print(f"found: {len(active)} target(s) in jobs {', '.join(jobs) or 'none'}; {len(down)} down")
    return 0


def _death_kind(cause: dict[str, Any]) -> str:
    """stopped (Serve or a user ended it on purpose), crashed, or memory (Ray's memory monitor)."""
    text = str(cause)
    if "oom_context" in cause or "low on memory" in text or "memory pressure" in text:
        return "memory"
    return "stopped" if "ray.kill" in text or "INTENDED" in text else "crashed"


def deaths(ops: OpsConfig, last: int) -> int:
    from ray.util.state import list_actors  # slow to import; only this subcommand needs it

    dead = list_actors(address=ops.listen.dashboard_url, filters=[("state", "=", "DEAD")], detail=True,
                       limit=10_000, raise_on_missing_output=False)
    kinds = [_death_kind(a.death_cause or {}) for a in dead]
    # Replicas Serve stopped on purpose first, memory kills last: --last N shows the telling ones.
    order = {"stopped": 0, "crashed": 1, "memory": 2}
    for kind, actor in sorted(zip(kinds, dead, strict=True), key=lambda pair: order[pair[0]])[-last:]:
        cause = actor.death_cause or {}
        context = next(iter(cause.values()), {}) if cause else {}
        message = " ".join(str(context.get("error_message", "")).split())[:400] or "no cause recorded"
        print(f"  {actor.class_name} pid {actor.pid} ({kind}): {message}")
    print(f"found: {len(dead)} dead actor(s) in this Ray session, {kinds.count('memory')} killed for memory, "
          f"{kinds.count('crashed')} crashed")
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
    print(f"searched {RAY_LOGS} (the pattern is in the command above)")  # echoing it would match itself
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
    p = sub.add_parser("deployments")
    p.add_argument("app", nargs="?")
    p.add_argument("--config", action="store_true")
    sub.add_parser("targets")
    sub.add_parser("deaths").add_argument("--last", type=int, default=10)
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
    if args.command == "deployments":
        return deployments(ops, args.app, args.config)
    if args.command == "targets":
        return targets(ops)
    if args.command == "deaths":
        return deaths(ops, args.last)
    if args.command == "logs":
        return logs(args.regex, args.last)
    if args.command == "tune":
        return tune(ops, args.app, args.deployment, args.settings)
    return rollback(ops)


if __name__ == "__main__":
    sys.exit(main())
