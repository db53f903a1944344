"""Helpers every load generator shares: make sure the stack is up, find its model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from stack.config import OpsConfig
from stack.local import cluster, second_node
from stack.profile import select


def models(ops: OpsConfig) -> list[str]:
    """Model ids the OpenAI endpoint lists, or [] when it does not answer."""
    try:
        r = httpx.get(f"{ops.listen.serve_url}/v1/models", timeout=5)
        r.raise_for_status()
    except httpx.HTTPError:
        return []
    return [m["id"] for m in r.json()["data"]]


def ensure_up(ops: OpsConfig) -> list[str]:
    """Start the stack when it is not serving; return the model ids."""
    found = models(ops)
    if found:
        return found
    if cluster.up(ops, select(), timeout_s=900) != 0:
        raise SystemExit("make up failed; see the logs named above")
    return models(ops)


def restart(settings: dict[str, str], log: Path) -> None:
    """`make down`, then `make up` with settings in the environment (head settings such as
    SERVEOPS_INSTRUMENTATION or SERVEOPS_LEVERS take effect on a fresh head), and the second node if
    one ran. Output goes to log."""
    shown = " ".join(f"{k}={v}" for k, v in settings.items())
    env = {**os.environ, **settings, **({"NODES": "2"} if second_node.exists() else {})}
    with log.open("a") as out:
        for action in ("down", "up"):
            out.write(f"\n== stack.local.cluster {action} ({shown})\n")
            out.flush()
            proc = subprocess.run([sys.executable, "-m", "stack.local.cluster", action], env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
            if proc.returncode != 0:
                raise RuntimeError(f"stack.local.cluster {action} with {shown} exited {proc.returncode}; "
                                   f"see {log}")
