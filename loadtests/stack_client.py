"""Helpers every load generator shares: make sure the stack is up, find its model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from stack import targets
from stack.config import OpsConfig
from stack.local import cluster, second_node
from stack.profile import select


def models(ops: OpsConfig) -> list[str]:
    """Model ids the OpenAI endpoint lists, or [] when it does not answer."""
    try:
        r = httpx.get(f"{ops.targets.serve_url}/v1/models", headers=targets.headers("serve"), timeout=5)
        r.raise_for_status()
    except httpx.HTTPError:
        return []
    return [m["id"] for m in r.json()["data"]]


def ensure_up(ops: OpsConfig) -> list[str]:
    """Start the local stack when it is not serving; return the model ids. A remote target that does
    not answer is an error: starting a local stack would load the wrong cluster."""
    found = models(ops)
    if found:
        return found
    if "serve" in targets.remote(ops):
        raise SystemExit(f"Serve at {ops.targets.serve_url} lists no model at /v1/models; "
                         f"check {targets.URL_ENV['serve']} and {targets.HEADERS_ENV['serve']}")
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
