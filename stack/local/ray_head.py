"""Start and stop the local Ray head with serveops' listeners on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

from stack import levers, targets
from stack.config import Cluster, Listen, OpsConfig
from stack.local import daemons, gcs_store, instrumentation
from stack.serving.observability import switch
from stack.serving.observability.tracing import TRACE_DIR_ENV

BIN = Path(sys.executable).parent
# Process names that `make down` must leave none of: Ray's daemons, its workers, vLLM's engine,
# and the monitoring daemons serveops starts beside them.
PROCESS_PATTERNS = ("gcs_server", "raylet", "ray::", "dashboard/agent.py", "dashboard/dashboard.py",
                    "default_worker.py", "EngineCore", "log_monitor.py", "monitor.py --logs-dir",
                    "prometheus --config.file", "prometheus-alertmanager", "stack.local.alert_receiver",
                    "stack.local.gpu_exporter")


def is_running(listen: Listen) -> bool:
    """The GCS port answers: a head is up."""
    try:
        with socket.create_connection((listen.host, listen.gcs_port), timeout=1):
            return True
    except OSError:
        return False


def start_command(listen: Listen, cluster: Cluster) -> list[str]:
    cmd = [
        str(BIN / "ray"), "start", "--head",
        f"--node-ip-address={listen.host}",
        f"--port={listen.gcs_port}",
        "--include-dashboard=true",
        f"--dashboard-host={listen.host}",
        f"--dashboard-port={listen.dashboard_port}",
        f"--metrics-export-port={listen.metrics_port}",
        "--disable-usage-stats",
    ]
    if cluster.num_cpus is not None:
        cmd.append(f"--num-cpus={cluster.num_cpus}")
    if cluster.num_gpus is not None:
        cmd.append(f"--num-gpus={cluster.num_gpus}")
    if cluster.object_store_memory_mb is not None:
        cmd.append(f"--object-store-memory={cluster.object_store_memory_mb * 1024 * 1024}")
    return cmd


def trace_dir(env: Mapping[str, str] = os.environ) -> Path:
    """Where the local stack's spans go (and `make traces` reads): SERVEOPS_TRACE_DIR, else .run/traces."""
    return Path(env.get(TRACE_DIR_ENV) or daemons.RUN_DIR / "traces")


def memory_profiling_requested(env: dict[str, str] | os._Environ) -> bool:
    return env.get("PROFILE_MEMORY", "") not in ("", "0")


def head_env(ops: OpsConfig, cluster: Cluster, base: dict[str, str] | None = None) -> dict[str, str]:
    """Workers inherit the raylet's environment: engine settings and tracing set here reach every replica.

    Whether to trace is the head's: env vars rather than the Serve config's tracing_config, so that the
    proxy traces too and honours a client's traceparent, and SERVEOPS_INSTRUMENTATION=off leaves the
    exporter unset (Serve then traces nothing). Where spans go: the local sink directory here, the OTLP
    endpoint and sampling ratio in the Serve config (stack.serve_config.tracing_env); the ratio is set here
    too, for a Serve controller started without that config.
    PROFILE_MEMORY=1 turns on Serve's memray hook for every replica from start-up.
    """
    base = dict(os.environ if base is None else base)
    env = {
        **base,
        **cluster.env,
        "RAY_USAGE_STATS_ENABLED": "0",
        switch.ENV: switch.mode(base),
        # Latency objectives must be bucket boundaries (the ops config checks they are).
        "RAY_SERVE_REQUEST_LATENCY_BUCKETS_MS": ",".join(f"{b:g}" for b in ops.latency_buckets_ms),
    }
    if switch.enabled(base):
        env.update({
            "RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH": "stack.serving.observability.tracing:span_processors",
            "RAY_SERVE_TRACING_SAMPLING_RATIO": str(ops.observability.tracing_sampling_ratio),
            TRACE_DIR_ENV: str(trace_dir(base)),
        })
    else:
        env.pop("RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH", None)
    if cluster.gcs_fault_tolerance:
        env.update(gcs_store.ray_env(ops))
    listen = ops.listen
    env[levers.ENV] = ",".join(levers.chosen(cluster.levers, base)) or levers.NONE
    env.update(levers.ray_env(levers.parse(env[levers.ENV]), listen.host, listen.haproxy_stats_port,
                              listen.haproxy_metrics_port))
    if memory_profiling_requested(base):
        env["RAY_SERVE_ENABLE_MEMORY_PROFILING"] = "1"
    return env


# Ray 2.60 turns token auth on for `ray start` when ~/.ray/auth_token exists, which any earlier
# `ray.init()` writes; our clients (serve deploy, the state API, `ray status` in runbooks) would then
# be refused. The local stack's boundary is loopback (docs/security.md), so its mode is set, not inferred.
LOCAL_AUTH_MODE = {"RAY_AUTH_MODE": "disabled"}


def start(ops: OpsConfig, cluster: Cluster, log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**head_env(ops, cluster), **LOCAL_AUTH_MODE}
    with log.open("w") as out:
        proc = subprocess.run(start_command(ops.listen, cluster), env=env, stdout=out,
                              stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"`ray start` failed (exit {proc.returncode}); see {log}")
    instrumentation.record(env[switch.ENV])
    instrumentation.record_levers(env[levers.ENV])


def cmdlines() -> Iterator[tuple[int, str]]:
    """(pid, command line) of every process on this machine but this one."""
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
            continue
        try:
            raw = (pid_dir / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        yield int(pid_dir.name), raw.replace(b"\0", b" ").decode(errors="replace")


def local_pid(pattern: str) -> int | None:
    """The newest local process whose command line contains pattern."""
    return max((pid for pid, cmd in cmdlines() if pattern in cmd), default=None)


def alive_nodes(dashboard_url: str) -> list[dict]:
    """The nodes the GCS lists as ALIVE, with their resources (the dashboard's state API)."""
    r = httpx.get(f"{dashboard_url}/api/v0/nodes", params={"detail": "1", "limit": "100"},
                  headers=targets.headers("ray_dashboard"), timeout=10)
    r.raise_for_status()
    return [n for n in r.json()["data"]["result"]["result"] if n.get("state") == "ALIVE"]


def leftover_processes() -> list[str]:
    """Command lines of processes that look like Ray or vLLM, excluding this one."""
    found = []
    for pid, cmdline in cmdlines():
        if any(p in cmdline for p in PROCESS_PATTERNS):
            found.append(f"{pid} {cmdline.strip()[:120]}")
    return found


def stop(grace_s: float = 30) -> None:
    """`ray stop`, forcefully if needed; leftover_processes() says what, if anything, survived."""
    subprocess.run([str(BIN / "ray"), "stop", f"--grace-period={int(grace_s)}"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while leftover_processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    if leftover_processes():
        subprocess.run([str(BIN / "ray"), "stop", "--force"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
