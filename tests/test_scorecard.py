"""The alert-quality scorecard (scorecard/), in-process with fakes: no stack, no Prometheus.

The window arithmetic, bounds for every page, recall and its gaps, precision from ALERTS series, the
leak watch, reset from history, the report, the exit code, and the runbook lines.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from alerts.generate import groups
from chaos.experiment import EXPERIMENTS_DIR, parse
from runbooks import scorecard_line
from runbooks.book import RUNBOOKS_DIR
from scorecard import bounds, gaps, measure, publish, report, rules, soak
from scorecard import run as scorecard_run
from scorecard.bounds import HealthCheck, Inputs, Traffic, burn_window_s
from scorecard.history import Labels, Points
from scorecard.inputs import LiveBounds, health
from scorecard.model import Bound, Capture, ChaosRun, Identity, Precision, Scorecard, ShapeRun
from stack import ROOT
from stack.config import load
from tests.test_layout import import_graph

OPS = load()
KNOWN = rules.identities(groups(OPS))
PIPE = bounds.pipeline(5, 5, "5s")  # Ray's export 10 + scrape 5 + evaluation 5 + group_wait 5
T0 = 1_800_000_000.0


def ident(alert: str, severity: str = "critical", for_s: float = 0, expr: str = "x",
          **labels: str) -> Identity:
    return Identity(alert=alert, severity=severity, labels=labels, for_s=for_s, expr=expr)


def run_of(name: str, expected: list[tuple[str, dict[str, str]]], detect: list[float | None],
           **extra: Any) -> ChaosRun:
    keys = [a + (f"{lab}" if lab else "") for a, lab in expected]
    marks = {"inject": T0, "detected": T0 + 60, "healed": T0 + 70, "recovered": T0 + 80}
    return ChaosRun(experiment=name, mode="short", passed=True, expected=[{"alert": a, "labels": lab}
                                                                         for a, lab in expected],
                    detect_s=dict(zip(keys, detect, strict=True)),
                    condition_s={k: None if d is None else d - 1 for k, d in zip(keys, detect, strict=True)},
                    marks=marks, sent=100, **extra)


def fixed_bound(total: float | None = 100.0) -> measure.BoundFor:
    def bound_for(identity: Identity, run: ChaosRun, labels: Labels, detect_s: float | None) -> Bound:
        return Bound(kind="fake", window_s=0.0, for_s=identity.for_s, pipeline_s=25.0, total_s=total,
                     detail="fake")
    return bound_for


# --- the window arithmetic ------------------------------------------------------------------------

def test_the_issue_check_99_9_percent_all_errors_steady_for_an_hour_is_52_s() -> None:
    threshold, rate = 14.4 * 0.001, 4.0
    long_t = burn_window_s(threshold, rate * 3600, rate, 1.0, 3600)
    assert long_t is not None and int(long_t) == 52
    burn = ident("ServeErrorBudgetBurn", for_s=120, long_window="1h", short_window="5m")
    inputs = Inputs(traffic=Traffic(n_long=rate * 3600, n_short=rate * 300, rate_per_s=rate, bad_share=1.0),
                    threshold=threshold, long_s=3600, short_s=300)
    kind, window, how = bounds.window_term(burn, inputs)
    assert (kind, round(window or 0)) == ("burn", 53) and "52.6 s / 4.4 s" in how  # the long window decides
    assert bounds.bound(burn, inputs, PIPE).total_s == pytest.approx(52.6 + 120 + 25, abs=0.1)


def test_a_fresh_stack_crosses_at_once() -> None:
    assert burn_window_s(0.0144, 0, 2.0, 1.0) == 0
    burn = ident("ServeErrorBudgetBurn", for_s=120, long_window="1h", short_window="5m")
    fresh = Inputs(traffic=Traffic(0, 0, 2.0, 0.5), threshold=0.0144, long_s=3600, short_s=300)
    b = bounds.bound(burn, fresh, PIPE)
    assert (b.window_s, b.total_s) == (0.0, 145.0)


def test_a_bad_share_under_the_threshold_never_pages_so_no_bound() -> None:
    assert burn_window_s(0.0144, 100, 2.0, 0.01) is None
    burn = ident("ServeErrorBudgetBurn", long_window="1h", short_window="5m")
    b = bounds.bound(burn, Inputs(traffic=Traffic(100, 10, 2.0, 0.01), threshold=0.0144, long_s=3600,
                                  short_s=300), PIPE)
    assert b.total_s is None and "never crosses" in b.detail
    assert measure.verdict(30.0, b) == "no bound"


def test_a_long_wait_is_capped_at_the_window() -> None:
    # Heavy history, a share just over the threshold: by the window's length it holds fault traffic only.
    assert burn_window_s(0.0144, 1e9, 1.0, 0.02, 300) == 300


# --- bounds per alert ------------------------------------------------------------------------------

def test_every_page_rule_has_a_bound() -> None:
    pages = [i for i in KNOWN if i.page]
    assert pages
    missing = [i.key for i in pages if i.alert not in bounds.WINDOW_TERMS]
    assert not missing, f"add these pages to scorecard/bounds.py WINDOW_TERMS: {missing}"


def test_an_unknown_alert_has_no_bound_and_fails_the_scorecard() -> None:
    stranger = ident("SomethingNew")
    b = bounds.bound(stranger, Inputs(), PIPE)
    assert (b.kind, b.total_s) == ("unknown", None) and "no bound" in b.detail
    card = assemble([stranger], [run_of("x", [("SomethingNew", {})], [10.0])], bound_for=lambda i, r, lab, d:
                    bounds.bound(i, Inputs(), PIPE))
    assert card.exit_code == 1
    assert any("SomethingNew has no bound" in f for f in card.failures)
    assert card.detection[0].verdict == "no bound"


def test_health_check_bound_reads_the_target_deployment() -> None:
    profile = OPS.profile("cpu")
    opts = profile.deployment("classify", "Preprocessor")
    h = health(profile, "classify", "Preprocessor")
    assert h is not None
    assert (h.period_s, h.timeout_s) == (opts.health_check_period_s, opts.health_check_timeout_s)
    assert h.watchdog_s == getattr(opts, "watchdog_s", None)
    assert health(profile, "chaos-hog", "MemoryHog") == HealthCheck(10.0, 30.0)  # Serve's defaults
    unhealthy = ident("ServeReplicaUnhealthy")
    b = bounds.bound(unhealthy, Inputs(health=HealthCheck(2, 3, 10)), PIPE)
    assert (b.window_s, b.total_s) == (20.0, 45.0) and "watchdog 10" in b.detail
    live = LiveBounds(OPS, FakeSource(), PIPE, profile)
    run = run_of("hung-replica", [("ServeReplicaUnhealthy", {"application": "classify",
                                                             "deployment": "Preprocessor"})], [18.5])
    got = live(unhealthy, run, {"application": "classify", "deployment": "Preprocessor"}, 18.5)
    period, timeout = opts.health_check_period_s or 0, opts.health_check_timeout_s or 0
    assert got.window_s == 2 * (period + timeout) + (h.watchdog_s or 0)


@pytest.mark.parametrize(("alert", "expr", "for_s", "window", "total"), [
    ("RayGCSUnreachable", "sum(rate(x[30s])) == 0\nor\nabsent(x)", 30, 30, 85),
    ("ServeReplicaStalled", "sum(increase(x[2m])) == 0 and y > 0", 60, 120, 205),
    ("ServeReplicaOOMKilled", "(x - (x offset 10m) > 0)", 0, 0, 25),
    ("ServeDeploymentFailed", "ray_serve_deployment_status == 1", 0, 0, 25),
])
def test_window_terms_from_the_table(alert: str, expr: str, for_s: float, window: float,
                                     total: float) -> None:
    b = bounds.bound(ident(alert, for_s=for_s, expr=expr), Inputs(), PIPE)
    assert (b.window_s, b.total_s) == (window, total)


def test_a_replacement_waits_for_its_start_and_a_health_check() -> None:
    restarts = ident("ServeReplicaRestarts", "warning")
    b = bounds.bound(restarts, Inputs(health=HealthCheck(10, 30), startup_s=17.5), PIPE)
    assert (b.window_s, b.total_s) == (27.5, 52.5) and "start 17.5 s" in b.detail
    unknown = bounds.bound(restarts, Inputs(health=HealthCheck(10, 30)), PIPE)
    assert unknown.total_s is None and unknown.detail.startswith("no bound")


def test_oscillation_counts_half_periods() -> None:
    b = bounds.bound(ident("ServeAutoscalerOscillation", "warning"), Inputs(changes=4, period_s=30), PIPE)
    assert (b.window_s, b.total_s) == (60.0, 85.0)


def test_the_live_burn_bound_reads_traffic_around_the_fault() -> None:
    """slo-burn's expectation names the slo: the route is its route, and N, r and s come from
    Prometheus at the fault (increase over each window) and over the fault's span."""
    source = FakeSource(values={"[3600s]": 14400.0, "[300s]": 1200.0, '5.."}[60s]': 120.0, "[60s]": 240.0})
    burn = next(i for i in KNOWN if i.key == "ServeErrorBudgetBurn{long_window=1h,short_window=5m}")
    run = run_of("slo-burn", [("ServeErrorBudgetBurn", {"slo": "embed", "long_window": "1h"})], [60.0])
    live = LiveBounds(OPS, source, PIPE, OPS.profile("cpu"))
    b = live(burn, run, {"slo": "embed", "long_window": "1h"}, 60.0)
    threshold = 14.4 * OPS.slo_for("/embed").error_budget  # type: ignore[union-attr]
    expected = threshold * 14400 / (4.0 * (0.5 - threshold))
    assert b.window_s == pytest.approx(expected, abs=0.1)
    assert any('route="/embed"' in q for q in source.queries)


