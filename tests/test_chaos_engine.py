"""The chaos engine in-process, the way Chaos Toolkit tests its runner: fake actions, probes, alerts,
runbook, load and clock through `engine.Effects`. No Ray, no network, no real waiting.

The fake stack reacts to the fault: the `crash` action makes the expected alert fire a few seconds
later and the `healthy` probe fail until the stack recovers. Each test changes one thing and checks
the verdict, the problem it names and what the engine did (in order) or did not do.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from chaos import actions, engine, probes
from chaos.context import Context
from chaos.experiment import Experiment
from chaos.load import Load, Outcome
from runbooks.book import Step as RunbookStep
from runbooks.execute import StepResult
from stack.config import OpsConfig, load

T0 = 1_000_000.0  # the fake clock's start
LABELS = {"application": "embed", "deployment": "Embedder"}
ALERT = "ServeReplicaRestarts{'application': 'embed', 'deployment': 'Embedder'}"  # as the result names it
CONDITION_LEAD_S = 4.0  # the fake Prometheus saw the condition this long before Alertmanager had it
RUNBOOK_STEP_S = 5.0  # each fake runbook run takes this long on the fake clock

EXPERIMENT: dict[str, Any] = {
    "name": "fake-crash", "title": "a fake crash", "hypothesis": "the engine judges it",
    "loss": {"max_share": 0.05},  # 1 of 40 failed: within
    "target": {"app": "embed", "deployment": "Embedder"},
    "load": {"route": "/embed", "body": {"text": "x"}, "rate_per_s": 4},
    "timings": {"settle_s": (60, 6)},
    "setup": [{"name": "start_load", "args": {"name": "extra"}}],
    "steady_state": [{"name": "healthy"}],
    "inject": [{"name": "crash", "args": {"settle_s": "$settle_s"}}],
    "expect": [{"alert": "ServeReplicaRestarts", "labels": LABELS}],
    "detect_within_s": 90,
    "runbook": {"name": "ServeReplicaRestarts", "finds": {"restarts": r"\d+ restarts", "deaths": "crashed"},
                "mitigation": ["confirm-recovered"]},
    "heal": [{"name": "heal"}],
    "verify": [{"name": "healthy"}],
    "recover_within_s": 180,
    "rollbacks": [{"name": "restore"}, {"name": "cleanup"}],
}


class Clock:
    """Time that moves only when the engine sleeps (or a fake step takes time)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeLoad(Load):
    """No threads, no requests: a fixed tally."""

    def __init__(self, events: list[str], name: str, sent: int = 40, failed: int = 1, slow: int = 0) -> None:
        super().__init__("http://fake.invalid/embed", {}, {}, rate_per_s=4, objective_s=1.0)
        self.events, self.name = events, name
        self.outcomes = ([Outcome(T0, 0.1, 200)] * (sent - failed - slow) + [Outcome(T0, 0.1, 0)] * failed
                         + [Outcome(T0, 8.0, 200)] * slow)

    def start(self) -> FakeLoad:
        self.events.append(f"{self.name} load started")
        return self

    def stop(self) -> None:
        self.events.append(f"{self.name} load stopped")


