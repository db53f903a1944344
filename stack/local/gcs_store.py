"""The Redis behind GCS fault tolerance: the GCS keeps cluster state there, so a GCS that restarts
(or a head pod KubeRay recreates) recovers actors, jobs and Serve's state instead of losing them.

Locally Redis only has to outlive the GCS process, not itself: no persistence, stopped by `make down`.
"""

from __future__ import annotations

import subprocess
import time

from stack.config import OpsConfig
from stack.local import daemons

NAMESPACE = "serveops"  # RAY_external_storage_namespace: one cluster's keys in the shared Redis
# Only the GCS on this machine talks to it: loopback whatever listen.host is, where protected mode
# lets it in without a password (on another address Redis refuses every client).
HOST = "127.0.0.1"


def address(ops: OpsConfig) -> str:
    return f"{HOST}:{ops.listen.redis_port}"


def ray_env(ops: OpsConfig) -> dict[str, str]:
    return {"RAY_REDIS_ADDRESS": address(ops), "RAY_external_storage_namespace": NAMESPACE}


def start(ops: OpsConfig, timeout_s: float = 20) -> None:
    daemons.start("redis", ["redis-server", "--bind", HOST, "--port", str(ops.listen.redis_port),
                            "--save", "", "--appendonly", "no", "--protected-mode", "yes"])
    deadline = time.monotonic() + timeout_s
    while cli(ops, "ping") != "PONG":
        if time.monotonic() > deadline:
            raise RuntimeError(f"Redis did not answer at {address(ops)}; see {daemons.log_file('redis')}")
        time.sleep(0.2)
    cli(ops, "flushall")  # a new head must not recover a previous session's cluster


def cli(ops: OpsConfig, *args: str) -> str:
    done = subprocess.run(["redis-cli", "-h", HOST, "-p", str(ops.listen.redis_port), *args],
                          capture_output=True, text=True, timeout=5)
    return done.stdout.strip()
