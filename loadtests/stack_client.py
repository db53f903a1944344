"""Helpers every load generator shares: make sure the stack is up, find its model."""

from __future__ import annotations

import httpx

from stack.config import OpsConfig
from stack.local import cluster
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
