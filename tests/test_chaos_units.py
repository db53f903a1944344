"""Chaos experiments as data: every experiment parses, names real actions, probes, alerts and runbook
steps; safety refuses a stack that is not ours."""

from __future__ import annotations

import pytest
import yaml

from chaos import actions, experiment, probes, safety
from runbooks import book
from stack.config import OpsConfig, load

EXPERIMENTS = experiment.names()
ALERTS = {r["alert"] for g in yaml.safe_load(open("alerts/serveops.rules.yaml"))["groups"]
          for r in g["rules"] if "alert" in r}


def test_the_issue_s_experiments_exist() -> None:
    assert set(EXPERIMENTS) == {"oom", "head-partition", "oscillation", "replica-crash", "hung-replica",
                                "bad-rollout", "rolling-update"}


VARIANTS = [(n, False) for n in EXPERIMENTS] + [("head-partition", True)]  # (experiment, second node up)


@pytest.mark.parametrize(("name", "second_node"), VARIANTS)
def test_experiment_names_real_things(name: str, second_node: bool) -> None:
    exp = experiment.load(name).for_cluster(second_node)
    for step in [*exp.setup, *exp.inject, *exp.heal, *exp.rollbacks]:
        assert step.name in actions.ACTIONS, step.name
        for mode in ("normal", "short"):
            exp.resolve(step.args, mode)  # every "$timing" is defined
    for step in [*exp.steady_state, *exp.verify]:
        assert step.name in probes.PROBES, step.name
    for expected in exp.expect:
        assert expected.alert in ALERTS, expected.alert
    if exp.runbook:
        rb = book.load(exp.runbook.name)
        kinds = {s.name: s.kind for s in rb.steps}
        for step in exp.runbook.finds:
            assert kinds.get(step) == "diagnose", f"{exp.runbook.name}:{step}"
        for step in exp.runbook.mitigation:
            assert kinds.get(step) == "mitigate", f"{exp.runbook.name}:{step}"
    # a fault that pages must be found by a runbook, and one that does not must lose no request
    assert exp.expect or exp.max_failed_requests == 0
    assert bool(exp.expect) == bool(exp.runbook)


def test_timings_differ_by_mode() -> None:
    exp = experiment.load("oscillation")
    assert exp.timing("window_s", "short") < exp.timing("window_s", "normal")


def with_listen(**changes: object) -> OpsConfig:
    ops = load()
    return OpsConfig.model_validate({**ops.model_dump(), "listen": {**ops.listen.model_dump(), **changes}})


def test_safety_refuses_a_remote_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    remote = with_listen(host="10.1.2.3")
    monkeypatch.delenv(safety.FORCE_ENV, raising=False)
    with pytest.raises(SystemExit, match="non-loopback"):
        safety.check(remote)


def test_safety_refuses_when_no_local_gcs() -> None:
    elsewhere = with_listen(gcs_port=1)
    with pytest.raises(SystemExit, match="no local GCS"):
        safety.check(elsewhere)


def test_loopback_addresses() -> None:
    assert safety.is_loopback("127.0.0.1") and safety.is_loopback("::1") and safety.is_loopback("localhost")
    assert not safety.is_loopback("0.0.0.0") and not safety.is_loopback("192.0.2.2")
