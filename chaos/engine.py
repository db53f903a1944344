"""Run one experiment: steady state, inject, detect, diagnose, heal, mitigate, verify; rollbacks always.

Everything the engine does outside itself (actions, probes, alerts, the runbook, the load, the Serve
config, the clock) comes through `Effects`, whose defaults are the live stack; tests pass fakes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from chaos.actions import ACTIONS, Action
from chaos.context import Context
from chaos.experiment import ExpectedAlert, Experiment, Mode, Step
from chaos.load import Load, objective_s
from chaos.probes import PROBES, Probe
from runbooks import book, execute
from stack import prom
from stack.config import OpsConfig
from stack.local import rollout

POLL_S = 1.0
DIAGNOSE_WITHIN_S = 60.0
DIAGNOSE_RETRY_S = 10.0
RESOLVE_WAIT_S = 17 * 60  # the longest lookback of an expected alert (15m) and an evaluation or two


class AlertSource(Protocol):
    def active(self, ops: OpsConfig) -> list[dict[str, Any]]:
        """Alerts Alertmanager holds as active: what would page someone."""
        ...

    def in_prometheus(self, ops: OpsConfig) -> list[dict[str, Any]]:
        """Prometheus' alerts (same labels), for the activeAt of each."""
        ...


class LiveAlerts:
    def active(self, ops: OpsConfig) -> list[dict[str, Any]]:
        return prom.alertmanager_alerts(ops)

    def in_prometheus(self, ops: OpsConfig) -> list[dict[str, Any]]:
        return prom.api(ops, "/api/v1/alerts")["alerts"]


class RunbookRunner(Protocol):
    def __call__(self, name: str, ops: OpsConfig, *, confirm: bool, env: Mapping[str, str],
                 kinds: tuple[str, ...] | None = None,
                 only: list[str] | None = None) -> list[execute.StepResult]: ...


def run_runbook(name: str, ops: OpsConfig, *, confirm: bool, env: Mapping[str, str],
                kinds: tuple[str, ...] | None = None,
                only: list[str] | None = None) -> list[execute.StepResult]:
    return execute.execute(book.load(name), ops, confirm=confirm, kinds=kinds, only=only, extra_env=env)


def background_load(exp: Experiment, ops: OpsConfig) -> Load:
    lo = exp.load
    return Load(f"{ops.listen.serve_url}{lo.route}", lo.body, lo.headers, lo.rate_per_s,
                objective_s=objective_s(ops, lo.route))


def deployed_config() -> dict[str, Any]:
    return rollout.read(rollout.DEPLOYED)


@dataclass
class Effects:
    """What the engine does outside itself. The defaults are the live stack (`make chaos`)."""

    actions: Mapping[str, Action] = field(default_factory=lambda: ACTIONS)
    probes: Mapping[str, Probe] = field(default_factory=lambda: PROBES)
    alerts: AlertSource = field(default_factory=LiveAlerts)
    runbook: RunbookRunner = run_runbook
    load: Callable[[Experiment, OpsConfig], Load] = background_load  # the experiment's background load
    baseline: Callable[[], dict[str, Any]] = deployed_config  # the Serve config before the experiment
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep


@dataclass
class Result:
    experiment: str
    mode: Mode
    passed: bool = False
    problems: list[str] = field(default_factory=list)
    detect_s: dict[str, float | None] = field(default_factory=dict)
    # Fault -> the first evaluation that saw the alert's condition (Prometheus' activeAt): what of
    # detect_s the symptom took to show in metrics, the rest being `for` and the alert pipeline.
    condition_s: dict[str, float | None] = field(default_factory=dict)
    # Recovery -> the alert no longer firing in Prometheus; only where the experiment sets reset_within_s.
    reset_s: dict[str, float | None] = field(default_factory=dict)
    expected: list[dict[str, Any]] = field(default_factory=list)  # [{alert, labels}], as in the experiment
    fault_replica: str | None = None  # the Serve replica a fault was injected into, where one was
    recover_s: float | None = None
    sent: int = 0
    failed: int = 0  # an error, no answer, or still unanswered when the load stopped
    injected: int = 0  # errors the fault hook answered on purpose: the fault itself, not in `failed`
    hung: int = 0  # in flight past the route's latency objective (answered late, or not at all)
    loss_bound: str = ""
    diagnosis: dict[str, str] = field(default_factory=dict)  # step -> what it found (matched or not)
    mitigation: dict[str, int | None] = field(default_factory=dict)  # step -> exit code
    marks: dict[str, float] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)