class FakeStack:
    """The world the engine acts on, as its actions, probes, alerts and runbook see it."""

    def __init__(self, steady: bool = True, detect_after_s: float | None = 12,
                 recover_after_s: float | None = 30, crash_error: str | None = None,
                 rollback_error: str | None = None, firing_before: float | None = None,
                 outputs: dict[str, str] | None = None, mitigation_exit: int = 0,
                 load: tuple[int, int, int] = (40, 1, 0), mitigation_s: float = 0.0,
                 evidence_at: float | None = None, resolve_after_heal_s: float | None = None,
                 replicas: tuple[str, ...] = (), evidence_shows_s: float = 0.0) -> None:
        self.clock = Clock()
        self.events: list[str] = []
        self.calls: dict[str, dict[str, Any]] = {}  # action -> its last arguments
        self.runbook_calls: list[dict[str, Any]] = []
        self.steady, self.recover_after_s, self.detect_after_s = steady, recover_after_s, detect_after_s
        self.crash_error, self.rollback_error = crash_error, rollback_error
        self.mitigation_exit, self.mitigation_s = mitigation_exit, mitigation_s
        self.load = load  # sent, failed, answered past the objective
        # When the cause left its evidence (a crash in the logs); None: at the fault. A runbook that
        # honours SINCE finds nothing older than it.
        self.evidence_at = evidence_at
        self.evidence_shows_s = evidence_shows_s  # the runbook's queries show it this long after the fault
        self.outputs = outputs or {"restarts": "3 restarts of embed/Embedder", "deaths": "pid 42 (crashed)"}
        self.fault_at: float | None = None
        # [since, until) windows of the expected alert; one already firing before the fault, if asked
        self.firing: list[tuple[float, float]] = [] if firing_before is None else [(T0 - 600, firing_before)]
        # The alert stops firing this long after the heal (a burn-rate page's short window); None: never.
        self.resolve_after_heal_s = resolve_after_heal_s
        # Per-replica alerts: (old, new) replica labels; the old instance fires from before the fault.
        self.replicas = replicas

    # actions
    def act(self, name: str) -> actions.Action:
        def action(ctx: Context, **kwargs: Any) -> None:
            self.events.append(f"action {name}" + (f" {kwargs['name']}" if "name" in kwargs else ""))
            self.calls[name] = kwargs
            getattr(self, f"on_{name}", lambda ctx, **kw: None)(ctx, **kwargs)
        return action

    def on_start_load(self, ctx: Context, name: str) -> None:
        ctx.loads[name] = FakeLoad(self.events, name).start()

    def on_stop_load(self, ctx: Context, name: str) -> None:
        ctx.loads.pop(name).stop()

    def on_crash(self, ctx: Context, settle_s: float) -> None:
        if self.crash_error:
            raise RuntimeError(self.crash_error)
        self.fault_at = self.clock()
        if self.detect_after_s is not None:
            self.firing.append((self.fault_at + self.detect_after_s, math.inf))

    def on_heal(self, ctx: Context) -> None:
        if self.resolve_after_heal_s is not None:
            end = self.clock() + self.resolve_after_heal_s
            self.firing = [(since, min(until, end)) for since, until in self.firing]

    def on_restore(self, ctx: Context) -> None:
        if self.rollback_error:
            raise RuntimeError(self.rollback_error)

    # probes
    def healthy(self, ctx: Context) -> tuple[bool, str]:
        self.events.append("probe healthy")
        if self.fault_at is None:
            return self.steady, "before the fault"
        up = self.recover_after_s is not None and self.clock() >= self.fault_at + self.recover_after_s
        return up, f"{self.clock() - self.fault_at:g}s after the fault"

    # alerts
    def active(self, ops: OpsConfig) -> list[dict[str, Any]]:
        self.events.append("alertmanager")
        return self._alerts()

    def in_prometheus(self, ops: OpsConfig) -> list[dict[str, Any]]:
        self.events.append("prometheus")
        return self._alerts()

    def _alerts(self) -> list[dict[str, Any]]:
        # Another deployment's restarts fire throughout: only the expected labels may count.
        noise = {"labels": {"alertname": "ServeReplicaRestarts", "application": "embed",
                            "deployment": "Other"}, "activeAt": stamp(T0 - 900)}
        if self.replicas:  # an old replica's instance fires throughout; the fault's is a new one
            old = self.replicas[0]
            noise = {"labels": {"alertname": "ServeReplicaRestarts", **LABELS, "replica": old},
                     "activeAt": stamp(T0 - 900), "state": "firing"}
        extra = {"replica": self.replicas[1]} if self.replicas else {}
        return [noise] + [{"labels": {"alertname": "ServeReplicaRestarts", **LABELS, **extra},
                           "activeAt": stamp(since - CONDITION_LEAD_S), "state": "firing"}
                          for since, until in self.firing if since <= self.clock() < until]

    # runbook
    def runbook(self, name: str, ops: OpsConfig, *, confirm: bool, env: Mapping[str, str],
                kinds: tuple[str, ...] | None = None, only: list[str] | None = None) -> list[StepResult]:
        self.runbook_calls.append({"name": name, "confirm": confirm, "env": dict(env), "kinds": kinds,
                                   "only": only})
        self.clock.sleep(RUNBOOK_STEP_S)
        if only:
            self.events.append(f"runbook mitigate {','.join(only)}")
            self.clock.sleep(self.mitigation_s)
            return [StepResult(RunbookStep("mitigate", s, "true", ""), True, self.mitigation_exit, "", 1.0)
                    for s in only]
        self.events.append("runbook diagnose")
        evidence = self.fault_at if self.evidence_at is None else self.evidence_at
        fresh = evidence is not None and evidence >= float(env.get("SINCE", "-inf"))
        fresh = fresh and self.fault_at is not None and self.clock() >= self.fault_at + self.evidence_shows_s
        return [StepResult(RunbookStep("diagnose", s, "true", ""), True, 0, out if fresh else "", 1.0)
                for s, out in self.outputs.items()]

    def effects(self) -> engine.Effects:
        names = ("start_load", "stop_load", "crash", "heal", "restore", "cleanup")
        return engine.Effects(actions={n: self.act(n) for n in names}, probes={"healthy": self.healthy},
                              alerts=self, runbook=self.runbook,
                              load=lambda exp, ops: FakeLoad(self.events, "main", *self.load),
                              baseline=lambda: {"applications": []}, clock=self.clock, sleep=self.clock.sleep)


def stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module")
def ops() -> OpsConfig:
    return load()


def run(ops: OpsConfig, stack: FakeStack, **changes: Any) -> engine.Result:
    exp = Experiment.model_validate({**EXPERIMENT, **changes})
    result, _ = engine.run(exp, ops, "short", stack.effects())
    return result


def phases(events: list[str]) -> list[str]:
    """The events with repeats in a row (polls) collapsed to one."""
    return [e for i, e in enumerate(events) if i == 0 or events[i - 1] != e]


# How every run ends: the loads stop, then every rollback runs, in order.
ENDING = ["main load stopped", "action stop_load extra", "extra load stopped",
          "action restore", "action cleanup"]


def test_a_passing_run_goes_through_every_phase_in_order(ops: OpsConfig) -> None:
    stack = FakeStack()
    result = run(ops, stack)
    assert result.passed and result.problems == []
    assert phases(stack.events) == [
        "action start_load extra", "extra load started", "main load started",  # setup, then the load
        "probe healthy", "alertmanager",  # steady state; nothing expected already firing
        "action crash", "alertmanager", "prometheus",  # inject; detect (polls), then activeAt
        "runbook diagnose", "action heal", "runbook mitigate confirm-recovered", "probe healthy",
        *ENDING]
    assert stack.calls["crash"] == {"settle_s": 6}  # "$settle_s" in short mode
    diagnose, mitigate = stack.runbook_calls
    assert diagnose["confirm"] is False and diagnose["kinds"] == ("diagnose",)  # diagnosis never mutates
    assert mitigate["confirm"] is True and mitigate["only"] == ["confirm-recovered"]
    assert diagnose["env"] == {"APP": "embed", "DEPLOYMENT": "Embedder", "SINCE": f"{T0:.3f}"}
    # Timings from the fake clock: the alert fires 12s after the fault and is seen on the next 1s
    # poll; each runbook run takes 5s; the probe holds 30s after the fault, seen on a 2s poll.
    assert result.detect_s == {ALERT: 12.0}
    assert result.condition_s == {ALERT: 12.0 - CONDITION_LEAD_S}
    assert result.recover_s == 31.0
    assert {k: v - T0 for k, v in result.marks.items()} == {
        "inject": 0, "detected": 13, "healed": 18, "mitigation_started": 18, "mitigated": 23, "recovered": 31}
    assert result.diagnosis == {"restarts": "3 restarts", "deaths": "crashed"}
    assert result.mitigation == {"confirm-recovered": 0}
    assert (result.sent, result.failed, result.hung, result.loss_bound) == (40, 1, 0, "<= 5.0%")
    assert result.log[0] == "[    0.0s] experiment fake-crash (short): a fake crash"
    assert "[   31.0s] recovered 31.0s after the fault" in result.log


