"""Fixtures. The live stack is brought up once per session and taken down at the end.

A stack that is already serving (a developer's `make up`) is reused and left running.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loadtests.stack_client import models
from stack.config import OpsConfig, load
from stack.local import cluster, ray_head
from stack.profile import select


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the clean-load checks and the scorecard's soak first, before any test injects a fault or a
    5xx; the bench's smoke set after the other live tests, on a stack no fault has touched (it
    restarts nothing); then the chaos experiments: they kill, stop and redeploy replicas (sort is
    stable, so their order holds); then the scorecard from the soak and the chaos reports; last, the
    stack on a test host, which takes the loopback stack down (one stack at a time)."""
    phases = {"test_clean_load": 0, "live.test_scorecard_soak": 0, "live.test_bench": 1.5,
              "live.test_chaos": 2, "live.test_scorecard": 2.5, "live.test_remote_target": 3}

    def phase(item: pytest.Item) -> float:
        name = item.module.__name__
        return next((p for suffix, p in phases.items() if name.endswith(suffix)), 1)

    items.sort(key=phase)


@pytest.fixture(scope="session")
def ops() -> OpsConfig:
    return load()


@pytest.fixture(scope="session")
def session_reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Reports the scorecard reads after other tests wrote them: the soak's, then the chaos runs'."""
    return tmp_path_factory.mktemp("reports")


@pytest.fixture(scope="session")
def stack_state() -> dict[str, bool]:
    """started_here: this session started the loopback stack (and takes it down at the end)."""
    return {"started_here": False}


@pytest.fixture(scope="session")
def live_stack(ops: OpsConfig, stack_state: dict[str, bool]) -> Iterator[OpsConfig]:
    if models(ops):
        yield ops
        return
    assert cluster.up(ops, select(), timeout_s=900) == 0, "make up failed"
    stack_state["started_here"] = True
    yield ops
    assert cluster.down(ops) == 0
    assert ray_head.leftover_processes() == [], "make down left processes behind"


@pytest.fixture(scope="session")
def serve_url(live_stack: OpsConfig) -> str:
    return live_stack.listen.serve_url


@pytest.fixture(scope="session")
def model_id(live_stack: OpsConfig) -> str:
    return live_stack.profile(select()).llm.models[0].model_id


@pytest.fixture(scope="session")
def metrics_url(live_stack: OpsConfig) -> str:
    return live_stack.listen.metrics_url


@pytest.fixture(scope="session")
def http(live_stack: OpsConfig) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_stack.listen.serve_url, timeout=60) as client:
        yield client