def run_steps(ctx: Context, fx: Effects, steps: list[Step]) -> None:
    for step in steps:
        fx.actions[step.name](ctx, **ctx.exp.resolve(step.args, ctx.mode))


def probes_hold(ctx: Context, fx: Effects, steps: list[Step]) -> tuple[bool, list[str]]:
    seen = [(ok, f"{s.name}: {detail}") for s in steps
            for ok, detail in [fx.probes[s.name](ctx, **ctx.exp.resolve(s.args, ctx.mode))]]
    return all(ok for ok, _ in seen), [d for _, d in seen]


def wait_probes(ctx: Context, fx: Effects, steps: list[Step], timeout_s: float) -> tuple[bool, list[str]]:
    deadline = fx.clock() + timeout_s
    while True:
        ok, seen = probes_hold(ctx, fx, steps)
        if ok or fx.clock() > deadline:
            return ok, seen
        fx.sleep(2)


def matches(alert: dict[str, Any], expected: ExpectedAlert) -> bool:
    labels = alert["labels"]
    return labels.get("alertname") == expected.alert and all(labels.get(k) == v
                                                              for k, v in expected.labels.items())


def identity(alert: dict[str, Any]) -> frozenset[tuple[str, str]]:
    return frozenset(alert["labels"].items())


def fresh(alert: dict[str, Any], expected: ExpectedAlert, before: set[frozenset[tuple[str, str]]]) -> bool:
    """The alert matches, and, for a per-instance expectation, is not an instance active before the fault."""
    return matches(alert, expected) and not (expected.new_instance and identity(alert) in before)


def describe(expected: ExpectedAlert) -> str:
    return expected.alert + (f"{expected.labels}" if expected.labels else "")


def fault_time(ctx: Context) -> float:
    """When the fault happened: the injection, or a later moment an action marked (e.g. the kill
    that a memory surge leads to)."""
    return ctx.marks.get("fault", ctx.marks["inject"])


def detect(ctx: Context, fx: Effects, result: Result) -> None:
    """Poll Alertmanager until every expected alert is active, or the bound passes."""
    pending = list(ctx.exp.expect)
    injected = fault_time(ctx)
    while pending and fx.clock() - injected <= ctx.exp.detect_within_s:
        active = fx.alerts.active(ctx.ops)
        for expected in [e for e in pending if any(fresh(a, e, ctx.active_before) for a in active)]:
            result.detect_s[describe(expected)] = round(fx.clock() - injected, 1)
            since = next((prom.parse_time(a["activeAt"]) for a in fx.alerts.in_prometheus(ctx.ops)
                          if fresh(a, expected, ctx.active_before)), None)
            result.condition_s[describe(expected)] = None if since is None else round(since - injected, 1)
            ctx.log(f"detected: {describe(expected)} active in Alertmanager after "
                    f"{result.detect_s[describe(expected)]}s")
            pending.remove(expected)
        fx.sleep(POLL_S)
    for expected in pending:
        result.detect_s[describe(expected)] = None
        result.problems.append(f"{describe(expected)} did not fire within {ctx.exp.detect_within_s:g}s")
    ctx.mark("detected")


def runbook_env(ctx: Context) -> dict[str, str]:
    """What the runbook's steps read: the target, the plan's values, and SINCE, the injection time, so
    that every diagnosis source ignores evidence older than this run's fault. The injection, not a later
    `fault` mark: a kill the surge leads to is logged a moment before the action sees it."""
    plan = ctx.exp.runbook
    env = {"APP": ctx.exp.target.app, "DEPLOYMENT": ctx.exp.target.deployment, **(plan.env if plan else {})}
    if "inject" in ctx.marks:
        env["SINCE"] = f"{ctx.marks['inject']:.3f}"
    return env