# --- recall ----------------------------------------------------------------------------------------

def test_recall_counts_pages_fired_and_names_gaps() -> None:
    known = [ident("A", for_s=0), ident("B"), ident("RayMetricsAbsent"), ident("W", "warning")]
    runs = [run_of("e1", [("A", {"application": "x"})], [10.0]),
            run_of("e2", [("B", {})], [None])]  # expected, never fired
    card = assemble(known, runs)
    r = card.recall
    assert (r.page_identities, r.covered, r.percent) == (3, 1, 33.3)
    assert [g.identity for g in r.gaps] == ["B", "RayMetricsAbsent"]
    assert r.unexplained == ["B"]  # RayMetricsAbsent has its reason in scorecard/gaps.py
    by = {c.identity: c for c in card.coverage}
    assert by["A"].fired_by == ["e1"] and by["B"].expected_by == ["e2"] and by["B"].fired_by == []
    assert by["RayMetricsAbsent"].gap_reason == gaps.reason_for(ident("RayMetricsAbsent"))
    assert any("page B fired by no experiment" in f for f in card.failures)


def test_burn_rules_collapse_per_window_pair_with_their_routes() -> None:
    keys = [i.key for i in KNOWN if i.alert == "ServeErrorBudgetBurn"]
    assert keys == [f"ServeErrorBudgetBurn{{long_window={lw},short_window={sw}}}"
                    for lw, sw in (("1h", "5m"), ("6h", "30m"), ("1d", "2h"), ("3d", "6h"))]
    fast = next(i for i in KNOWN if i.key == keys[0])
    assert set(fast.routes) == {s.route for s in OPS.slos} and fast.page


