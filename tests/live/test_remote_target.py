"""The toolkit against a stack that is not on this machine's loopback: the whole stack on a test host
(a network namespace, stack/local/test_host.py), reached only at its address, and `make status`,
`make runbook` and `make loadtest` run from the host with the targets pointed there.

Runs last (tests/conftest.py): one stack at a time on 2 cores, so the loopback stack goes down first.
A developer's own stack is brought back afterwards; the session's own is left down for its teardown.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stack import ROOT
from stack.config import OpsConfig
from stack.local import cluster, netns, ray_head, test_host
from stack.profile import select

pytestmark = pytest.mark.live
ADDRESS = test_host.LINK.ns_ip


def make(target: str, env: dict[str, str], **variables: str) -> subprocess.CompletedProcess[str]:
    argv = ["make", "--no-print-directory", target, *(f"{k}={v}" for k, v in variables.items())]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def remote_env(ops: OpsConfig, stack_state: dict[str, bool]) -> Iterator[dict[str, str]]:
    was_up = ray_head.is_running(ops.listen)
    if was_up:
        assert cluster.down(ops) == 0
    try:
        assert test_host.up() == 0, "the stack did not come up on the test host"
        yield {**os.environ, **test_host.env()}
    finally:
        assert test_host.down() == 0
        assert not netns.exists(test_host.LINK)
        assert ray_head.leftover_processes() == [], "the test host's stack left processes behind"
        if was_up and not stack_state["started_here"]:  # a developer's stack: give it back
            assert cluster.up(ops, select(), timeout_s=900) == 0


def test_the_test_host_is_reached_only_at_its_address(ops: OpsConfig, remote_env: dict[str, str]) -> None:
    assert answers(f"http://{ADDRESS}:{ops.listen.serve_port}/v1/models")
    assert not answers(f"{ops.listen.serve_url}/v1/models"), "something serves on this machine's loopback"


def test_make_status_reads_the_test_host(remote_env: dict[str, str]) -> None:
    done = make("status", remote_env)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert f"Serve http://{ADDRESS}:" in out and f"Prometheus http://{ADDRESS}:" in out, out
    assert "not the local stack" in out and "Ray nodes alive: 1" in out, out
    assert "Embedder" in out and "RUNNING" in out, out


def test_make_runbook_diagnoses_the_test_host(remote_env: dict[str, str]) -> None:
    done = make("runbook", remote_env, NAME="ServeReplicaRestarts")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert f"# targets: Serve http://{ADDRESS}:" in out and f"Prometheus http://{ADDRESS}:" in out, out
    assert "found: " in out and "-> exit 0" in out, out  # its steps ran against the test host's Prometheus


def test_a_30s_make_loadtest_drives_the_test_host(remote_env: dict[str, str], tmp_path: Path) -> None:
    done = make("loadtest", {**remote_env, "REPORT_DIR": str(tmp_path)}, DURATION="30")
    out = done.stdout + done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    passed = summary["slo_gate"]["passed"]
    # make exits 2 whenever a recipe fails; the recipe's own status, 1 for a failed gate, is in its line.
    assert done.returncode == (0 if passed else 2), out
    if not passed:
        assert "SLO gate FAILED" in out and "loadtest] Error 1" in out, out
    assert f"targets   Serve http://{ADDRESS}:" in out, out
    assert all(figures["requests"] > 0 for figures in summary["routes"].values()), summary["routes"]
    assert summary["replicas"], "no replica history from the test host's Prometheus"