def diagnose(ctx: Context, fx: Effects, result: Result) -> None:
    """The runbook's diagnosis, run again every DIAGNOSE_RETRY_S while a step has not found its cause,
    up to DIAGNOSE_WITHIN_S: evidence since the fault can trail the page (a page whose window still
    held changes from before the fault fires on the fault's first one), and an on-call re-runs a query
    that shows too little. Only evidence since the fault (SINCE) counts, however often it runs."""
    plan = ctx.exp.runbook
    if plan is None:
        return
    deadline = fx.clock() + DIAGNOSE_WITHIN_S
    while True:
        ran = fx.runbook(plan.name, ctx.ops, confirm=False, kinds=("diagnose",), env=runbook_env(ctx))
        outputs = {r.step.name: r.output for r in ran}
        missing = [s for s, pattern in plan.finds.items() if not re.search(pattern, outputs.get(s, ""), re.M)]
        if not missing or fx.clock() + DIAGNOSE_RETRY_S > deadline:
            break
        ctx.log(f"diagnosis {plan.name}: {', '.join(missing)} found nothing yet; "
                f"again in {DIAGNOSE_RETRY_S:g}s")
        fx.sleep(DIAGNOSE_RETRY_S)
    for step, pattern in plan.finds.items():
        found = re.search(pattern, outputs.get(step, ""), re.M)
        result.diagnosis[step] = found.group(0) if found else f"NOT FOUND /{pattern}/"
        ctx.log(f"diagnosis {plan.name}:{step}: " + (f"found {found.group(0)!r}" if found else
                                                     f"did not find /{pattern}/"))
        if not found:
            result.problems.append(f"runbook {plan.name} step {step} did not find /{pattern}/")


def mitigate(ctx: Context, fx: Effects, result: Result) -> None:
    plan = ctx.exp.runbook
    if plan is None or not plan.mitigation:
        return
    ctx.mark("mitigation_started")
    ran = fx.runbook(plan.name, ctx.ops, confirm=True, only=plan.mitigation, env=runbook_env(ctx))
    for r in ran:
        result.mitigation[r.step.name] = r.exit_code
        ctx.log(f"mitigation {plan.name}:{r.step.name}: exit {r.exit_code} in {r.seconds:.1f}s")
        if r.exit_code != 0:
            result.problems.append(f"mitigation step {r.step.name} exited {r.exit_code}")
    ctx.mark("mitigated")


def verify(ctx: Context, fx: Effects, result: Result) -> None:
    budget = ctx.exp.recover_within_s - (fx.clock() - fault_time(ctx))
    ok, seen = wait_probes(ctx, fx, ctx.exp.verify, max(budget, 5))
    ctx.log("verify: " + "; ".join(seen))
    if ok:
        result.recover_s = round(ctx.mark("recovered") - fault_time(ctx), 1)
        ctx.log(f"recovered {result.recover_s}s after the fault")
        if result.recover_s > ctx.exp.recover_within_s:  # e.g. a mitigation that ran past the budget
            result.problems.append(f"recovered {result.recover_s:g}s after the fault; "
                                   f"the bound is {ctx.exp.recover_within_s:g}s")
    else:
        result.problems.append(f"steady state not back within {ctx.exp.recover_within_s:g}s: "
                               + "; ".join(seen))


def measure_reset(ctx: Context, fx: Effects, result: Result) -> None:
    """From recovery until no expected alert fires in Prometheus any more: how long a page outlives its
    cause. Only where the experiment sets reset_within_s (a burn-rate page takes its short window)."""
    bound = ctx.exp.reset_within_s
    recovered = ctx.marks.get("recovered")
    if bound is None or recovered is None:
        return
    pending = [e for e in ctx.exp.expect if result.detect_s.get(describe(e)) is not None]
    while pending and fx.clock() - recovered <= bound:
        firing = [a for a in fx.alerts.in_prometheus(ctx.ops) if a.get("state") == "firing"]
        for expected in [e for e in pending if not any(fresh(a, e, ctx.active_before) for a in firing)]:
            result.reset_s[describe(expected)] = round(fx.clock() - recovered, 1)
            ctx.log(f"reset: {describe(expected)} stopped firing {result.reset_s[describe(expected)]}s "
                    "after recovery")
            pending.remove(expected)
        if pending:
            fx.sleep(POLL_S * 2)
    for expected in pending:
        result.reset_s[describe(expected)] = None
        result.problems.append(f"{describe(expected)} still firing {bound:g}s after recovery")
    ctx.mark("reset")


