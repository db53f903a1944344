"""`serveops`: the small tools the runbooks call, each printing what it did and what it found.

  serveops promql EXPR             instant query, one line per series
  serveops alerts                  alerts firing in Prometheus
  serveops replicas [APP]          Serve replicas: state, pid, start time
  serveops deployments [APP] [--config]   Serve deployments: status, replicas running/target, Serve's
                                   message; --config adds the options the runbooks tune
  serveops targets                 Prometheus scrape targets: health and last error
  serveops deaths [--last N] [--since T]   dead actors of this Ray session and why they died
  serveops logs REGEX [--last N] [--since T]   matching lines of this Ray session's logs
  serveops stalled [APP] [DEPLOYMENT]   replicas with requests in flight and none completed (the
                                   ServeReplicaStalled rule, evaluated now), by replica id
  serveops tune APP DEPLOYMENT key=value ...   change deployment options, roll out (keeps last good)
  serveops rollback                roll out the last config that reached RUNNING
  serveops replace-replica APP DEPLOYMENT REPLICA_ID [--wait-s S]   kill that one replica's actor so
                                   Serve starts a fresh one; wait until the deployment is HEALTHY

--since T (default: the SINCE environment variable, else no bound) leaves out log lines and dead
actors older than T: unix seconds, an ISO time (local unless it names a zone) or a duration back
from now (90s, 10m, 1h30m). The chaos engine and `make runbook SINCE=...` set SINCE to the fault
time, so evidence of an earlier run in the same Ray session is not found again.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import httpx
import yaml

from stack import prom
from stack.artifacts import RULES_FILE
from stack.config import OpsConfig, load
from stack.since import parse_since
from stack.targets import headers as target_headers
from stack.targets import refuse_remote, remote
from stack.tools.promql import NOISE_LABELS, show

RAY_LOGS = Path("/tmp/ray/session_latest/logs")


def _serve() -> ModuleType:
    """Serve's state through Ray's SDK, imported on first use: 2 s of imports that most commands never
    need."""
    from stack.local import serve_deploy
    return serve_deploy


def _rollout() -> ModuleType:
    from stack.local import rollout
    return rollout


def _since_arg(text: str) -> float | None:
    try:
        return parse_since(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _when(stamp: float) -> str:
    return datetime.fromtimestamp(stamp).isoformat(sep=" ", timespec="seconds")


def promql(ops: OpsConfig, expr: str) -> int:
    show(expr, prom.api(ops, "/api/v1/query", query=expr)["result"])
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
    apps = _serve().details(ops.targets.ray_dashboard_url).get("applications") or {}
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


STALLED_ALERT = "ServeReplicaStalled"
IN_FLIGHT = "max by (application, deployment, replica) (ray_serve_replica_processing_queries)"
Replica = tuple[str, str, str]  # application, deployment, replica id


def rule_expr(alert: str) -> str:
    """One of our alerting rules' expression, as generated (alerts/serveops.rules.yaml): the CLI asks
    Prometheus the very question the alert asks."""
    for group in yaml.safe_load(RULES_FILE.read_text())["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                return str(rule["expr"])
    raise SystemExit(f"no alerting rule {alert} in {RULES_FILE}")


def _replica_key(labels: dict[str, str]) -> Replica:
    return labels.get("application", "?"), labels.get("deployment", "?"), labels.get("replica", "?")


def stalled(ops: OpsConfig, app: str | None = None, deployment: str | None = None) -> int:
    rows = prom.api(ops, "/api/v1/query", query=rule_expr(STALLED_ALERT))["result"]
    in_flight = prom.api(ops, "/api/v1/query", query=IN_FLIGHT)["result"]
    now = {_replica_key(r["metric"]): r["value"][1] for r in in_flight}
    alerts = prom.api(ops, "/api/v1/alerts")["alerts"]
    alert_state = {_replica_key(a["labels"]): a.get("state", "?") for a in alerts
                   if a["labels"].get("alertname") == STALLED_ALERT}
    window = ops.alerting.stall_window_s
    found: list[Replica] = []
    for row in sorted(rows, key=lambda r: _replica_key(r["metric"])):
        key = _replica_key(row["metric"])
        if (app and key[0] != app) or (deployment and key[1] != deployment):
            continue
        found.append(key)
        state = alert_state.get(key, "not pending yet")
        print(f"  stalled: {key[0]}/{key[1]} replica {key[2]}: {now.get(key, '?')} in flight now (median "
              f"{row['value'][1]} over {window}s), none completed in {window}s; alert {state}")
    scope = "/".join(p for p in (app, deployment) if p) or "any deployment"
    listed = ", ".join(f"{a}/{d} {r}" for a, d, r in found)
    print(f"found: {len(found)} stalled replica(s) of {scope}: {listed}" if found
          else f"found: no stalled replica of {scope}")
    return 0


def _replicas_of(details: dict[str, Any], app: str, deployment: str) -> tuple[dict[str, Any], list[dict]]:
    """A deployment's details ({} when there is none) and its replicas."""
    apps = details.get("applications") or {}
    dep = ((apps.get(app) or {}).get("deployments") or {}).get(deployment) or {}
    return dep, list(dep.get("replicas") or [])


