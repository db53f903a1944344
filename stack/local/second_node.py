"""`make up NODES=2`: a second Ray node on this machine, in its own network namespace.

The namespace is joined to the host by a veth pair, so the head and the second node talk over a
real link that an experiment can cut (`ip link set <host end> down`), unlike loopback. Only the
addresses inside the namespace are used; nothing leaves the machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from stack.config import OpsConfig
from stack.local import netns, ray_head

LINK = netns.Link("serveops-n2", host_if="serveops-h", ns_if="serveops-n", host_ip="10.77.0.1",
                  ns_ip="10.77.0.2")
NETNS, HOST_IF, HOST_IP, NODE_IP = LINK.netns, LINK.host_if, LINK.host_ip, LINK.ns_ip
NODE_IP_REGEX = r"10\.77\.0\.\d+"  # Prometheus keeps these targets as they are (see monitoring.py)


def exists() -> bool:
    return netns.exists(LINK)


def start_command(ops: OpsConfig, num_cpus: int) -> list[str]:
    return [*LINK.exec_prefix(), str(ray_head.BIN / "ray"), "start",
            f"--address={HOST_IP}:{ops.listen.gcs_port}", f"--node-ip-address={NODE_IP}",
            f"--num-cpus={num_cpus}", f"--metrics-export-port={ops.listen.metrics_port}",
            "--disable-usage-stats"]


def start(ops: OpsConfig, num_cpus: int, env: dict[str, str], log_path: str) -> None:
    if not exists():
        netns.create(LINK)
    with open(log_path, "w") as log:
        done = subprocess.run(start_command(ops, num_cpus), env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f"second node: `ray start` in {NETNS} failed; see {log_path}")


def alive_nodes(ops: OpsConfig, wait_for: int = 2, timeout_s: float = 60) -> int:
    """Nodes the GCS lists as alive, once there are wait_for of them (or at the deadline)."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = len(ray_head.alive_nodes(ops.listen.dashboard_url))
        if alive >= wait_for or time.monotonic() >= deadline:
            return alive
        time.sleep(2)


def stop_processes() -> int:
    """Kill the processes inside the namespace (the second node's raylet and workers) and only those:
    `ray stop` would match the head's processes too, which share this process namespace."""
    found = netns.pids(LINK)
    for pid in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(found)


def set_link(up: bool) -> None:
    """Cut (or restore) the link between the head and the second node."""
    netns.set_up(LINK, up)


def remove() -> None:
    netns.remove(LINK)