def judge_loss(exp: Experiment, load: Load, result: Result, now: float) -> None:
    result.sent, result.failed = load.totals()
    result.injected = load.injected()
    result.hung = load.hung(now)
    result.loss_bound = exp.loss.describe()
    if not exp.loss.allows(result.failed, result.sent):
        got = ", ".join(f"{n} {status}" for status, n in load.failures().items())
        result.problems.append(f"{result.failed} of {result.sent} requests to {exp.load.route} failed "
                               f"({got}; {result.hung} hung past {load.objective_s:g}s); "
                               f"the bound is {result.loss_bound}")


def already_firing(ctx: Context, fx: Effects) -> list[str]:
    """Expected alerts already active, which would hide the detection. A per-instance expectation is
    not held back: a new instance is told apart from the old ones."""
    active = fx.alerts.active(ctx.ops)
    return [describe(e) for e in ctx.exp.expect
            if not e.new_instance and any(matches(a, e) for a in active)]


def wait_resolved(ctx: Context, fx: Effects, timeout_s: float = RESOLVE_WAIT_S) -> list[str]:
    """An expected alert that already fires (e.g. a redeploy within its 15m window) would hide the
    detection: wait for it to resolve first. Returns those still firing at the deadline."""
    deadline = fx.clock() + timeout_s
    firing = already_firing(ctx, fx)
    if firing:
        ctx.log(f"waiting up to {timeout_s:g}s for {firing} to resolve before the fault")
    while firing and fx.clock() < deadline:
        fx.sleep(10)
        firing = already_firing(ctx, fx)
    return firing


def run(exp: Experiment, ops: OpsConfig, mode: Mode, fx: Effects | None = None) -> tuple[Result, Context]:
    fx = fx or Effects()
    load = fx.load(exp, ops)
    ctx = Context(ops, exp, mode, fx.baseline(), load, clock=fx.clock)
    result = Result(exp.name, mode)
    result.expected = [e.model_dump(exclude={"new_instance"}) for e in exp.expect]
    ctx.log(f"experiment {exp.name} ({mode}): {exp.title}")
    try:
        run_steps(ctx, fx, exp.setup)
        load.start()
        ok, seen = wait_probes(ctx, fx, exp.steady_state, 120)
        ctx.log("steady state: " + "; ".join(seen))
        firing = wait_resolved(ctx, fx)
        if not ok or firing:
            result.problems.append("steady state not met: " + "; ".join(seen) if not ok else
                                   f"already firing before the fault, so detection cannot be shown: {firing}")
            return result, ctx
        ctx.active_before = {identity(a) for a in fx.alerts.active(ctx.ops)}
        ctx.mark("inject")
        run_steps(ctx, fx, exp.inject)
        detect(ctx, fx, result)
        diagnose(ctx, fx, result)
        run_steps(ctx, fx, exp.heal)
        ctx.mark("healed")
        mitigate(ctx, fx, result)
        verify(ctx, fx, result)
        measure_reset(ctx, fx, result)
    except Exception as err:  # a broken step is a failed experiment, and the rollbacks still run
        result.problems.append(f"{type(err).__name__}: {err}")
        ctx.log(f"error: {type(err).__name__}: {err}")
    finally:
        load.stop()
        for name in list(ctx.loads):
            fx.actions["stop_load"](ctx, name=name)
        for step in exp.rollbacks:
            try:
                run_steps(ctx, fx, [step])
            except Exception as err:
                result.problems.append(f"rollback {step.name} failed: {err}")
                ctx.log(f"rollback {step.name} failed: {err}")
        judge_loss(exp, load, result, fx.clock())
        result.marks = dict(ctx.marks)
        result.expected = [e.model_dump(exclude={"new_instance"}) for e in exp.expect]
        result.fault_replica = ctx.fault_replica
        result.log = ctx.log_lines
        result.passed = not result.problems
    return result, ctx