def test_an_expectation_is_attributed_to_one_identity() -> None:
    pinned, note = rules.attribute("ServeErrorBudgetBurn", {"slo": "embed", "long_window": "1h"}, KNOWN)
    assert [i.key for i in pinned] == ["ServeErrorBudgetBurn{long_window=1h,short_window=5m}"] and not note
    loose, note = rules.attribute("ServeErrorBudgetBurn", {"route": "/embed"}, KNOWN)
    assert [i.key for i in loose] == ["ServeErrorBudgetBurn{long_window=1h,short_window=5m}"]
    assert "shortest `for`" in note
    assert rules.attribute("ServeErrorBudgetBurn", {"route": "/nowhere"}, KNOWN)[0] == []


def test_an_old_result_without_expected_reads_its_detect_keys() -> None:
    key = "ServeReplicaUnhealthy{'application': 'classify', 'deployment': 'Preprocessor'}"
    old = ChaosRun(experiment="hung-replica", detect_s={key: 18.5, "RayGCSUnreachable": None})
    assert rules.expectations(old) == [
        (key, "ServeReplicaUnhealthy", {"application": "classify", "deployment": "Preprocessor"}),
        ("RayGCSUnreachable", "RayGCSUnreachable", {})]


def experiment_expects() -> list[tuple[str, str, dict[str, str]]]:
    out = []
    for path in sorted(EXPERIMENTS_DIR.glob("*.yaml")):
        exp = parse(path)
        out += [(exp.name, e.alert, dict(e.labels)) for e in exp.expect]
    return out


def test_every_page_is_fired_by_an_experiment_or_has_a_reason() -> None:
    """A page-severity alert needs a chaos experiment whose `expect` fires it, or a reason in
    scorecard/gaps.py; a reason for an alert an experiment does fire is stale."""
    expected = {i.key: [] for i in KNOWN}
    for name, alert, labels in experiment_expects():
        for identity in rules.attribute(alert, labels, KNOWN)[0]:
            expected[identity.key].append(name)
    pages = [i for i in KNOWN if i.page]
    bare = [i.key for i in pages if not expected[i.key] and gaps.reason_for(i) is None]
    assert not bare, f"pages no experiment expects and with no reason in scorecard/gaps.py: {bare}"
    stale = [f"{i.key} (by {expected[i.key]})" for i in KNOWN if expected[i.key] and gaps.reason_for(i)]
    assert not stale, f"gap reasons for alerts an experiment fires: {stale}"