def test_steady_state_failing_aborts_without_injecting(ops: OpsConfig) -> None:
    stack = FakeStack(steady=False)
    result = run(ops, stack)
    assert not result.passed
    assert result.problems == ["steady state not met: healthy: before the fault"]
    assert "action crash" not in stack.events and "inject" not in result.marks
    assert stack.runbook_calls == [] and result.detect_s == {}
    assert stack.clock() - T0 > 120  # it gave the steady state its 120s first
    assert stack.events[-len(ENDING):] == ENDING


def test_an_expected_alert_that_never_fires_fails_and_names_it(ops: OpsConfig) -> None:
    stack = FakeStack(detect_after_s=None)
    result = run(ops, stack)
    assert not result.passed
    assert result.problems == [f"{ALERT} did not fire within 90s"]
    assert result.detect_s == {ALERT: None} and result.condition_s == {}
    assert result.marks["detected"] - result.marks["inject"] == 91  # polled 1s at a time up to the bound
    assert "runbook diagnose" in stack.events  # the rest of the experiment still runs and is judged


def test_a_diagnosis_that_does_not_match_fails_and_names_the_step(ops: OpsConfig) -> None:
    stack = FakeStack(outputs={"restarts": "3 restarts of embed/Embedder", "deaths": "pid 42 exited 0"})
    result = run(ops, stack)
    assert not result.passed
    assert result.problems == ["runbook ServeReplicaRestarts step deaths did not find /crashed/"]
    assert result.diagnosis == {"restarts": "3 restarts", "deaths": "NOT FOUND /crashed/"}


def test_a_diagnosis_runs_again_while_its_evidence_trails_the_page(ops: OpsConfig) -> None:
    """The page fired at 12s; the runbook's queries show the cause only from 30s: the first run (done
    at 18s) finds nothing, the next (10s later) finds it, and the run passes."""
    stack = FakeStack(evidence_shows_s=30)
    result = run(ops, stack)
    assert result.passed, result.problems
    diagnoses = [c for c in stack.runbook_calls if c["kinds"] == ("diagnose",)]
    assert len(diagnoses) == 2 and all(c["env"]["SINCE"] == f"{T0:.3f}" for c in diagnoses)
    assert any("found nothing yet" in line for line in result.log)


def test_a_diagnosis_that_never_finds_its_cause_stops_at_its_bound(ops: OpsConfig) -> None:
    stack = FakeStack(evidence_shows_s=10_000)
    result = run(ops, stack)
    assert result.problems[0] == "runbook ServeReplicaRestarts step restarts did not find /\\d+ restarts/"
    diagnoses = [c for c in stack.runbook_calls if c["kinds"] == ("diagnose",)]
    # runs start at 13, 28, 43, 58 and 73s (5s each, then 10s apart), none after 13 + 60s
    assert len(diagnoses) == 5


def test_a_missing_diagnosis_step_output_fails_too(ops: OpsConfig) -> None:
    result = run(ops, FakeStack(outputs={"restarts": "3 restarts"}))
    assert result.problems == ["runbook ServeReplicaRestarts step deaths did not find /crashed/"]


