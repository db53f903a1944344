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
from stack.local import ray_head

NETNS = "serveops-n2"
HOST_IF, NODE_IF = "serveops-h", "serveops-n"  # the veth pair's two ends
HOST_IP, NODE_IP, PREFIX = "10.77.0.1", "10.77.0.2", 30
NODE_IP_REGEX = r"10\.77\.0\.\d+"  # Prometheus keeps these targets as they are (see monitoring.py)


def _ip(*args: str, netns: bool = False, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", "netns", "exec", NETNS, "ip", *args] if netns else ["ip", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


def exists() -> bool:
    return NETNS in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()


def create_link() -> None:
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    _ip("link", "add", HOST_IF, "type", "veth", "peer", "name", NODE_IF)
    _ip("link", "set", NODE_IF, "netns", NETNS)
    _ip("addr", "add", f"{HOST_IP}/{PREFIX}", "dev", HOST_IF)
    _ip("link", "set", HOST_IF, "up")
    _ip("link", "set", "lo", "up", netns=True)
    _ip("addr", "add", f"{NODE_IP}/{PREFIX}", "dev", NODE_IF, netns=True)
    _ip("link", "set", NODE_IF, "up", netns=True)
    # The head advertises the host's address; the host answers it on the veth too.
    _ip("route", "add", "default", "via", HOST_IP, netns=True)


def start_command(ops: OpsConfig, num_cpus: int) -> list[str]:
    return ["ip", "netns", "exec", NETNS, str(ray_head.BIN / "ray"), "start",
            f"--address={HOST_IP}:{ops.listen.gcs_port}", f"--node-ip-address={NODE_IP}",
            f"--num-cpus={num_cpus}", f"--metrics-export-port={ops.listen.metrics_port}",
            "--disable-usage-stats"]


def start(ops: OpsConfig, num_cpus: int, env: dict[str, str], log_path: str) -> None:
    if not exists():
        create_link()
    with open(log_path, "w") as log:
        done = subprocess.run(start_command(ops, num_cpus), env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f"second node: `ray start` in {NETNS} failed; see {log_path}")


def alive_nodes(ops: OpsConfig, wait_for: int = 2, timeout_s: float = 60) -> int:
    """Nodes the GCS lists as alive, once there are wait_for of them (or at the deadline)."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = len(ray_head.alive_nodes(ops.listen))
        if alive >= wait_for or time.monotonic() >= deadline:
            return alive
        time.sleep(2)


def stop_processes() -> int:
    """Kill the processes inside the namespace (the second node's raylet and workers) and only those:
    `ray stop` would match the head's processes too, which share this process namespace."""
    pids = [int(p) for p in subprocess.run(["ip", "netns", "pids", NETNS], capture_output=True,
                                           text=True).stdout.split()]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)


def set_link(up: bool) -> None:
    """Cut (or restore) the link between the head and the second node."""
    _ip("link", "set", HOST_IF, "up" if up else "down")


def remove() -> None:
    if exists():
        subprocess.run(["ip", "netns", "delete", NETNS], check=False)
    _ip("link", "delete", HOST_IF, check=False)  # gone with the namespace, unless it was left behind