def _kill_actor(ops: OpsConfig, actor_name: str) -> None:
    """ray.kill the named actor in Serve's namespace, without restart: Serve's controller sees its
    replica die and starts another."""
    import ray  # slow to import; only this subcommand needs it

    ray.init(address=ops.listen.gcs_address, namespace="serve", logging_level=logging.ERROR,
             log_to_driver=False)
    try:
        ray.kill(ray.get_actor(actor_name, namespace="serve"), no_restart=True)
    finally:
        ray.shutdown()


def replace_replica(ops: OpsConfig, app: str, deployment: str, replica_id: str, wait_s: float = 180,
                    poll_s: float = 2) -> int:
    refuse_remote(ops, "replace-replica")
    dep, replicas = _replicas_of(_serve().details(ops.targets.ray_dashboard_url), app, deployment)
    replica = next((r for r in replicas if r.get("replica_id") == replica_id), None)
    if replica is None:
        have = ", ".join(sorted(str(r.get("replica_id")) for r in replicas)) or "none"
        where = f"{app}/{deployment}" if dep else f"{app}/{deployment} (no such deployment)"
        print(f"replace-replica: no replica {replica_id} in {where}; its replicas: {have}. Nothing killed.",
              file=sys.stderr)
        return 2
    before = {r.get("replica_id") for r in replicas}
    actor = replica.get("actor_name") or f"SERVE_REPLICA::{app}#{deployment}#{replica_id}"
    print(f"killing {actor} (pid {replica.get('pid')}, {replica.get('state')}); Serve starts a replacement")
    _kill_actor(ops, actor)
    if wait_s <= 0:
        print(f"found: {app}/{deployment} replica {replica_id} killed; not waiting")
        return 0
    deadline = time.monotonic() + wait_s
    while True:
        dep, replicas = _replicas_of(_serve().details(ops.targets.ray_dashboard_url), app, deployment)
        ids = {r.get("replica_id") for r in replicas}
        running = sum(r.get("state") == "RUNNING" for r in replicas)
        target = int(dep.get("target_num_replicas") or 0)
        status = dep.get("status", "?")
        if replica_id not in ids and status == "HEALTHY" and running >= target:
            fresh = ", ".join(sorted(str(i) for i in ids - before)) or "none needed"
            print(f"found: {app}/{deployment} HEALTHY, {running}/{target} running; replica {replica_id} "
                  f"replaced by {fresh}")
            return 0
        if time.monotonic() >= deadline:
            gone = "gone" if replica_id not in ids else "still listed"
            print(f"found: {app}/{deployment} {status}, {running}/{target} running after {wait_s:.0f}s; "
                  f"replica {replica_id} {gone}")
            return 1
        time.sleep(poll_s)


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
    apps = _serve().details(ops.targets.ray_dashboard_url).get("applications") or {}
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
        for row in _serve().states({"applications": {app_name: app_info}}):
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


def _death_times(dashboard_url: str) -> dict[str, float]:
    """When each dead actor died (unix seconds), by actor id. Ray 2.60's state API (list_actors) drops
    the GCS's end time; the dashboard's actor table keeps it."""
    try:
        from ray._private.authentication.http_token_authentication import get_auth_headers_if_auth_enabled
        headers = get_auth_headers_if_auth_enabled({})
    except ImportError:
        headers = {}
    r = httpx.get(f"{dashboard_url}/logical/actors", headers={**headers, **target_headers("ray_dashboard")},
                  timeout=30)
    r.raise_for_status()
    actors = (r.json().get("data") or {}).get("actors") or {}
    return {actor_id: int(a["endTime"]) / 1000 for actor_id, a in actors.items()
            if a and int(a.get("endTime") or 0) > 0}


