"""Run one experiment: steady state, inject, detect, diagnose, heal, mitigate, verify; rollbacks always."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from chaos import actions, probes
from chaos.context import Context
from chaos.experiment import ExpectedAlert, Experiment, Mode, Step
from chaos.load import Load
from runbooks import book, execute
from stack import prom
from stack.config import OpsConfig
from stack.local import rollout

POLL_S = 1.0
RESOLVE_WAIT_S = 17 * 60  # the longest lookback of an expected alert (15m) and an evaluation or two


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
    recover_s: float | None = None
    sent: int = 0
    failed: int = 0
    diagnosis: dict[str, str] = field(default_factory=dict)  # step -> what it found (matched or not)
    mitigation: dict[str, int | None] = field(default_factory=dict)  # step -> exit code
    marks: dict[str, float] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)


def run_steps(ctx: Context, steps: list[Step]) -> None:
    for step in steps:
        actions.ACTIONS[step.name](ctx, **ctx.exp.resolve(step.args, ctx.mode))


def probes_hold(ctx: Context, steps: list[Step]) -> tuple[bool, list[str]]:
    seen = [(ok, f"{s.name}: {detail}") for s in steps
            for ok, detail in [probes.check(ctx, s.name, ctx.exp.resolve(s.args, ctx.mode))]]
    return all(ok for ok, _ in seen), [d for _, d in seen]


def wait_probes(ctx: Context, steps: list[Step], timeout_s: float) -> tuple[bool, list[str]]:
    deadline = time.time() + timeout_s
    while True:
        ok, seen = probes_hold(ctx, steps)
        if ok or time.time() > deadline:
            return ok, seen
        time.sleep(2)


def active_alerts(ops: OpsConfig) -> list[dict[str, Any]]:
    """Alerts Alertmanager holds as active: what would page someone."""
    r = httpx.get(f"{ops.listen.url(ops.listen.alertmanager_port)}/api/v2/alerts",
                  params={"active": "true", "silenced": "false", "inhibited": "false"}, timeout=10)
    r.raise_for_status()
    return r.json()


def matches(alert: dict[str, Any], expected: ExpectedAlert) -> bool:
    labels = alert["labels"]
    return labels.get("alertname") == expected.alert and all(labels.get(k) == v
                                                              for k, v in expected.labels.items())


def describe(expected: ExpectedAlert) -> str:
    return expected.alert + (f"{expected.labels}" if expected.labels else "")


def fault_time(ctx: Context) -> float:
    """When the fault happened: the injection, or a later moment an action marked (e.g. the kill
    that a memory surge leads to)."""
    return ctx.marks.get("fault", ctx.marks["inject"])


def detect(ctx: Context, result: Result) -> None:
    """Poll Alertmanager until every expected alert is active, or the bound passes."""
    pending = list(ctx.exp.expect)
    injected = fault_time(ctx)
    while pending and time.time() - injected <= ctx.exp.detect_within_s:
        active = active_alerts(ctx.ops)
        for expected in [e for e in pending if any(matches(a, e) for a in active)]:
            result.detect_s[describe(expected)] = round(time.time() - injected, 1)
            # Prometheus' own view of the alert (same labels), for its activeAt.
            in_prometheus = prom.api(ctx.ops, "/api/v1/alerts")["alerts"]
            since = next((prom.parse_time(a["activeAt"])
                          for a in in_prometheus if matches(a, expected)), None)
            result.condition_s[describe(expected)] = None if since is None else round(since - injected, 1)
            ctx.log(f"detected: {describe(expected)} active in Alertmanager after "
                    f"{result.detect_s[describe(expected)]}s")
            pending.remove(expected)
        time.sleep(POLL_S)
    for expected in pending:
        result.detect_s[describe(expected)] = None
        result.problems.append(f"{describe(expected)} did not fire within {ctx.exp.detect_within_s:g}s")
    ctx.mark("detected")


def runbook_env(ctx: Context) -> dict[str, str]:
    plan = ctx.exp.runbook
    return {"APP": ctx.exp.target.app, "DEPLOYMENT": ctx.exp.target.deployment, **(plan.env if plan else {})}


def diagnose(ctx: Context, result: Result) -> None:
    plan = ctx.exp.runbook
    if plan is None:
        return
    rb = book.load(plan.name)
    ran = execute.execute(rb, ctx.ops, confirm=False, kinds=("diagnose",), extra_env=runbook_env(ctx))
    outputs = {r.step.name: r.output for r in ran}
    for step, pattern in plan.finds.items():
        found = re.search(pattern, outputs.get(step, ""), re.M)
        result.diagnosis[step] = found.group(0) if found else f"NOT FOUND /{pattern}/"
        ctx.log(f"diagnosis {plan.name}:{step}: " + (f"found {found.group(0)!r}" if found else
                                                     f"did not find /{pattern}/"))
        if not found:
            result.problems.append(f"runbook {plan.name} step {step} did not find /{pattern}/")


def mitigate(ctx: Context, result: Result) -> None:
    plan = ctx.exp.runbook
    if plan is None or not plan.mitigation:
        return
    rb = book.load(plan.name)
    ctx.mark("mitigation_started")
    ran = execute.execute(rb, ctx.ops, confirm=True, only=plan.mitigation, extra_env=runbook_env(ctx))
    for r in ran:
        result.mitigation[r.step.name] = r.exit_code
        ctx.log(f"mitigation {plan.name}:{r.step.name}: exit {r.exit_code} in {r.seconds:.1f}s")
        if r.exit_code != 0:
            result.problems.append(f"mitigation step {r.step.name} exited {r.exit_code}")
    ctx.mark("mitigated")


def verify(ctx: Context, result: Result) -> None:
    budget = ctx.exp.recover_within_s - (time.time() - fault_time(ctx))
    ok, seen = wait_probes(ctx, ctx.exp.verify, max(budget, 5))
    ctx.log("verify: " + "; ".join(seen))
    if ok:
        result.recover_s = round(ctx.mark("recovered") - fault_time(ctx), 1)
        ctx.log(f"recovered {result.recover_s}s after the fault")
    else:
        result.problems.append(f"steady state not back within {ctx.exp.recover_within_s:g}s: "
                               + "; ".join(seen))


def already_firing(ctx: Context) -> list[str]:
    active = active_alerts(ctx.ops)
    return [describe(e) for e in ctx.exp.expect if any(matches(a, e) for a in active)]


def wait_resolved(ctx: Context, timeout_s: float = RESOLVE_WAIT_S) -> list[str]:
    """An expected alert that already fires (e.g. a redeploy within its 15m window) would hide the
    detection: wait for it to resolve first. Returns those still firing at the deadline."""
    deadline = time.time() + timeout_s
    firing = already_firing(ctx)
    if firing:
        ctx.log(f"waiting up to {timeout_s:g}s for {firing} to resolve before the fault")
    while firing and time.time() < deadline:
        time.sleep(10)
        firing = already_firing(ctx)
    return firing


def run(exp: Experiment, ops: OpsConfig, mode: Mode) -> tuple[Result, Context]:
    lo = exp.load
    load = Load(f"{ops.listen.serve_url}{lo.route}", lo.body, lo.headers, lo.rate_per_s)
    ctx = Context(ops, exp, mode, rollout.read(rollout.DEPLOYED), load)
    result = Result(exp.name, mode)
    ctx.log(f"experiment {exp.name} ({mode}): {exp.title}")
    try:
        run_steps(ctx, exp.setup)
        load.start()
        ok, seen = wait_probes(ctx, exp.steady_state, 120)
        ctx.log("steady state: " + "; ".join(seen))
        firing = wait_resolved(ctx)
        if not ok or firing:
            result.problems.append("steady state not met: " + "; ".join(seen) if not ok else
                                   f"already firing before the fault, so detection cannot be shown: {firing}")
            return result, ctx
        ctx.mark("inject")
        run_steps(ctx, exp.inject)
        detect(ctx, result)
        diagnose(ctx, result)
        run_steps(ctx, exp.heal)
        ctx.mark("healed")
        mitigate(ctx, result)
        verify(ctx, result)
    except Exception as err:  # a broken step is a failed experiment, and the rollbacks still run
        result.problems.append(f"{type(err).__name__}: {err}")
        ctx.log(f"error: {type(err).__name__}: {err}")
    finally:
        load.stop()
        for name in list(ctx.loads):
            actions.stop_load(ctx, name)
        for step in exp.rollbacks:
            try:
                run_steps(ctx, [step])
            except Exception as err:
                result.problems.append(f"rollback {step.name} failed: {err}")
                ctx.log(f"rollback {step.name} failed: {err}")
        result.sent, result.failed = load.totals()
        if exp.max_failed_requests is not None and result.failed > exp.max_failed_requests:
            result.problems.append(f"{result.failed} requests failed; "
                                   f"at most {exp.max_failed_requests} allowed")
        result.marks = dict(ctx.marks)
        result.log = ctx.log_lines
        result.passed = not result.problems
    return result, ctx
