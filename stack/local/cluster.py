"""`make up`, `make down`, `make status`: the local stack's lifecycle."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from stack import ROOT, levers, prom, serve_config, targets
from stack.config import Cluster, OpsConfig, load
from stack.local import (
    daemons,
    gcs_store,
    instrumentation,
    monitoring,
    ray_head,
    rollout,
    second_node,
    serve_deploy,
)
from stack.profile import select
from stack.serving.observability import switch

RUN_DIR = daemons.RUN_DIR
LOG_DIR = RUN_DIR / "logs"
RAY_LOGS = Path("/tmp/ray/session_latest/logs")


def start_second_node(ops: OpsConfig, cluster: Cluster) -> None:
    env = {**{k: v for k, v in ray_head.head_env(ops, cluster).items() if k not in gcs_store.ray_env(ops)},
           **ray_head.LOCAL_AUTH_MODE}
    print(f"starting a second Ray node in network namespace {second_node.NETNS} ({second_node.NODE_IP})")
    second_node.start(ops, cluster.second_node_num_cpus, env, str(LOG_DIR / "ray-start-node2.log"))
    print(f"Ray nodes alive: {second_node.alive_nodes(ops)}")


def rejoin_second_node(ops: OpsConfig, profile_name: str) -> int:
    """A second node the GCS declared dead (after a partition) does not come back by itself: restart it."""
    if not second_node.exists():
        print("no second node (start one with `make up NODES=2`)")
        return 1
    second_node.set_link(True)
    print(f"stopped {second_node.stop_processes()} processes of the second node")
    start_second_node(ops, ops.profile(profile_name).cluster)
    return 0 if second_node.alive_nodes(ops, timeout_s=0) >= 2 else 1


def up(ops: OpsConfig, profile_name: str, timeout_s: float, nodes: int = 1) -> int:
    started = time.monotonic()
    profile = ops.profile(profile_name)
    listen = ops.listen
    if ray_head.is_running(listen):
        print(f"Ray head already running at {listen.gcs_address}; redeploying")
        if ray_head.memory_profiling_requested(os.environ):
            print("PROFILE_MEMORY=1 takes effect on a fresh head: run `make down` first", file=sys.stderr)
        if switch.mode() != instrumentation.running_mode():
            print(f"{switch.ENV}={switch.mode()} takes effect on a fresh head (this one runs "
                  f"{instrumentation.running_mode()}): run `make down` first", file=sys.stderr)
        wanted = ",".join(levers.chosen(profile.cluster.levers)) or levers.NONE
        if wanted != instrumentation.running_levers():
            print(f"levers {wanted} take effect on a fresh head (this one runs "
                  f"{instrumentation.running_levers()}): run `make down` first", file=sys.stderr)
    else:
        print(f"starting Ray head (profile {profile_name}) at {listen.gcs_address}")
        if profile.cluster.gcs_fault_tolerance:
            gcs_store.start(ops)
        ray_head.start(ops, profile.cluster, LOG_DIR / "ray-start.log")

    monitoring.start(ops)
    start_gpu_exporter(ops)
    register_exemplars(ops)
    config = serve_config.effective(profile_name)
    apps = [a["name"] for a in config["applications"]]
    print(f"deploying {rollout.DEPLOYED.relative_to(ROOT)}; waiting for {', '.join(apps)} to be RUNNING")
    try:
        rollout.roll_out(ops, config, timeout_s)
    except (RuntimeError, TimeoutError) as err:
        print(f"make up failed: {err}", file=sys.stderr)
        print(f"logs: {RAY_LOGS}/serve/ (replicas, controller), {RAY_LOGS}/ (Ray), "
              f"{LOG_DIR}/ (serveops)", file=sys.stderr)
        return 1
    if nodes == 2 and not second_node.exists():
        # After the deploy, so the replicas start on the head and a cut link leaves them serving.
        start_second_node(ops, profile.cluster)
    print(f"stack up in {time.monotonic() - started:.1f}s")
    print_urls(ops)
    return 0


def start_gpu_exporter(ops: OpsConfig) -> None:
    """Only where NVML sees a GPU: elsewhere serveops_gpu_* are absent, not zero."""
    from stack.local.gpu_exporter import init_nvml

    if init_nvml() is None:
        return
    port = ops.listen.gpu_exporter_port
    daemons.start("gpu-exporter", [sys.executable, "-m", "stack.local.gpu_exporter",
                                   "--host", ops.listen.host, "--port", str(port)])
    monitoring.register_target("gpu", f"{ops.listen.host}:{port}")
    print(f"  GPU metrics    {ops.listen.url(port)}/metrics")


def register_exemplars(ops: OpsConfig) -> None:
    """The ingress replicas' latency histogram with exemplars: its exporter is an actor the first replica
    starts (stack/serving/observability/exemplars.py); with instrumentation off nothing serves it."""
    if instrumentation.running_mode() == "full":
        monitoring.register_target("exemplars", f"{ops.listen.host}:{ops.listen.exemplars_port}")
    else:
        monitoring.unregister_target("exemplars")


def print_urls(ops: OpsConfig) -> None:
    listen = ops.listen
    print(f"  OpenAI API     {listen.serve_url}/v1  (models, chat/completions, completions)")
    print(f"  Ray dashboard  {listen.dashboard_url}")
    print(f"  Ray metrics    {listen.metrics_url}/metrics")
    print(f"  Prometheus     {listen.url(listen.prometheus_port)}")
    print(f"  Alertmanager   {listen.url(listen.alertmanager_port)}")
    print(f"  notifications  {monitoring.NOTIFICATIONS}")
    print("  stop with      make down")


def down(ops: OpsConfig) -> int:
    listen = ops.listen
    if ray_head.is_running(listen):
        try:
            serve_deploy.delete_all(listen.dashboard_url)
        except Exception as err:  # a broken Serve must not stop us stopping Ray
            print(f"serve shutdown: {err}; stopping Ray anyway", file=sys.stderr)
    ray_head.stop()  # `ray stop` ends the second node's processes too: they share the process namespace
    second_node.remove()
    if daemons.pid_of("prometheus"):
        # One more scrape of the stopped targets, so Prometheus marks their series stale instead of
        # keeping the last samples "current" for the next `make up` (a replica's healthy=0 from
        # shutdown would otherwise page as ServeReplicaUnhealthy for five minutes).
        time.sleep(2 * ops.observability.scrape_interval_s + 1)
    for name in daemons.all_names():
        daemons.stop(name)
    left = ray_head.leftover_processes()
    if left:
        print("still running after `ray stop --force`:\n  " + "\n  ".join(left), file=sys.stderr)
        return 1
    print("stack down: no Ray or vLLM process left")
    return 0


def status(ops: OpsConfig) -> int:
    listen, t = ops.listen, ops.targets
    local = not targets.remote(ops)
    print(f"targets: {targets.describe(ops)}")
    if local:
        if not ray_head.is_running(listen):
            print(f"no Ray head at {listen.gcs_address}; start with `make up`")
            return 1
        subprocess.run([str(ray_head.BIN / "ray"), "status", f"--address={listen.gcs_address}"])
    else:  # `ray status` needs the GCS, which a cluster does not expose: the dashboard lists the nodes
        try:
            nodes = ray_head.alive_nodes(t.ray_dashboard_url)
        except httpx.HTTPError as err:
            print(f"Ray dashboard at {t.ray_dashboard_url}: not answering ({err})")
            return 1
        cpus = sum((n.get("resources_total") or {}).get("CPU", 0) for n in nodes)
        gpus = sum((n.get("resources_total") or {}).get("GPU", 0) for n in nodes)
        print(f"Ray nodes alive: {len(nodes)} ({cpus:g} CPU, {gpus:g} GPU)")
    rows = serve_deploy.states(serve_deploy.details(t.ray_dashboard_url))
    if not rows:
        print("Serve: no applications")
        return 1
    print(f"{'APPLICATION':<12} {'APP STATUS':<12} {'DEPLOYMENT':<34} {'STATUS':<12} REPLICAS")
    for r in rows:
        print(f"{r.app:<12} {r.app_status:<12} {r.deployment:<34} {r.status:<12} {r.running}/{r.target}"
              + (f"  {r.message[:80]}" if r.status != "HEALTHY" and r.message else ""))
    healthy = all(r.app_status == "RUNNING" for r in rows)
    try:
        firing = prom.firing_alerts(ops)
    except Exception as err:  # Prometheus down is itself worth saying, not a crash
        print(f"Prometheus: not answering ({err})")
        return 1
    if local:  # read from this checkout's .run/, which says nothing about another cluster
        print(f"instrumentation: {instrumentation.running_mode()}")
        print(f"levers: {instrumentation.running_levers()}")
    print(f"firing alerts: {len(firing) or 'none'}")
    for alert in firing:
        labels = alert["labels"]
        summary = alert.get("annotations", {}).get("summary", "")
        print(f"  {labels.get('alertname')} severity={labels.get('severity', '?')} "
              f"since {alert.get('activeAt')}  {summary}")
    return 0 if healthy else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "rejoin-node"])
    parser.add_argument("--timeout", type=float, default=float(os.environ.get("UP_TIMEOUT", 900)),
                        help="seconds `up` waits for every application to be RUNNING")
    args = parser.parse_args()
    ops = load()
    if args.command == "up":
        nodes = os.environ.get("NODES") or "1"
        if nodes not in ("1", "2"):
            print(f"NODES={nodes}: the local stack runs 1 node, or 2 with NODES=2", file=sys.stderr)
            return 2
        return up(ops, select(), args.timeout, int(nodes))
    if args.command == "down":
        return down(ops)
    if args.command == "rejoin-node":
        return rejoin_second_node(ops, select())
    return status(ops)


if __name__ == "__main__":
    sys.exit(main())