def _fresh_deaths(dashboard_url: str, dead: list[Any], since: float) -> tuple[list[Any], int, int]:
    """The actors that died at or after since; and how many died before it, and how many have no
    recorded death time (left out: they cannot be told apart from an earlier run's)."""
    try:
        ended = _death_times(dashboard_url)
    except (httpx.HTTPError, ValueError) as err:  # unreachable, or not the answer we know
        print(f"  (no death times from the dashboard: {err})")
        ended = {}
    fresh = [a for a in dead if ended.get(a.actor_id, -1.0) >= since]
    unknown = sum(a.actor_id not in ended for a in dead)
    return fresh, len(dead) - len(fresh) - unknown, unknown


def deaths(ops: OpsConfig, last: int, since: float | None = None) -> int:
    from ray.util.state import list_actors  # slow to import; only this subcommand needs it

    dead = list_actors(address=ops.targets.ray_dashboard_url, filters=[("state", "=", "DEAD")], detail=True,
                       limit=10_000, raise_on_missing_output=False)
    older = unknown = 0
    if since is not None:
        dead, older, unknown = _fresh_deaths(ops.targets.ray_dashboard_url, dead, since)
    kinds = [_death_kind(a.death_cause or {}) for a in dead]
    # Replicas Serve stopped on purpose first, memory kills last: --last N shows the telling ones.
    order = {"stopped": 0, "crashed": 1, "memory": 2}
    for kind, actor in sorted(zip(kinds, dead, strict=True), key=lambda pair: order[pair[0]])[-last:]:
        cause = actor.death_cause or {}
        context = next(iter(cause.values()), {}) if cause else {}
        message = " ".join(str(context.get("error_message", "")).split())[:400] or "no cause recorded"
        print(f"  {actor.class_name} pid {actor.pid} ({kind}): {message}")
    where = "in this Ray session" if since is None else f"since {_when(since)}"
    left_out = "" if since is None else (f"; {older} older left out"
                                         + (f", {unknown} with no recorded death time" if unknown else ""))
    print(f"found: {len(dead)} dead actor(s) {where}, {kinds.count('memory')} killed for memory, "
          f"{kinds.count('crashed')} crashed{left_out}")
    return 0


# Where a Ray log line says when it was written: a JSON line's timestamp_ns (Serve), a date and time
# near the start (Ray's C++ "[2026-11-27 16:43:30,568 I ...]", Python's logging, Serve's text
# format), or vLLM's "INFO 11-27 16:43:30 [file.py:12]" (no year; after a Ray "(pid=...)" prefix).
_JSON_NS = re.compile(r'"timestamp_ns":\s*(\d{18,20})')
_DATETIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:[.,](\d{1,6}))?")
_VLLM = re.compile(r"(?:\([^)]*\)\s+)?(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+"
                   r"(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)")
_HEAD = 120  # a timestamp further into the line is part of the message


def line_time(line: str, now: float | None = None) -> float | None:
    """Unix seconds a log line was written, from its own timestamp (local time unless it is
    absolute); None for a line without one (a traceback line, NCCL's own lines, a print)."""
    if line.startswith("{") and (ns := _JSON_NS.search(line)):
        return int(ns.group(1)) / 1e9
    if m := _DATETIME.search(line[:_HEAD]):
        y, mo, d, h, mi, sec = (int(g) for g in m.groups()[:6])
        return datetime(y, mo, d, h, mi, sec, int((m.group(7) or "0").ljust(6, "0"))).timestamp()
    if m := _VLLM.match(line[:_HEAD]):
        return _this_year(now if now is not None else time.time(), *(int(g) for g in m.groups()))
    return None


def _this_year(now: float, month: int, day: int, hour: int, minute: int, second: int) -> float:
    """A date without a year is this year's, unless that lies ahead: then last year's (a log from
    December read in January)."""
    year = datetime.fromtimestamp(now).year
    stamp = datetime(year, month, day, hour, minute, second).timestamp()
    return stamp if stamp <= now + 86400 else datetime(year - 1, month, day, hour, minute, second).timestamp()


def excerpt(line: str, at: int, width: int = 300) -> str:
    """The line, or where it is long (a JSON log line with a traceback), the part from just before the
    match: an exception raised at the end of a long message is what the reader came for."""
    if len(line) <= width:
        return line
    start = max(0, min(at - 60, len(line) - width))
    return ("..." if start else "") + line[start:start + width]


def _dated_hits(f: IO[str], pattern: re.Pattern[str], last_change: float) -> Iterator[tuple[float, str]]:
    """Matching lines of one file with when each was written. An undated line counts as written when
    the next dated line below it was (no later than that), or at the file's last change: so it is
    left out only when it is sure to be older, never because it has no timestamp."""
    undated: list[str] = []
    for line in f:
        matches = pattern.search(line)
        if not (matches or undated):
            continue  # a line's time is read only where it dates a match: logs are large
        stamp = line_time(line)
        if stamp is not None:
            yield from ((stamp, text) for text in undated)
            undated = []
        if matches:
            text = excerpt(line.rstrip(), matches.start())
            if stamp is None:
                undated.append(text)
            else:
                yield stamp, text
    yield from ((last_change, text) for text in undated)


