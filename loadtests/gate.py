"""The SLO gate: each objective of the ops config, judged on the requests of one run.

Availability: the share of requests that did not fail. Latency: the share that finished within the
SLO's objective. For the streamed chat, the LLM TTFT threshold of the alerts applies too; for the LLM
requests, their model's goodput SLO (llm_goodput).
A route the run gave weight but no request fails: an SLO nobody measured is not met.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from loadtests import routes
from loadtests.summary import Run
from stack.config import OpsConfig


@dataclass(frozen=True)
class Verdict:
    objective: str  # e.g. "embed latency"
    passed: bool
    observed: float | None  # a share, 0..1
    target: float
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.objective}: {self.detail}"


def _at_least(objective: str, good: int, n: int, target: float, what: str) -> Verdict:
    share = good / n
    return Verdict(objective, share >= target, share, target,
                   f"{share:.2%} ({good} of {n}) {what}, objective {target:.2%}")


def evaluate(ops: OpsConfig, run: Run) -> list[Verdict]:
    verdicts: list[Verdict] = []
    named = run.by_name()
    weights = run.settings["weights"]
    for slo in ops.slos:
        entries = [e for e in routes.ENTRIES.values() if e.route == slo.route and weights.get(e.task, 0) > 0]
        if not entries:
            continue  # this run does not exercise the route
        samples = [s for e in entries for s in named.get(e.name, [])]
        n = len(samples)
        if n == 0:
            for kind, target in (("availability", slo.availability), ("latency", slo.latency_target)):
                verdicts.append(Verdict(f"{slo.name} {kind}", False, None, target,
                                        f"no request reached {slo.route}"))
            continue
        ok = sum(s.ok for s in samples)
        fast = sum(s.ok and s.ms <= slo.latency_objective_ms for s in samples)
        verdicts.append(_at_least(f"{slo.name} availability", ok, n, slo.availability, "succeeded"))
        verdicts.append(_at_least(f"{slo.name} latency", fast, n, slo.latency_target,
                                  f"within {slo.latency_objective_ms:g} ms"))
    if weights.get("chat", 0) > 0:
        verdicts.append(_ttft(ops, [s.ms for s in named.get(routes.TTFT, [])]))
    if weights.get("chat", 0) > 0 or weights.get("completions", 0) > 0:
        verdicts.append(_goodput(ops, run.model, [s.goodput for s in named.get(routes.GOODPUT, [])]))
    return verdicts


def _goodput(ops: OpsConfig, model: str, reasons: list[str]) -> Verdict:
    goodput = ops.goodput_for(model)
    what = f"{model} goodput"
    if not reasons:
        return Verdict(what, False, None, goodput.target, "no LLM request was judged")
    return _at_least(what, reasons.count("ok"), len(reasons), goodput.target,
                     f"good (TTFT <= {goodput.ttft_ms:g} ms, TPOT <= {goodput.tpot_ms:g} ms, succeeded)")


def _ttft(ops: OpsConfig, ttft_ms: list[float]) -> Verdict:
    bound_ms = ops.alerting.llm_ttft_objective_s * 1000
    target = 1 - ops.alerting.llm_ttft_slow_ratio
    if not ttft_ms:
        return Verdict("chat TTFT", False, None, target, "no streamed chat produced a first token")
    return _at_least("chat TTFT", sum(ms <= bound_ms for ms in ttft_ms), len(ttft_ms), target,
                     f"within {bound_ms:g} ms")


def report(verdicts: list[Verdict]) -> dict[str, Any]:
    return {"passed": all(v.passed for v in verdicts), "objectives": [asdict(v) for v in verdicts]}
