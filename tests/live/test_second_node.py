"""`make up NODES=2`: a second Ray node in its own network namespace joins the head, and leaves no trace."""

from __future__ import annotations

import re
import subprocess

import pytest

from stack import prom
from stack.config import OpsConfig
from stack.local import cluster, second_node
from stack.local.ray_head import BIN
from stack.polling import eventually
from stack.profile import select

pytestmark = pytest.mark.live


def active_nodes(ops: OpsConfig) -> int:
    out = subprocess.run([str(BIN / "ray"), "status", "--address", ops.listen.gcs_address],
                         capture_output=True, text=True, timeout=60).stdout
    active = out.split("Active:", 1)[-1].split("Pending:", 1)[0]
    return len(re.findall(r"node_[0-9a-f]+", active))


def scraped(ops: OpsConfig, address: str) -> bool:
    targets = prom.api(ops, "/api/v1/targets")["activeTargets"]
    return any(t["labels"].get("instance") == address and t["health"] == "up" for t in targets)


def test_a_second_node_joins_is_scraped_and_is_removed(live_stack: OpsConfig) -> None:
    assert not second_node.exists(), "a second node is already up; this test adds and removes its own"
    try:
        cluster.start_second_node(live_stack, live_stack.profile(select()).cluster)
        assert eventually(lambda: active_nodes(live_stack) == 2, timeout_s=60), "ray status: not 2 nodes"
        address = f"{second_node.NODE_IP}:{live_stack.listen.metrics_port}"
        assert eventually(lambda: scraped(live_stack, address), timeout_s=60), f"{address} not scraped"
        # The head is still scraped on loopback, not through the namespace.
        assert scraped(live_stack, f"{live_stack.listen.host}:{live_stack.listen.metrics_port}")
    finally:
        second_node.stop_processes()
        second_node.remove()
    assert not second_node.exists()
    assert subprocess.run(["ip", "link", "show", second_node.HOST_IF], capture_output=True).returncode != 0
