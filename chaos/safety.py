"""Chaos acts only on the local stack that this checkout started, never on a remote cluster."""

from __future__ import annotations

import os

from stack import targets
from stack.config import OpsConfig
from stack.local import rollout
from stack.local.ray_head import local_pid

FORCE_ENV = "CHAOS_FORCE"


def check(ops: OpsConfig) -> None:
    """Raise SystemExit unless the stack is ours: loopback listeners, a GCS on this machine, our deploy."""
    # Its evidence comes from the targets: one pointed at another cluster would judge the wrong stack.
    targets.refuse_remote(ops, "chaos")
    forced = os.environ.get(FORCE_ENV) == "1"
    if not targets.loopback(ops.listen.host) and not forced:
        raise SystemExit(f"chaos refuses a non-loopback stack ({ops.listen.host}); "
                         f"set {FORCE_ENV}=1 to force")
    if local_pid(f"--gcs_server_port={ops.listen.gcs_port}") is None:
        raise SystemExit(f"no local GCS on port {ops.listen.gcs_port}: chaos acts only on a stack started "
                         "here with `make up`")
    if not rollout.DEPLOYED.exists():
        raise SystemExit(f"{rollout.DEPLOYED} is missing: this checkout did not deploy the running stack")