def test_an_injection_that_raises_still_runs_every_rollback(ops: OpsConfig) -> None:
    stack = FakeStack(crash_error="no RUNNING replica")
    result = run(ops, stack)
    assert not result.passed
    assert result.problems == ["RuntimeError: no RUNNING replica"]
    assert phases(stack.events)[-len(ENDING) - 1:] == ["action crash", *ENDING]  # straight to the rollbacks
    assert stack.runbook_calls == []
    assert (result.sent, result.failed) == (40, 1)  # the load's tally still comes back


def test_a_failing_rollback_does_not_stop_the_next(ops: OpsConfig) -> None:
    stack = FakeStack(rollback_error="serve deploy refused")
    result = run(ops, stack)
    assert result.problems == ["rollback restore failed: serve deploy refused"]
    assert stack.events[-len(ENDING):] == ENDING


PATHS = {
    "passed": {},
    "steady state fails": {"steady": False},
    "alert never fires": {"detect_after_s": None},
    "diagnosis misses": {"outputs": {"restarts": "none"}},
    "injection raises": {"crash_error": "boom"},
    "never recovers": {"recover_after_s": None},
    "mitigation fails": {"mitigation_exit": 1},
    "alert never resolves": {"firing_before": math.inf},
    "a rollback raises": {"rollback_error": "boom"},
}


@pytest.mark.parametrize("path", PATHS)
def test_rollbacks_and_loads_end_on_every_path(ops: OpsConfig, path: str) -> None:
    stack = FakeStack(**PATHS[path])
    result = run(ops, stack)
    assert result.passed == (path == "passed")
    assert stack.events[-len(ENDING):] == ENDING
    assert stack.events.count("action restore") == stack.events.count("action cleanup") == 1


def test_recovery_that_never_holds_fails(ops: OpsConfig) -> None:
    stack = FakeStack(recover_after_s=None)
    result = run(ops, stack)
    assert not result.passed
    assert result.problems == ["steady state not back within 180s: healthy: 181s after the fault"]
    assert result.recover_s is None and "recovered" not in result.marks
    assert result.detect_s == {ALERT: 12.0}  # detection and diagnosis were fine: only recovery failed


def test_a_failed_mitigation_step_fails_and_names_it(ops: OpsConfig) -> None:
    result = run(ops, FakeStack(mitigation_exit=1))
    assert result.problems == ["mitigation step confirm-recovered exited 1"]
    assert result.mitigation == {"confirm-recovered": 1}


def test_an_alert_already_firing_is_waited_out_before_the_fault(ops: OpsConfig) -> None:
    stack = FakeStack(firing_before=T0 + 35)  # e.g. a redeploy's restarts, still in the 15m window
    result = run(ops, stack)
    assert result.passed, result.problems
    assert result.marks["inject"] - T0 == 40  # polled every 10s until it resolved, then the fault
    waiting = f"waiting up to {engine.RESOLVE_WAIT_S:g}s for {[ALERT]} to resolve before the fault"
    assert result.log[2] == f"[    0.0s] {waiting}"
    assert result.detect_s == {ALERT: 12.0}  # detection counts from the fault, not the old alert


def test_an_alert_that_never_resolves_fails_without_injecting(ops: OpsConfig) -> None:
    stack = FakeStack(firing_before=math.inf)
    result = run(ops, stack)
    assert result.problems == [f"already firing before the fault, so detection cannot be shown: {[ALERT]}"]
    assert "action crash" not in stack.events
    assert stack.clock() - T0 >= engine.RESOLVE_WAIT_S


def test_a_fault_an_action_marks_later_is_what_detection_counts_from(ops: OpsConfig) -> None:
    stack = FakeStack()

    def wait_killed(ctx: Context, seconds: float) -> None:  # e.g. a memory surge's kill
        stack.clock.sleep(seconds)
        ctx.mark("fault")
        stack.on_crash(ctx, settle_s=0)

    fx = stack.effects()
    fx.actions = {**fx.actions, "wait_killed": wait_killed}
    inject = [{"name": "wait_killed", "args": {"seconds": 7}}]
    exp = Experiment.model_validate({**EXPERIMENT, "inject": inject})
    result, _ = engine.run(exp, ops, "short", fx)
    assert result.marks["fault"] - result.marks["inject"] == 7
    assert result.detect_s == {ALERT: 12.0} and result.recover_s == 31.0


