"""Chaos experiments as data: every experiment parses, names real actions, probes, alerts and runbook
steps; safety refuses a stack that is not ours."""

from __future__ import annotations

import pytest
import yaml

from chaos import actions, experiment, probes, safety
from chaos.context import Context
from runbooks import book
from stack import targets
from stack.config import OpsConfig, load
from stack.local.serve_deploy import DeploymentState

EXPERIMENTS = experiment.names()
ALERTS = {r["alert"] for g in yaml.safe_load(open("alerts/serveops.rules.yaml"))["groups"]
          for r in g["rules"] if "alert" in r}


def test_the_issue_s_experiments_exist() -> None:
    assert set(EXPERIMENTS) == {"oom", "head-partition", "oscillation", "replica-crash", "hung-replica",
                                "bad-rollout", "rolling-update",  # issue 15
                                "half-alive", "half-alive-unwatched", "slo-burn", "metric-missing"}  # 16


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
    assert exp.expect or exp.loss.max_failed == 0
    assert bool(exp.expect) == bool(exp.runbook)


# The loss goals of issue 15: failed over sent on the experiment's load route.
LOSS_GOALS = {"replica-crash": (None, 6), "oom": ("/embed", 0.01), "bad-rollout": (None, 0),
              "oscillation": (None, 0), "head-partition": (None, 0), "rolling-update": (None, 0),
              "hung-replica": ("/classify", 0.02),
              # issue 16: counts, since the hung replica holds a handful of requests whatever the rate
              "half-alive": (None, 5), "half-alive-unwatched": (None, 20), "slo-burn": (None, 0),
              "metric-missing": (None, 0)}
# replica-crash was 1% of /embed (issue 15); a short run sends ~80 requests, where 1% is under one
# request: the bound is now what the hypothesis names, the requests in flight on the killed replica
# (rate x latency: 4/s x up to 1.5 s on the busy CI box; a later fix bounds each lost request to one
# sent before the kill instead of a count).


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_states_its_loss_bound(name: str) -> None:
    exp = experiment.load(name)
    route, goal = LOSS_GOALS[name]
    if route:
        assert exp.load.route == route and exp.loss.max_share == goal
    else:
        assert exp.loss.max_failed == goal
    assert f"loss: {{max_{'share' if route else 'failed'}: {goal}}}  # " in (
        experiment.EXPERIMENTS_DIR / f"{name}.yaml").read_text(), "the bound is stated next to its reason"


def test_an_experiment_without_a_loss_bound_does_not_load(tmp_path) -> None:
    raw = yaml.safe_load((experiment.EXPERIMENTS_DIR / "replica-crash.yaml").read_text())
    del raw["loss"]
    path = tmp_path / "unbounded.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="no `loss` bound"):
        experiment.parse(path)
    for both in ({}, {"max_failed": 0, "max_share": 0.01}):
        with pytest.raises(ValueError, match="exactly one"):
            experiment.LossBound.model_validate(both)


def test_loss_bound_arithmetic() -> None:
    share = experiment.LossBound(max_share=0.01)
    assert share.allows(4, 400) and not share.allows(5, 400) and share.allows(0, 0)
    count = experiment.LossBound(max_failed=0)
    assert count.allows(0, 1000) and not count.allows(1, 1000)


def test_hung_requests_are_seen_before_their_timeout() -> None:
    """A request in flight past the objective fails load_clean at once, and counts as failed if the
    load stops before it is answered."""
    from chaos.load import Load, Outcome

    load = Load("http://x.invalid/embed", {}, {}, rate_per_s=4, objective_s=1.0)
    now = 1000.0
    load.outcomes = [Outcome(now - 3, 0.1, 200), Outcome(now - 2, 1.5, 200)]
    assert load.hung_now(now) == 0 and load.hung(now) == 1  # one answered late
    load._in_flight = {1: now - 0.5, 2: now - 4.0}
    assert load.in_flight(now) == [0.5, 4.0]
    assert load.hung_now(now) == 1 and load.hung(now) == 2
    assert load.totals() == (4, 2)  # the two unanswered count as sent and failed


def test_timings_differ_by_mode() -> None:
    exp = experiment.load("oscillation")
    assert exp.timing("window_s", "short") < exp.timing("window_s", "normal")


def with_listen(**changes: object) -> OpsConfig:
    ops = load()
    targets = {**ops.targets.model_dump(), **dict.fromkeys(
        ("serve_url", "prometheus_url", "alertmanager_url", "ray_dashboard_url"), "local")}
    data = {**ops.model_dump(), "listen": {**ops.listen.model_dump(), **changes}, "targets": targets}
    for profile in data["profiles"].values():  # the HAProxy lever needs a loopback host (stack/config.py)
        profile["cluster"]["levers"] = [n for n in profile["cluster"]["levers"] if n != "haproxy_ingress"]
    return OpsConfig.model_validate(data)


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
    assert targets.loopback("127.0.0.1") and targets.loopback("::1") and targets.loopback("localhost")
    assert not targets.loopback("0.0.0.0") and not targets.loopback("192.0.2.2")



def _serve_answers(monkeypatch: pytest.MonkeyPatch, statuses: list[str]) -> Context:
    """A bad-rollout context whose Serve reports each status in turn, the last one for ever."""
    exp = experiment.load("bad-rollout")
    left = list(statuses)

    def states(_details: object) -> list[DeploymentState]:
        status = left.pop(0) if len(left) > 1 else left[0]
        return [DeploymentState(app=exp.target.app, app_status="DEPLOYING", deployment=exp.target.deployment,
                                status=status, running=1, target=1, message="")]
    monkeypatch.setattr(actions.serve_deploy, "details", lambda _url: {})
    monkeypatch.setattr(actions.serve_deploy, "states", states)
    monkeypatch.setattr(actions.time, "sleep", lambda _s: None)
    return Context(load(), exp, "short", {}, load=None)  # type: ignore[arg-type]


def test_the_fault_of_a_bad_release_is_serve_giving_up(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _serve_answers(monkeypatch, ["UPDATING", "UPDATING", "DEPLOY_FAILED"])
    actions.wait_target_status(ctx, "DEPLOY_FAILED", timeout_s=60)
    assert "fault" in ctx.marks
    assert any(s.name == "wait_target_status" for s in experiment.load("bad-rollout").inject)


def test_a_release_serve_never_gives_up_on_fails_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _serve_answers(monkeypatch, ["UPDATING"])
    clock = iter(range(10_000))
    monkeypatch.setattr(actions.time, "time", lambda: float(next(clock)))
    with pytest.raises(RuntimeError, match="not DEPLOY_FAILED after 5s"):
        actions.wait_target_status(ctx, "DEPLOY_FAILED", timeout_s=5)
    assert "fault" not in ctx.marks
