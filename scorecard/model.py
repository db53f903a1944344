"""The scorecard as data: what scorecard.json holds, one frozen model per part.

Inputs the scorecard reads from other packages (a chaos result.json) are parsed leniently (extra keys
ignored: chaos may add fields); everything the scorecard writes is strict.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

Verdict = Literal["within", "over", "no bound", "not fired"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChaosRun(BaseModel):
    """One experiment's result.json (chaos.engine.Result as a dict), or why it has none."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    experiment: str
    mode: str = ""
    passed: bool = False
    problems: list[str] = []
    detect_s: dict[str, float | None] = {}
    condition_s: dict[str, float | None] = {}
    reset_s: dict[str, float | None] = {}
    recover_s: float | None = None
    sent: int = 0
    failed: int = 0
    hung: int = 0
    loss_bound: str = ""
    marks: dict[str, float] = {}
    expected: list[dict[str, Any]] = []
    fault_replica: str | None = None
    report: str | None = None  # the report directory it came from
    error: str | None = None  # the experiment could not run at all

    @property
    def fault_at(self) -> float | None:
        return self.marks.get("fault", self.marks.get("inject"))

    @property
    def recovered_at(self) -> float | None:
        return self.marks.get("recovered", self.marks.get("healed"))


class Identity(_Strict):
    """One alert as the scorecard counts it: alertname + static labels. The burn-rate rules (one per
    SLO) collapse per (alertname, severity, long_window, short_window), their routes listed."""

    alert: str
    severity: str
    labels: dict[str, str] = {}  # static labels but severity (and route/slo for a burn rate)
    for_s: float
    expr: str  # the first rule's expression (the burn-rate ones differ by route only)
    routes: list[str] = []
    slos: list[str] = []

    @property
    def key(self) -> str:
        return self.alert + ("{" + ",".join(f"{k}={v}" for k, v in self.labels.items()) + "}"
                             if self.labels else "")

    @property
    def page(self) -> bool:
        return self.severity == "critical"


class Bound(_Strict):
    """Fault -> Alertmanager at the latest: window term + `for` + pipeline. total_s None: no bound."""

    kind: str  # the window term's kind (bounds.WINDOW_TERMS), or "unknown"
    window_s: float | None
    for_s: float
    pipeline_s: float
    total_s: float | None
    detail: str


class Detection(_Strict):
    identity: str
    alert: str
    severity: str
    experiment: str
    expected: str  # chaos.engine.describe(expected): the key in detect_s
    detect_s: float | None  # fault -> active in Alertmanager
    condition_s: float | None  # fault -> Prometheus' activeAt
    bound: Bound
    verdict: Verdict
    note: str = ""


class Reset(_Strict):
    identity: str
    experiment: str
    reset_s: float | None  # recovery -> the alert no longer firing
    source: Literal["experiment", "prometheus", "unknown"]
    still_firing_at: float | None = None  # the data ends with it still firing
    detail: str = ""


class Coverage(_Strict):
    identity: str
    alert: str
    severity: str
    routes: list[str] = []
    fired_by: list[str]
    expected_by: list[str]  # experiments that expect it (fired or not)
    gap_reason: str | None  # a page no experiment fired, and why (gaps.REASONS)


class Recall(_Strict):
    page_identities: int
    covered: int
    percent: float
    gaps: list[Coverage]  # pages no experiment fired
    unexplained: list[str]  # gaps without a reason


class Page(_Strict):
    alert: str
    severity: str
    labels: dict[str, str]
    first: float
    last: float


class ShapeRun(_Strict):
    shape: str
    duration_s: float
    exit_code: int | None
    report_dir: str
    started: float
    ended: float

    @property
    def passed(self) -> bool:
        return self.exit_code == 0


class Precision(_Strict):
    start: float
    end: float
    grace_s: float
    shapes: list[ShapeRun]
    clean: bool  # every shape's SLO gate passed
    false_pages: list[Page]
    warnings: list[Page]
    leftover: list[Page]  # pages already firing when the soak began: not the soak's
    error: str | None = None


class ReplicaRss(_Strict):
    application: str
    deployment: str
    pid: str
    component: str
    start_mb: float
    end_mb: float
    growth_pct: float


class DeploymentRss(_Strict):
    application: str
    deployment: str
    replicas: int
    start_mb: float
    end_mb: float
    growth_pct: float


class Capture(_Strict):
    deployment: str
    pid: str
    exit_code: int | None
    path: str | None
    error: str | None = None


class LeakWatch(_Strict):
    target_pct: float
    start: float
    end: float
    replicas: list[ReplicaRss]
    deployments: list[DeploymentRss]
    over: list[ReplicaRss]
    captures: list[Capture]
    appeared: list[str]  # replicas (app/deployment pid) seen only at the end
    vanished: list[str]  # seen only at the start
    error: str | None = None


class Loss(_Strict):
    experiment: str
    passed: bool
    sent: int
    failed: int
    hung: int
    loss_bound: str
    recover_s: float | None
    problems: list[str]


class HalfAlive(_Strict):
    watched: Loss | None  # half-alive: the watchdog on
    unwatched: Loss | None  # half-alive-unwatched: the watchdog off
    note: str


class Pipeline(_Strict):
    ray_export_s: float
    scrape_interval_s: float
    evaluation_interval_s: float
    group_wait_s: float

    @property
    def total_s(self) -> float:
        return self.ray_export_s + self.scrape_interval_s + self.evaluation_interval_s + self.group_wait_s


class Scorecard(_Strict):
    mode: Literal["full", "short"]
    started: float
    ended: float
    chaos_source: str  # "run" or "reuse <dir>"
    pipeline: Pipeline
    experiments: list[ChaosRun]
    coverage: list[Coverage]  # every identity, pages and warnings
    recall: Recall
    detection: list[Detection]
    reset: list[Reset]
    precision: Precision | None
    leak: LeakWatch | None
    loss: list[Loss]
    half_alive: HalfAlive
    failures: list[str]  # why the exit code is 1
    exit_code: int