# One test per verdict rule: each crafted run breaks exactly that rule, and the verdict names it.

def test_rule_loss_over_the_bound_fails(ops: OpsConfig) -> None:
    assert run(ops, FakeStack(load=(40, 2, 0))).passed  # 5% of 40: two may fail
    result = run(ops, FakeStack(load=(40, 3, 0)))
    assert result.problems == ["3 of 40 requests to /embed failed (3 no answer; 0 hung past 1s); "
                               "the bound is <= 5.0%"]
    result = run(ops, FakeStack(), loss={"max_failed": 0})
    assert result.problems == ["1 of 40 requests to /embed failed (1 no answer; 0 hung past 1s); "
                               "the bound is <= 0"]


def test_hung_requests_are_reported_beside_the_loss(ops: OpsConfig) -> None:
    result = run(ops, FakeStack(load=(40, 1, 3)))
    assert result.passed and (result.failed, result.hung) == (1, 3)


def test_rule_recovery_later_than_its_bound_fails(ops: OpsConfig) -> None:
    # The mitigation runs past the budget; the steady state holds the moment it is checked.
    result = run(ops, FakeStack(mitigation_s=200))
    assert result.recover_s is not None and result.recover_s > 180
    assert result.problems == [f"recovered {result.recover_s:g}s after the fault; the bound is 180s"]


def test_rule_an_absent_alert_fails(ops: OpsConfig) -> None:
    result = run(ops, FakeStack(detect_after_s=None))
    assert result.problems == [f"{ALERT} did not fire within 90s"]


def test_rule_stale_evidence_does_not_pass_the_diagnosis(ops: OpsConfig) -> None:
    """A crash from an earlier run is still in the logs; this run's fault left nothing. The runbook
    gets SINCE (the fault time), and a diagnosis that honours it finds nothing."""
    stale = FakeStack(evidence_at=T0 - 300)
    result = run(ops, stale)
    assert stale.runbook_calls[0]["env"]["SINCE"] == f"{T0:.3f}"
    assert result.problems == ["runbook ServeReplicaRestarts step restarts did not find /\\d+ restarts/",
                               "runbook ServeReplicaRestarts step deaths did not find /crashed/"]


def test_the_default_effects_are_the_live_stack(ops: OpsConfig) -> None:
    """`make chaos` passes no effects: it must get the real actions, probes, Alertmanager and time."""
    fx = engine.Effects()
    assert fx.actions is actions.ACTIONS and fx.probes is probes.PROBES
    assert isinstance(fx.alerts, engine.LiveAlerts) and fx.runbook is engine.run_runbook
    assert fx.clock is time.time and fx.sleep is time.sleep and fx.baseline is engine.deployed_config
    bg = fx.load(Experiment.model_validate(EXPERIMENT), ops)  # built, not started
    assert type(bg) is Load and bg.url == f"{ops.listen.serve_url}/embed" and bg.outcomes == []


def test_the_report_shows_gaps_and_requests_in_flight(ops: OpsConfig, tmp_path) -> None:
    """Nothing answered for 10s while requests waited: a gap in latency, and in-flight age that grows."""
    from chaos import report

    stack = FakeStack()
    exp = Experiment.model_validate(EXPERIMENT)
    result, ctx = engine.run(exp, ops, "short", stack.effects())
    t0 = ctx.started
    ok = [Outcome(t0 + i * 0.5, 0.1, 200) for i in range(20)]  # answered promptly for 10s
    stuck = [Outcome(t0 + 10 + i * 0.5, 10.5 - i * 0.5, 200) for i in range(20)]  # done at 20.5; 19 late
    ctx.load.outcomes = ok + stuck
    engine.judge_loss(exp, ctx.load, result, ctx.clock())
    xs = [float(x) for x in range(0, 30, 2)]
    counts, ages = report.in_flight(ctx, xs)
    assert counts[xs.index(4.0)] <= 1 and ages[xs.index(4.0)] < 0.2
    assert counts[xs.index(18.0)] >= 15 and ages[xs.index(18.0)] == pytest.approx(8.0)
    assert counts[xs.index(22.0)] == 0
    out = report.write(ctx, result, tmp_path / "r")
    summary = (out / "summary.md").read_text()
    assert "bound <= 5.0%" in summary and "| hung past the objective | 19 (in flight over 1s) |" in summary
    assert (out / "timeline.png").stat().st_size > 10_000