def logs(regex: str, last: int, since: float | None = None) -> int:
    pattern = re.compile(regex)
    hits: list[tuple[float, str]] = []
    older = skipped_files = 0
    for path in RAY_LOGS.rglob("*"):
        if not path.is_file() or path.suffix not in (".log", ".out", ".err"):
            continue
        last_change = path.stat().st_mtime
        if since is not None and last_change < since:
            skipped_files += 1  # nothing in it is newer than its last change
            continue
        with open(path, errors="replace") as f:
            for stamp, text in _dated_hits(f, pattern, last_change):
                if since is not None and stamp < since:
                    older += 1
                else:
                    hits.append((stamp, f"{path.relative_to(RAY_LOGS)}: {text}"))
    bound = "" if since is None else (f" since {_when(since)} ({skipped_files} file(s) last written "
                                      f"before it not read)")
    # The pattern is not echoed: it would match itself in a later search.
    print(f"searched {RAY_LOGS}{bound} (the pattern is in the command above)")
    print(f"found: {len(hits)} line(s)" + (f", the last {last}:" if len(hits) > last else "")
          + (f"; {older} older line(s) left out" if older else ""))
    for _, line in sorted(hits)[-last:]:
        print(f"  {line}")
    return 0


def _value(raw: str) -> Any:
    return yaml.safe_load(raw)  # 16 -> int, 0.5 -> float, true -> bool


def tune(ops: OpsConfig, app: str, deployment: str, settings: list[str]) -> int:
    refuse_remote(ops, "tune")
    options = {}
    for item in settings:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"tune: {item!r} is not key=value")
        options[key] = _value(raw)
    config = _rollout().with_options(_rollout().read(_rollout().DEPLOYED), app, deployment, options)
    print(f"rolling out {app}/{deployment} with {options}")
    _rollout().roll_out(ops, config)
    print(f"done: every application RUNNING; {_rollout().LAST_GOOD} updated")
    return 0


def rollback(ops: OpsConfig) -> int:
    refuse_remote(ops, "rollback")
    print(f"rolling back to {_rollout().LAST_GOOD}")
    _rollout().rollback(ops)
    print("done: every application RUNNING")
    return 0


def parser() -> argparse.ArgumentParser:
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
    p = sub.add_parser("deaths")
    p.add_argument("--last", type=int, default=10)
    _add_since(p)
    p = sub.add_parser("logs")
    p.add_argument("regex")
    p.add_argument("--last", type=int, default=20)
    _add_since(p)
    p = sub.add_parser("tune")
    p.add_argument("app")
    p.add_argument("deployment")
    p.add_argument("settings", nargs="+", metavar="key=value")
    sub.add_parser("rollback")
    p = sub.add_parser("stalled")
    p.add_argument("app", nargs="?")
    p.add_argument("deployment", nargs="?")
    p = sub.add_parser("replace-replica")
    p.add_argument("app")
    p.add_argument("deployment")
    p.add_argument("replica_id")
    p.add_argument("--wait-s", type=float, default=180, metavar="S",
                   help="wait up to S seconds for the deployment to be HEALTHY again (0: do not wait)")
    return parser


def _add_since(p: argparse.ArgumentParser) -> None:
    # argparse runs a string default through type= too: SINCE="" or unset is no bound.
    p.add_argument("--since", type=_since_arg, default=os.environ.get("SINCE", ""), metavar="T",
                   help="leave out what is older: unix seconds, ISO time or duration (default: $SINCE)")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
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
        return deaths(ops, args.last, args.since)
    if args.command == "logs":
        if "ray_dashboard" in remote(ops):  # this machine's Ray logs say nothing about that cluster
            print(f"not searched: Ray's logs are on the nodes of {ops.targets.ray_dashboard_url}, not "
                  f"under {RAY_LOGS} here; the runbook's k8s- steps read the pods' logs")
            print("found: nothing searched")
            return 0
        return logs(args.regex, args.last, args.since)
    if args.command == "tune":
        return tune(ops, args.app, args.deployment, args.settings)
    if args.command == "stalled":
        return stalled(ops, args.app, args.deployment)
    if args.command == "replace-replica":
        return replace_replica(ops, args.app, args.deployment, args.replica_id, args.wait_s)
    return rollback(ops)


if __name__ == "__main__":
    sys.exit(main())
