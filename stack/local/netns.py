"""A network namespace joined to the host by a veth pair: a second "machine" on this one, reached only
at its own address. The second Ray node (`make up NODES=2`) and the test host (stack/local/test_host.py)
each run in one. Nothing leaves the machine."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class Link:
    netns: str
    host_if: str  # the veth's host end; `ip link set <host_if> down` cuts the namespace off
    ns_if: str
    host_ip: str
    ns_ip: str
    prefix: int = 30

    def exec_prefix(self) -> list[str]:
        """Run a command inside the namespace."""
        return ["ip", "netns", "exec", self.netns]


def _ip(link: Link, *args: str, inside: bool = False, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [*link.exec_prefix(), "ip", *args] if inside else ["ip", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


def exists(link: Link) -> bool:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    return link.netns in listed


def create(link: Link) -> None:
    subprocess.run(["ip", "netns", "add", link.netns], check=True)
    _ip(link, "link", "add", link.host_if, "type", "veth", "peer", "name", link.ns_if)
    _ip(link, "link", "set", link.ns_if, "netns", link.netns)
    _ip(link, "addr", "add", f"{link.host_ip}/{link.prefix}", "dev", link.host_if)
    _ip(link, "link", "set", link.host_if, "up")
    _ip(link, "link", "set", "lo", "up", inside=True)
    _ip(link, "addr", "add", f"{link.ns_ip}/{link.prefix}", "dev", link.ns_if, inside=True)
    _ip(link, "link", "set", link.ns_if, "up", inside=True)
    _ip(link, "route", "add", "default", "via", link.host_ip, inside=True)


def set_up(link: Link, up: bool) -> None:
    _ip(link, "link", "set", link.host_if, "up" if up else "down")


def pids(link: Link) -> list[int]:
    done = subprocess.run(["ip", "netns", "pids", link.netns], capture_output=True, text=True)
    return [int(p) for p in done.stdout.split()]


def remove(link: Link) -> None:
    if exists(link):
        subprocess.run(["ip", "netns", "delete", link.netns], check=False)
    _ip(link, "link", "delete", link.host_if, check=False)  # gone with the namespace, unless left behind