def test_reset_time_runs_from_recovery_until_the_alert_stops_firing(ops: OpsConfig) -> None:
    stack = FakeStack(resolve_after_heal_s=50)  # healed at 18: firing until 68; recovered at 31
    result = run(ops, stack, reset_within_s=60)
    assert result.passed, result.problems
    assert result.reset_s == {ALERT: 38.0}  # seen on the 2s poll after 68
    assert result.marks["reset"] - T0 == 69


def test_rule_a_page_that_outlives_its_reset_bound_fails(ops: OpsConfig) -> None:
    result = run(ops, FakeStack(resolve_after_heal_s=50), reset_within_s=20)
    assert result.reset_s == {ALERT: None}
    assert result.problems == [f"{ALERT} still firing 20s after recovery"]
    never = run(ops, FakeStack(), reset_within_s=20)  # the fake alert never resolves
    assert never.problems == [f"{ALERT} still firing 20s after recovery"]


def test_no_reset_is_measured_unless_the_experiment_bounds_it(ops: OpsConfig) -> None:
    result = run(ops, FakeStack())
    assert result.passed and result.reset_s == {} and "reset" not in result.marks


def test_a_new_instance_counts_and_an_old_one_neither_blocks_nor_passes(ops: OpsConfig) -> None:
    expect = [{"alert": "ServeReplicaRestarts", "labels": LABELS, "new_instance": True}]
    # An old replica's instance fires throughout; the fault's replica fires 12s after the fault.
    result = run(ops, FakeStack(replicas=("old", "new")), expect=expect)
    assert result.passed, result.problems
    assert result.detect_s == {ALERT: 12.0} and result.marks["inject"] == T0  # nothing waited out
    assert result.expected == [{"alert": "ServeReplicaRestarts", "labels": LABELS}]
    # The fault's instance never fires: the old one, still active, must not pass for it.
    silent = run(ops, FakeStack(replicas=("old", "new"), detect_after_s=None), expect=expect)
    assert silent.problems == [f"{ALERT} did not fire within 90s"]
    # Without new_instance the old instance is an alert already firing: waited out, then refused.
    blocked = run(ops, FakeStack(replicas=("old", "new")))
    assert blocked.problems[0].startswith("already firing before the fault")


def test_injected_errors_are_the_fault_not_its_cost(ops: OpsConfig) -> None:
    stack = FakeStack(load=(40, 0, 0))
    fx = stack.effects()

    def with_injected(exp: Experiment, ops: OpsConfig) -> FakeLoad:
        load = FakeLoad(stack.events, "main", 40, 0)
        load.outcomes = load.outcomes[:30] + [Outcome(T0, 0.1, 503, injected=True)] * 9 + [
            Outcome(T0, 0.1, 503)]
        return load

    fx.load = with_injected
    exp = Experiment.model_validate({**EXPERIMENT, "loss": {"max_failed": 0}})
    result, _ = engine.run(exp, ops, "short", fx)
    assert (result.sent, result.failed, result.injected) == (40, 1, 9)
    # the injected 503s are the fault, not its cost: only the other 503 is named
    assert result.problems == ["1 of 40 requests to /embed failed (1 503; 0 hung past 1s); the bound is <= 0"]
