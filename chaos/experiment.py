"""A chaos experiment as data (chaos/experiments/<name>.yaml), Chaos Toolkit style.

Steady state, then the injected fault, then the alerts that must fire within a bound, the runbook's
diagnosis (which must find the cause) and mitigation, then the steady state again. Rollbacks always
run. Timings come in two sets, normal and short (`make chaos`, tests); an argument "$name" takes the
value of timing `name`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from stack import ROOT

EXPERIMENTS_DIR = ROOT / "chaos" / "experiments"
Mode = Literal["normal", "short"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Step(_Strict):
    """One action or probe: a name from chaos/actions.py or chaos/probes.py, and its arguments."""

    name: str
    args: dict[str, Any] = {}


class Target(_Strict):
    app: str
    deployment: str


class Load(_Strict):
    """Background requests for the whole experiment; what it sends and loses is the cost of the fault."""

    route: str
    body: dict[str, Any]
    headers: dict[str, str] = {}
    rate_per_s: float = Field(gt=0)


class LossBound(_Strict):
    """What the hypothesis lets the fault cost on the load's route: failed requests, as a count or a
    share of those sent. Hung requests (in flight past the route's latency objective) are reported
    beside it; a request never answered counts as failed."""

    max_failed: int | None = Field(default=None, ge=0)
    max_share: float | None = Field(default=None, ge=0, le=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> LossBound:
        if (self.max_failed is None) == (self.max_share is None):
            raise ValueError("give exactly one of max_failed (a count) and max_share (of those sent)")
        return self

    def allows(self, failed: int, sent: int) -> bool:
        if self.max_failed is not None:
            return failed <= self.max_failed
        return failed <= (self.max_share or 0) * sent

    def describe(self) -> str:
        return f"<= {self.max_failed}" if self.max_failed is not None else f"<= {self.max_share:.1%}"


class ExpectedAlert(_Strict):
    alert: str
    labels: dict[str, str] = {}
    # Per-instance alerts (e.g. one per replica): only an instance that was not active before the fault
    # counts, and instances already active do not hold the experiment back.
    new_instance: bool = False


class RunbookPlan(_Strict):
    name: str
    finds: dict[str, str] = {}  # diagnosis step -> regex its output must match
    mitigation: list[str] = []  # mitigation steps to run, in order
    env: dict[str, str] = {}  # e.g. values the steps read (MAX_ONGOING_REQUESTS)


class SecondNodeVariant(_Strict):
    """What changes where `make up NODES=2` gave the stack a second node: e.g. a real network cut."""

    title: str
    inject: list[Step]
    heal: list[Step] = []
    expect: list[ExpectedAlert] = []
    runbook: RunbookPlan | None = None
    verify: list[Step] | None = None
    rollbacks: list[Step] | None = None


class Experiment(_Strict):
    name: str
    title: str
    hypothesis: str
    loss: LossBound  # required: an experiment that may lose any number of requests proves nothing
    target: Target
    load: Load
    timings: dict[str, tuple[float, float]] = {}  # name -> (normal, short)
    setup: list[Step] = []  # before the steady state, e.g. a variant that makes the fault possible
    steady_state: list[Step]
    inject: list[Step]
    expect: list[ExpectedAlert] = []
    detect_within_s: float = 120
    runbook: RunbookPlan | None = None
    heal: list[Step] = []  # the fault ends (e.g. the network comes back): outside the operator's hands
    verify: list[Step]
    recover_within_s: float = 300  # fault to steady state again; a later recovery fails the run
    # Where set: after recovery, wait for every expected alert to stop firing in Prometheus, and fail
    # past this bound (the reset time: how long a page outlives its cause).
    reset_within_s: float | None = None
    rollbacks: list[Step] = []
    with_second_node: SecondNodeVariant | None = None

    def for_cluster(self, has_second_node: bool) -> Experiment:
        """This experiment, or its second-node variant where a second node is up."""
        if not (has_second_node and self.with_second_node):
            return self
        return self.model_copy(update={k: v for k, v in self.with_second_node if v is not None})

    def timing(self, name: str, mode: Mode) -> float:
        normal, short = self.timings[name]
        return short if mode == "short" else normal

    def resolve(self, args: dict[str, Any], mode: Mode) -> dict[str, Any]:
        """Arguments with "$timing" references replaced by the mode's value."""
        return {k: self.timing(v[1:], mode) if isinstance(v, str) and v.startswith("$") else v
                for k, v in args.items()}


def load(name: str) -> Experiment:
    path = EXPERIMENTS_DIR / f"{name}.yaml"
    if not path.exists():
        raise SystemExit(f"no experiment {name!r}; have: {', '.join(names())}")
    return parse(path)


def parse(path: Path) -> Experiment:
    raw = yaml.safe_load(path.read_text())
    if isinstance(raw, dict) and "loss" not in raw:
        raise ValueError(f"{path.name}: no `loss` bound; state what the hypothesis lets the fault cost "
                         "(loss: {max_failed: N} or {max_share: 0.01})")
    return Experiment.model_validate(raw)


# The order of `make chaos`: oscillation first, since ServeAutoscalerOscillation counts target changes
# over 30m and the predict rollouts of rolling-update and bad-rollout change TenantModels' target: run
# after them, it fires on their changes plus two of its own, before its diagnosis can find four. Then
# cheap and harmless first; half-alive and hung-replica both expect ServeReplicaUnhealthy on the
# Preprocessor, so the unwatched run between them outlasts the alert's 2m and neither waits for the
# other's to resolve; the memory surge, which may take other replicas (and their restart alerts) with
# it, last.
RUN_ORDER = ("oscillation", "rolling-update", "bad-rollout", "replica-crash", "half-alive",
             "half-alive-unwatched", "hung-replica", "metric-missing", "slo-burn", "head-partition", "oom")


def names() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))


def in_run_order() -> list[str]:
    """Every experiment, in RUN_ORDER; one it does not list yet runs just before the last."""
    known = [n for n in RUN_ORDER if n in names()]
    return known[:-1] + [n for n in names() if n not in RUN_ORDER] + known[-1:]