# --- reset -----------------------------------------------------------------------------------------

def firing(start: float, end: float, step: float = 5) -> Points:
    n = int((end - start) // step) + 1
    return [(start + k * step, 1.0) for k in range(n)]


@pytest.mark.parametrize(("points", "reset", "still"), [
    (firing(T0 - 30, T0 + 95), 95.0, None),  # resolves 95 s after recovery
    (firing(T0 - 30, T0 + 95) + firing(T0 + 600, T0 + 700), 95.0, None),  # a later firing is another fault's
    (firing(T0 - 300, T0 - 100), 0.0, None),  # resolved before the recovery
    ([], 0.0, None),
    (firing(T0 - 30, T0 + 1000), None, T0 + 1000),  # still firing when the range ends
])
def test_reset_from_history(points: Points, reset: float | None, still: float | None) -> None:
    assert measure.reset_from_points(points, T0, 5, end=T0 + 1000) == (reset, still)


def test_reset_prefers_the_experiment_and_else_reads_history() -> None:
    known = [ident("A"), ident("B")]
    measured = run_of("e1", [("A", {})], [10.0], reset_s={"A": 42.0})
    unmeasured = run_of("e2", [("B", {"application": "x"})], [12.0])
    asked: list[Labels] = []

    def history(labels: Labels, since: float) -> Points:
        asked.append(labels)
        return firing(since - 10, since + 120)

    card = assemble(known, [measured, unmeasured], history=history)
    by = {r.experiment: r for r in card.reset}
    assert (by["e1"].reset_s, by["e1"].source) == (42.0, "experiment")
    assert (by["e2"].reset_s, by["e2"].source) == (120.0, "prometheus")
    assert asked == [{"alertname": "B", "severity": "critical", "application": "x"}]
    # A later experiment's fault may have kept it firing: the row says so.
    later = run_of("e3", [], []).model_copy(update={"marks": {"inject": T0 + 150}})
    noted = {r.experiment: r for r in assemble(known, [measured, unmeasured, later], history=history).reset}
    assert noted["e2"].reset_s == 120.0
    assert noted["e2"].detail == "outlasted the start of e3, whose fault may have kept it firing"
    no_marks = unmeasured.model_copy(update={"marks": {"inject": T0}})
    assert assemble(known, [no_marks], history=history).reset[0].detail == "no recovery mark"


# --- precision -------------------------------------------------------------------------------------

def alerts_series(labels: Labels, points: Points) -> tuple[Labels, Points]:
    return ({"__name__": "ALERTS", "alertstate": "firing", **labels}, points)


def test_pages_in_the_soak_and_its_grace_are_false_pages() -> None:
    start, end = T0, T0 + 450
    series = [
        alerts_series({"alertname": "ServeReplicaUnhealthy", "severity": "critical", "replica": "r1"},
                      firing(T0 + 100, T0 + 130)),
        alerts_series({"alertname": "RayGCSUnreachable", "severity": "critical"},
                      firing(end + 100, end + 120)),
        alerts_series({"alertname": "Late", "severity": "critical"},
                      firing(end + 500, end + 600)),  # after the grace
    ]
    grace = measure.grace_s(KNOWN, 5, 5)
    found = measure.pages(series, start, end + grace)
    assert [(p.alert, p.labels, p.first) for p in found] == [
        ("ServeReplicaUnhealthy", {"replica": "r1"}, T0 + 100), ("RayGCSUnreachable", {}, end + 100)]
    false_pages, leftover = measure.split_leftover(found, [{"alertname": "RayGCSUnreachable",
                                                            "alertstate": "firing", "severity": "critical"}])
    assert [p.alert for p in false_pages] == ["ServeReplicaUnhealthy"]
    assert [p.alert for p in leftover] == ["RayGCSUnreachable"]


def test_grace_is_the_longest_short_for_of_a_page_and_two_intervals() -> None:
    known = [ident("A", for_s=120), ident("B", for_s=900), ident("C", "warning", for_s=290)]
    assert measure.grace_s(known, 5, 5) == 140
    assert measure.grace_s(KNOWN, 5, 5) >= 140  # today's pages: 5m (RayMetricMissing) or 2m + 20 s


# --- leak watch ------------------------------------------------------------------------------------

def rss(component: str, pid: str, mb: float) -> tuple[Labels, float]:
    return ({"Component": component, "pid": pid}, mb)


def test_leak_growth_per_replica_and_deployment() -> None:
    embed, pre = "ray::ServeReplica:embed:Embedder", "ray::ServeReplica:classify:Preprocessor"
    start = [rss(embed, "11", 700), rss(pre, "21", 200), rss(pre, "22", 200), rss(embed, "12", 500)]
    end = [rss("ray::ServeReplica:embed:Embedder.handle_request_with_rejection", "11", 714),  # title changed
           rss("ray::ServeReplica:classify:Preprocessor", "21", 220),
           rss("ray::ServeReplica:classify:Preprocessor", "22", 200),
           rss("ray::ServeReplica:classify:Preprocessor", "23", 150)]
    leak = measure.leak(start, end, T0, T0 + 450)
    growth = {(r.deployment, r.pid): r.growth_pct for r in leak.replicas}
    assert growth == {("Embedder", "11"): 2.0, ("Preprocessor", "21"): 10.0, ("Preprocessor", "22"): 0.0}
    deps = {d.deployment: (d.replicas, d.start_mb, d.end_mb, d.growth_pct) for d in leak.deployments}
    assert deps == {"Embedder": (1, 700, 714, 2.0), "Preprocessor": (2, 400, 420, 5.0)}
    assert [(r.deployment, r.pid) for r in leak.over] == [("Preprocessor", "21")]
    assert leak.appeared == ["classify/Preprocessor pid 23"] and leak.vanished == ["embed/Embedder pid 12"]


# --- the soak, with a fake load test and a fake memray ---------------------------------------------

class FakeSource:
    """Prometheus: instant values chosen by a substring of the query; ranges from a table."""

    def __init__(self, values: dict[str, float] | None = None,
                 ranges: dict[str, list[tuple[Labels, Points]]] | None = None,
                 instants: dict[str, list[tuple[Labels, float]]] | None = None) -> None:
        self.values, self.ranges, self.instants = values or {}, ranges or {}, instants or {}
        self.queries: list[str] = []

    def instant(self, expr: str, at: float) -> list[tuple[Labels, float]]:
        self.queries.append(expr)
        for needle, found in self.instants.items():
            if needle in expr:
                return found if not callable(found) else found(at)
        value = next((v for needle, v in self.values.items() if needle in expr), None)
        return [] if value is None else [({}, value)]

    def series(self, expr: str, start: float, end: float) -> list[tuple[Labels, Points]]:
        self.queries.append(expr)
        return next((s for needle, s in self.ranges.items() if needle in expr), [])


def test_the_soak_runs_each_shape_then_reads_pages_and_rss(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [T0]
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        if "loadtests.run" in cmd:
            out = Path(kw["env"]["REPORT_DIR"])
            out.mkdir(parents=True)
            (out / "samples.json").write_text(json.dumps({"started": clock[0] + 5, "ended": clock[0] + 35}))
            clock[0] += 40
            return subprocess.CompletedProcess(cmd, 1 if kw["env"]["SHAPE"] == "spike" else 0)
        return subprocess.CompletedProcess(cmd, 2, "", "lldb: cannot attach")  # memray fails

    def fake_sleep(s: float) -> None:
        clock[0] += s

    monkeypatch.setattr(soak, "pages_firing", lambda ops: [])
    # Read after the first shape (T0 + 40) and after the last (T0 + 120).
    rss_at = {T0 + 40: [rss("ray::ServeReplica:embed:Embedder", "11", 700)],
              T0 + 120: [rss("ray::ServeReplica:embed:Embedder", "11", 770)]}
    source = FakeSource(
        ranges={'severity="critical"': [alerts_series({"alertname": "X", "severity": "critical"},
                                                      firing(T0 + 50, T0 + 60))],
                'severity="warning"': []},
        instants={"ALERTS": []})
    fx = soak.Effects(run=fake_run, clock=lambda: clock[0], sleep=fake_sleep, env={},
                      rss=lambda ops: rss_at[clock[0]])
    precision, leak = soak.soak(OPS, source, KNOWN, "short", tmp_path, fx)
    assert [c[-1] for c in calls if "loadtests.run" in c] == ["loadtests.run"] * 3
    assert [(s.shape, s.exit_code, s.duration_s) for s in precision.shapes] == [
        ("step", 0, 30), ("spike", 1, 30), ("oscillation", 0, 30)]
    assert not precision.clean and [p.alert for p in precision.false_pages] == ["X"]
    # No page pending: the grace is the pipeline's lag, Ray's export and two scrapes and evaluations.
    assert precision.grace_s == 30 and clock[0] >= T0 + 120 + precision.grace_s
    assert [(r.pid, r.growth_pct) for r in leak.over] == [("11", 10.0)]
    assert (leak.start, leak.end) == (T0 + 40, T0 + 120)
    [cap] = leak.captures
    assert (cap.deployment, cap.exit_code, cap.path) == ("Embedder", 2, None)
    assert cap.error == "lldb: cannot attach"
    memray = next(c for c in calls if "stack.tools.memprofile" in c)
    assert memray[memray.index("--deployment") + 1] == "Embedder"


def test_a_capture_reports_its_flame_graph() -> None:
    def ok(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        out = "capture  a.bin\nflamegraph /r/m/Embedder-flamegraph.html\n"
        return subprocess.CompletedProcess(cmd, 0, out, "")
    cap = soak.capture("Embedder", "11", Path("/r"), soak.Effects(run=ok))
    assert (cap.exit_code, cap.path) == (0, "/r/m/Embedder-flamegraph.html")


# --- the whole card: report, JSON, exit code -------------------------------------------------------

def assemble(known: list[Identity], runs: list[ChaosRun], bound_for: measure.BoundFor | None = None,
             history: measure.History | None = None, precision: Precision | None = None,
             mode: str = "short") -> Scorecard:
    precision = precision or clean_precision()
    return scorecard_run.assemble(OPS, known, runs, bound_for or fixed_bound(), history, PIPE, mode, T0,
                                  T0 + 1200, "run", precision, measure.leak([], [], T0, T0 + 90))


def clean_precision(**update: Any) -> Precision:
    shapes = [ShapeRun(shape=s, duration_s=30, exit_code=0, report_dir=f"r/soak-{s}", started=T0,
                       ended=T0 + 30) for s in soak.SHAPES]
    p = Precision(start=T0, end=T0 + 100, grace_s=140, shapes=shapes, clean=True, false_pages=[], warnings=[],
                  leftover=[])
    return p.model_copy(update=update)


def full_cover() -> list[ChaosRun]:
    """A run per page identity without a gap reason, each fired within its bound; the half-alive pair."""
    runs = [run_of(f"e-{n}", [(i.alert, {"severity": i.severity, **i.labels})], [20.0])
            for n, i in enumerate(i for i in KNOWN if i.page and not gaps.reason_for(i))]
    runs += [run_of("half-alive", [], [], failed=1, hung=2, loss_bound="<= 5", recover_s=30.0),
             run_of("half-alive-unwatched", [], [], failed=9, hung=12, loss_bound="<= 10", recover_s=250.0)]
    return runs


def test_a_clean_scorecard_exits_0() -> None:
    card = assemble(KNOWN, full_cover())
    assert card.failures == [] and card.exit_code == 0
    assert card.recall.covered + len(card.recall.gaps) == card.recall.page_identities
    assert card.half_alive.note.endswith("the watchdog saved 8 failed requests")


@pytest.mark.parametrize(("change", "failure"), [
    ({"bound": 10.0}, "past its bound of 10 s"),
    ({"precision": {"false_pages": [{"alert": "X", "severity": "critical", "labels": {}, "first": T0,
                                     "last": T0}]}}, "false page: X"),
    ({"precision": {"clean": False}}, "the soak was not clean"),
    ({"drop": True}, "fired by no experiment, and no reason"),
])
def test_what_fails_the_scorecard(change: dict[str, Any], failure: str) -> None:
    runs = full_cover()
    if change.get("drop"):
        runs = runs[1:]
    precision = clean_precision()
    if "precision" in change:
        precision = Precision.model_validate({**precision.model_dump(), **change["precision"]})
    card = assemble(KNOWN, runs, bound_for=fixed_bound(change.get("bound", 100.0)), precision=precision,
                    mode="full")
    assert card.exit_code == 1
    assert any(failure in f for f in card.failures), card.failures


def test_a_failed_experiment_fails_the_scorecard_and_marks_its_detection() -> None:
    """Its alert may have fired on evidence from before the fault (the run's failure says so): the
    detection is shown, marked, and the scorecard fails."""
    runs = full_cover()
    runs[0] = runs[0].model_copy(update={"passed": False, "problems": ["runbook X step y did not find /z/"]})
    card = assemble(KNOWN, runs)
    assert card.exit_code == 1
    assert f"experiment {runs[0].experiment} failed: runbook X step y did not find /z/" in card.failures
    [row] = [d for d in card.detection if d.experiment == runs[0].experiment]
    assert "FAILED: runbook X step y" in row.note


def _settle(pending_until: float | None, fails: bool = False) -> tuple[float, list[float]]:
    """The soak's grace with a page pending until `pending_until` (None: never); the clock starts at the
    soak's end, T0."""
    clock = [T0]

    def pending(at: float) -> list[tuple[Labels, float]]:
        if fails:
            raise httpx.ConnectError("no Prometheus")
        return [({"alertname": "X"}, 1.0)] if pending_until is not None and at < pending_until else []
    asked: list[float] = []
    source = FakeSource(instants={'alertstate="pending"': lambda at: asked.append(at) or pending(at)})
    fx = soak.Effects(clock=lambda: clock[0], sleep=lambda s: clock.__setitem__(0, clock[0] + s))
    return soak.settle(OPS, source, KNOWN, T0, fx), asked


def test_the_grace_waits_out_a_pending_page_and_no_longer() -> None:
    most = measure.grace_s(KNOWN, 5, 5) + 10
    assert _settle(None)[0] == 30  # nothing pending once the pipeline saw the end
    grace, asked = _settle(T0 + 62)
    assert grace == 65 and asked[0] == T0 + 30  # asked again every 5 s until it no longer pends
    assert _settle(math.inf)[0] == most  # a page pending throughout: the whole grace, where it fires
    assert _settle(None, fails=True)[0] == most  # Prometheus silent: pending, as far as anyone knows


def test_a_short_soak_s_gates_do_not_void_its_precision() -> None:
    unclean = clean_precision(clean=False)
    assert assemble(KNOWN, full_cover(), precision=unclean).exit_code == 0  # short
    assert assemble(KNOWN, full_cover(), precision=unclean, mode="full").exit_code == 1


def sample_card() -> Scorecard:
    known = [ident("ServeReplicaUnhealthy"), ident("RayMetricsAbsent", for_s=120),
             ident("ServeReplicaRestarts", "warning")]
    runs = [run_of("hung-replica", [("ServeReplicaUnhealthy", {"application": "classify",
                                                               "deployment": "Preprocessor"})], [18.5]),
            run_of("replica-crash", [("ServeReplicaRestarts", {"application": "embed"})], [17.5],
                   reset_s={"ServeReplicaRestarts{'application': 'embed'}": 880.0})]
    page = {"alert": "ServeReplicaUnhealthy", "severity": "critical", "labels": {"replica": "r1"},
            "first": T0 + 10, "last": T0 + 40}
    precision = Precision.model_validate({**clean_precision().model_dump(), "false_pages": [page]})
    card = assemble(known, runs, history=lambda labels, since: firing(since - 20, since + 95),
                    precision=precision)
    leak = measure.leak([rss("ray::ServeReplica:embed:Embedder", "11", 700)],
                        [rss("ray::ServeReplica:embed:Embedder", "11", 770)], T0, T0 + 100)
    capture = Capture(deployment="Embedder", pid="11", exit_code=0, path="r/memprofile-Embedder/f.html")
    return card.model_copy(update={"leak": leak.model_copy(update={"captures": [capture]})})


def test_the_markdown_and_json(tmp_path: Path) -> None:
    card = sample_card()
    out = report.write(card, tmp_path / "scorecard-x")
    md = (out / "scorecard.md").read_text()
    for section in ("# Alert scorecard: FAILED", "## Recall", "## Detection", "## Reset", "## Precision",
                    "## Leak watch", "## Loss", "![detection and reset](scorecard.png)"):
        assert section in md, section
    assert "**1 of 2 (50%)**" in md and "`RayMetricsAbsent`: needs Ray's service discovery" in md
    assert "| `ServeReplicaUnhealthy` | hung-replica | 18.5 | 17.5 | 0 | 0 | 100 | within |" in md
    assert "| `ServeReplicaUnhealthy` | hung-replica | 95 | prometheus |" in md
    assert "| `ServeReplicaRestarts` | replica-crash | 880 | experiment |" in md
    assert "False pages: **1**:" in md and "`ServeReplicaUnhealthy{replica=r1}` (critical)" in md
    assert "| embed/Embedder | 1 | 700 | 770 | +10.00% |" in md and "r/memprofile-Embedder/f.html" in md
    assert "not compared: half-alive, half-alive-unwatched did not run" in md
    assert (out / "scorecard.png").stat().st_size > 1000
    back = Scorecard.model_validate_json((out / "scorecard.json").read_text())
    assert back == card
    raw = json.loads((out / "scorecard.json").read_text())
    assert set(raw) == {"mode", "started", "ended", "chaos_source", "pipeline", "experiments", "coverage",
                        "recall", "detection", "reset", "precision", "leak", "loss", "half_alive", "failures",
                        "exit_code"}
    assert raw["exit_code"] == 1 and raw["failures"]


def test_reuse_takes_the_latest_report_per_experiment(tmp_path: Path) -> None:
    for stamp, detect in (("20261201-100000", 30.0), ("20261201-110000", 18.5)):
        d = tmp_path / f"chaos-hung-replica-{stamp}"
        d.mkdir()
        (d / "result.json").write_text(json.dumps({"experiment": "hung-replica", "detect_s": {"X": detect},
                                                   "log": ["ignored"], "some_new_field": 1}))
    [run] = scorecard_run.reuse(tmp_path)
    assert run.detect_s == {"X": 18.5} and run.report and run.report.endswith("110000")


# --- publishing and the runbook lines --------------------------------------------------------------

def test_publish_and_the_runbook_line(tmp_path: Path) -> None:
    card = sample_card()
    report.write(card, tmp_path / "rep")
    figures_file = tmp_path / "scorecard.json"
    published = publish.publish(tmp_path / "rep", out=figures_file)
    assert scorecard_line.read(figures_file) == published
    unhealthy = published.alerts["ServeReplicaUnhealthy"]
    assert unhealthy.fired_by == ["hung-replica"] and unhealthy.false_pages == 1
    line = scorecard_line.line("ServeReplicaUnhealthy", published)
    assert line.startswith("> **Scorecard** (`make scorecard`, short run of ")
    assert "page; fired by hung-replica; detection hung-replica 18 s (bound 100 s)" in line
    assert "reset hung-replica 95 s" in line and "false pages in a 1.7 min soak: 1." in line
    absent = scorecard_line.line("RayMetricsAbsent", published)
    assert "fired by no experiment; gap: needs Ray's service discovery removed" in absent
    assert scorecard_line.line("NeverMeasured", published) == \
        f"> **Scorecard**: {scorecard_line.NOT_MEASURED}"
    assert publish.pair("ServeErrorBudgetBurn{long_window=1h,short_window=5m}") == "1h/5m"


def test_the_block_goes_under_the_title_once(tmp_path: Path) -> None:
    text = "# Alert\n\n## Meaning\n\nx\n"
    once = scorecard_line.with_block(text, "> one")
    assert once.startswith(f"# Alert\n\n{scorecard_line.BEGIN}\n> one\n{scorecard_line.END}\n\n## Meaning\n")
    again = scorecard_line.with_block(once, "> two")
    assert again == once.replace("> one", "> two") and again.count(scorecard_line.END) == 1
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text("groups:\n- name: g\n  rules:\n  - alert: Alert\n    expr: x\n  - alert: NoBook\n"
                          "    expr: y\n")
    (tmp_path / "Alert.md").write_text(text)
    (tmp_path / "Case.md").write_text("# Case\n")
    outs = scorecard_line.outputs(tmp_path, scorecard_line.Published(), rules_file)
    assert list(outs) == [tmp_path / "Alert.md"]  # failure cases and missing runbooks untouched
    assert f"{scorecard_line.NOT_MEASURED}" in outs[tmp_path / "Alert.md"]


def test_every_alert_runbook_carries_its_line_as_committed() -> None:
    outs = scorecard_line.outputs()
    assert outs, "no alert runbooks found"
    stale = [p.name for p, text in outs.items() if p.read_text() != text]
    assert not stale, f"run `make generate` (runbooks.scorecard_line): {stale}"
    for path in outs:
        lines = path.read_text().splitlines()
        assert lines[0] == f"# {path.stem}" and lines[2].startswith("<!-- scorecard:begin"), path.name
    assert scorecard_line.read() == scorecard_line.Published.model_validate_json(
        (RUNBOOKS_DIR / "scorecard.json").read_text())


def test_the_makefile_runs_the_generator_last_and_has_the_target() -> None:
    makefile = (ROOT / "Makefile").read_text()
    generators = next(x for x in makefile.splitlines() if x.startswith("GENERATORS :="))
    assert generators.split()[-1] == "runbooks.scorecard_line"
    assert "\nscorecard: setup\n" in makefile and "-m scorecard.run" in makefile


def test_nothing_imports_the_scorecard() -> None:
    top = import_graph(ROOT, top_level=True)
    assert [src for src, dsts in top.items() if "scorecard" in dsts] == []
    assert {"chaos", "alerts", "runbooks", "stack"} <= set(top["scorecard"])


def test_a_soak_saved_reads_back_the_same(tmp_path: Path) -> None:
    """The live tests soak first and score later: what --soak-only writes, --soak-from reads whole."""
    precision = clean_precision(false_pages=[])
    leak = measure.leak([], [], T0, T0 + 90)
    soak.save(precision, leak, tmp_path / soak.SOAK_FILE)
    assert soak.load(tmp_path / soak.SOAK_FILE) == (precision, leak)
