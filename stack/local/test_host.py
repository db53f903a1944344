"""`python -m stack.local.test_host up|down|env`: the whole local stack on a "test host", a network
namespace reached only at its own address, to try the toolkit against a target that is not this
machine's loopback (docs/targets.md).

`up` starts the stack inside the namespace with every listener on the namespace's address (an ops
config copy with that listen.host, and Serve's Python proxy: the HAProxy lever needs loopback);
`env` prints the SERVEOPS_*_URL lines that point the toolkit at it; `down` stops it and removes the
namespace. One stack at a time: take the loopback one down first.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import yaml

from stack import targets
from stack.config import OPS_PATH, OPS_PATH_ENV, OpsConfig, load, parse
from stack.local import daemons, netns, ray_head

LINK = netns.Link("serveops-host", host_if="serveops-th", ns_if="serveops-tn", host_ip="10.78.0.1",
                  ns_ip="10.78.0.2")
CONFIG = daemons.RUN_DIR / "test-host" / "ops.yaml"


def write_config(source: Path = OPS_PATH) -> Path:
    """The ops config with every listener on the namespace's address."""
    data = yaml.safe_load(source.read_text())
    data["listen"]["host"] = LINK.ns_ip
    for profile in data["profiles"].values():  # the HAProxy lever needs a loopback host (config.py)
        levers = profile.get("cluster", {}).get("levers") or []
        if "haproxy_ingress" in levers:
            profile["cluster"]["levers"] = [name for name in levers if name != "haproxy_ingress"]
    CONFIG.parent.mkdir(parents=True, exist_ok=True)
    CONFIG.write_text(yaml.safe_dump(data, sort_keys=False))
    return CONFIG


def host_ops() -> OpsConfig:
    """The test host's config as the stack inside sees it (its own listeners are its targets)."""
    return parse(CONFIG, env={})


def env() -> dict[str, str]:
    """What points the toolkit, run on this machine, at the test host."""
    if not CONFIG.exists():
        write_config()
    local = targets.local_urls(host_ops().listen)
    return {targets.URL_ENV[kind]: url for kind, url in local.items()}


def _cluster(action: str) -> int:
    # Without the namespace (removed by hand) `down` still stops the processes: they share this machine.
    inside = LINK.exec_prefix() if netns.exists(LINK) else []
    cmd = [*inside, sys.executable, "-m", "stack.local.cluster", action]
    clean = {k: v for k, v in os.environ.items() if k not in targets.URL_ENV.values()}
    return subprocess.run(cmd, env={**clean, OPS_PATH_ENV: str(CONFIG)}).returncode


def up() -> int:
    if ray_head.is_running(load().listen):
        print("a stack runs on this machine's loopback; `make down` first (one stack at a time)",
              file=sys.stderr)
        return 1
    write_config()
    if not netns.exists(LINK):
        netns.create(LINK)
    print(f"test host: network namespace {LINK.netns} at {LINK.ns_ip}")
    return _cluster("up")


def down() -> int:
    write_config()
    code = _cluster("down")
    netns.remove(LINK)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "env"])
    args = parser.parse_args(argv)
    if args.command == "up":
        return up()
    if args.command == "down":
        return down()
    for name, value in env().items():
        print(f"export {name}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
