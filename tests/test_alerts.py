"""The generated rules: every alert is complete, and every rule has a promtool case where it fires and
one where it is silent on data it reads (drift and promtool: tests/test_generate.py)."""

from __future__ import annotations

import bisect
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from alerts import generate, ops_rules, required_metrics
from alerts.rule import SEVERITIES
from dashboards.spec import EVENT_ONLY_METRICS
from stack import ROOT
from stack.artifacts import RULES_FILE
from stack.cluster_labels import BY, CLUSTER, LABELS, NAMESPACE
from stack.config import OPS_PATH, load, parse
from stack.local import ray_head


def all_alerts() -> list[dict]:
    return [r for g in generate.groups(load()) for r in g["rules"] if "alert" in r]


@pytest.mark.parametrize("rule", all_alerts(), ids=lambda r: f"{r['alert']}-{r['labels'].get('slo', '')}")
def test_alert_is_complete(rule: dict) -> None:
    name, ann = rule["alert"], rule["annotations"]
    assert name[0].isupper() and name.isalnum()
    assert rule["labels"]["severity"] in SEVERITIES
    assert ann["summary"] and "{{" not in ann["summary"], "summary must be static"
    assert "{{" in ann["description"], "description must be templated"
    assert ann["runbook_url"].endswith(f"/{name}.md")
    assert (ROOT / "runbooks" / f"{name}.md").exists()


# --- promtool coverage, counted per rule -------------------------------------------------------------
# A rule is its alert name and its static labels: severity and, on burn-rate rules, slo, route and the
# window pair (ServeErrorBudgetBurn is 20 rules). Each needs a case where it fires and one where it is
# silent while every series its expression reads, through the recording rules, has samples.

Identity = tuple[str, tuple[tuple[str, str], ...]]
Samples = tuple[list[float], list[float | None]]  # timestamps (s), values (None: a stale marker)
LOOKBACK_S = 300  # Prometheus' lookback: an older sample is no data
UNITS_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
# Removed before reading selectors: label lists (by, on, ...), ranges, subqueries and offsets.
NOT_SELECTORS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
                           r"|\[[^\]]*\]|\boffset\s+\w+")
# A metric name not followed by "(" (a function), with its matchers.
SELECTOR = re.compile(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(?![\w:])\s*(\{[^}]*\})?(?!\s*\()")
KEYWORDS = {"and", "or", "unless", "bool", "inf", "nan"}
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
NUMBER = r"(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
VALUE = re.compile(rf"(?P<a>[-+]?{NUMBER})(?:(?P<op>[-+])(?P<b>{NUMBER}))?(?:x(?P<n>\d+))?")


@dataclass(frozen=True)
class Selector:
    name: str
    matchers: tuple[tuple[str, str, str], ...]

    def admits(self, labels: dict[str, str]) -> bool:
        """Matches every label it knows of: a recording rule's static labels, or a whole series."""
        return all(matches(op, want, labels[label]) for label, op, want in self.matchers if label in labels)

    def selects(self, labels: dict[str, str]) -> bool:
        return labels["__name__"] == self.name and self.admits({m[0]: "" for m in self.matchers} | labels)


@dataclass(frozen=True)
class Check:
    """One alert_rule_test entry, with its group's input series."""
    eval_s: float
    alertname: str
    exp_alerts: list[dict]
    series: list[tuple[dict[str, str], Samples]]


def matches(op: str, want: str, got: str) -> bool:
    if op in ("=", "!="):
        return (got == want) == (op == "=")
    return (re.fullmatch(want, got) is not None) == (op == "=~")


def seconds(duration: str | int) -> float:
    text = str(duration)
    parts = DURATION.findall(text)
    assert text == "0" or "".join(n + u for n, u in parts) == text, f"duration {text!r}"
    return sum(int(n) * UNITS_S[u] for n, u in parts)


def selectors(expr: str) -> list[Selector]:
    # A string outside a selector's braces is a function's argument (label_replace's), not a name.
    parts = re.split(r"(\{[^}]*\})", expr)
    expr = "".join(p if p.startswith("{") else STRING.sub('""', p) for p in parts)
    found = SELECTOR.findall(NOT_SELECTORS.sub(" ", expr))
    return [Selector(name, tuple(MATCHER.findall(braces))) for name, braces in found if name not in KEYWORDS]


def leaves(expr: str, records: list[dict]) -> list[Selector]:
    """The raw series an expression reads: a recorded name stands for its rules' expressions."""
    out: list[Selector] = []
    for sel in selectors(expr):
        sources = [r for r in records if r["record"] == sel.name and sel.admits(r.get("labels") or {})]
        out += [leaf for r in sources for leaf in leaves(r["expr"], records)] if sources else [sel]
    return out


def series_labels(text: str) -> dict[str, str]:
    name, _, matchers = text.partition("{")
    return {"__name__": name.strip()} | {label: value for label, _, value in MATCHER.findall(matchers)}


def samples(values: str, interval_s: float) -> Samples:
    """promtool's expanding notation: 'a+bxn' is n+1 values, '_xn' n missing ones, 'stale' a marker."""
    ts: list[float] = []
    vs: list[float | None] = []
    i = 0
    for token in str(values).split():
        if blank := re.fullmatch(r"_(?:x(\d+))?", token):
            i += int(blank[1] or 1)
            continue
        m = VALUE.fullmatch(token)
        assert m or token == "stale", f"series value {token!r}"
        step = float(m["b"] or 0) * (-1 if m["op"] == "-" else 1) if m else 0
        for j in range(int(m["n"] or 0) + 1 if m else 1):
            ts.append(i * interval_s)
            vs.append(float(m["a"]) + j * step if m else None)
            i += 1
    return ts, vs


def live(series: Samples, t: float) -> bool:
    ts, vs = series
    last = bisect.bisect_right(ts, t) - 1
    return last >= 0 and vs[last] is not None and t - ts[last] <= LOOKBACK_S


def checks(path: Path, rules_path: Path) -> list[Check]:
    doc = yaml.safe_load(path.read_text())
    loaded = [(path.parent / f).resolve() for f in doc["rule_files"]]
    assert loaded == [rules_path.resolve()], f"{path.name} tests {loaded}, not the generated rules"
    out = []
    for group in doc["tests"]:
        interval = seconds(group.get("interval", "1m"))
        series = [(series_labels(s["series"]), samples(s["values"], interval)) for s in group["input_series"]]
        out += [Check(seconds(c["eval_time"]), c["alertname"], c.get("exp_alerts") or [], series)
                for c in group.get("alert_rule_test", [])]
    return out


def identity(rule: dict) -> Identity:
    return rule["alert"], tuple(sorted(rule["labels"].items()))


def show(ident: Identity) -> str:
    return f"{ident[0]}{{{', '.join(f'{k}={v}' for k, v in ident[1])}}}"


def fires(ident: Identity, check: Check) -> bool:
    """An expected alert carries the rule's static labels (promtool then checks all of its labels)."""
    expected = [{(k, str(v)) for k, v in (a.get("exp_labels") or {}).items()} for a in check.exp_alerts]
    return check.alertname == ident[0] and any(set(ident[1]) <= labels for labels in expected)


def silent_with_data(ident: Identity, reads: list[Selector], check: Check) -> bool:
    return (check.alertname == ident[0] and not check.exp_alerts
            and all(any(sel.selects(labels) and live(s, check.eval_s) for labels, s in check.series)
                    for sel in reads))


def coverage(rules_path: Path, test_paths: list[Path]) -> dict[Identity, tuple[int, int]]:
    """Per rule: how many cases show it firing, and how many show it silent with data."""
    rules = [r for g in yaml.safe_load(rules_path.read_text())["groups"] for r in g["rules"]]
    records = [r for r in rules if "record" in r]
    alerts = {identity(r): leaves(r["expr"], records) for r in rules if "alert" in r}
    assert len(alerts) == len(rules) - len(records), "two alerting rules share an identity"
    assert all(alerts.values()), "an alert reads no series"
    all_checks = [c for p in test_paths for c in checks(p, rules_path)]
    return {i: (sum(fires(i, c) for c in all_checks), sum(silent_with_data(i, reads, c) for c in all_checks))
            for i, reads in alerts.items()}


def gaps(cov: dict[Identity, tuple[int, int]]) -> list[str]:
    return ([f"{show(i)}: no firing case" for i, (f, _) in cov.items() if not f]
            + [f"{show(i)}: no silent case with data" for i, (_, s) in cov.items() if not s])


def promtool_files() -> list[Path]:
    return sorted(generate.TESTS_DIR.glob("*.yaml"))


def test_every_rule_tested_firing_and_silent_with_data() -> None:
    cov = coverage(RULES_FILE, promtool_files())
    assert len(cov) == len(all_alerts())
    missing = gaps(cov)
    assert not missing, "rules without a promtool case:\n" + "\n".join(missing)


def test_an_alert_reads_the_series_behind_its_recording_rules() -> None:
    rules = [r for g in generate.groups(load()) for r in g["rules"]]
    records = [r for r in rules if "record" in r]
    burn = next(r for r in rules if r.get("alert") == "ServeErrorBudgetBurn" and r["labels"]["slo"] == "chat")
    route = ("route", "=", "/v1/chat/completions")
    assert set(leaves(burn["expr"], records)) == {
        Selector("ray_serve_num_http_requests_total", (route, ("status_code", "=~", "5.."))),
        Selector("ray_serve_num_http_requests_total", (route,))}
    restarts = next(r for r in rules if r.get("alert") == "ServeReplicaRestarts")
    assert {s.name for s in leaves(restarts["expr"], records)} == {
        "ray_serve_autoscaling_target_replicas", "ray_serve_deployment_replica_healthy"}


def test_series_notation_and_what_counts_as_data() -> None:
    series = samples("1x2 _ stale _x2 0+5x1", 60)
    assert series == ([0, 60, 120, 240, 420, 480], [1, 1, 1, None, 0, 5])
    assert [live(series, t) for t in (0, 200, 239, 250, 419, 450, 780, 781)] == [
        True, True, True, False, False, True, True, False]


def copy_tests(tmp_path: Path, edit: Callable[[dict], None]) -> tuple[Path, list[Path]]:
    """The rules and the promtool tests in tmp_path, each test file's YAML passed through edit()."""
    rules = tmp_path / RULES_FILE.name
    shutil.copy(RULES_FILE, rules)
    (tmp_path / "tests").mkdir()
    for path in promtool_files():
        doc = yaml.safe_load(path.read_text())
        edit(doc)
        (tmp_path / "tests" / path.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    return rules, sorted((tmp_path / "tests").glob("*.yaml"))


@pytest.mark.parametrize("ident", [
    ("GPUMemoryHigh", (("severity", "warning"),)),
    ("ServeLatencyBudgetBurn", (("long_window", "6h"), ("route", "/classify"), ("severity", "critical"),
                                ("short_window", "30m"), ("slo", "classify"))),
], ids=lambda i: i[0])
def test_coverage_names_a_rule_whose_firing_case_is_gone(tmp_path: Path, ident: Identity) -> None:
    def drop(doc: dict) -> None:
        for group in doc["tests"]:
            kept = [c for c in group.get("alert_rule_test", [])
                    if not fires(ident, Check(0, c["alertname"], c.get("exp_alerts") or [], []))]
            group["alert_rule_test"] = kept

    assert gaps(coverage(*copy_tests(tmp_path, drop))) == [f"{show(ident)}: no firing case"]


def test_a_silent_case_without_the_rules_data_does_not_count(tmp_path: Path) -> None:
    """Without /classify's 5xx series, its error-budget rules are silent on no data: not a test."""
    def drop(doc: dict) -> None:
        for group in doc["tests"]:
            errors = [s for s in group["input_series"] if 'route="/classify",status_code="5' in s["series"]]
            group["input_series"] = [s for s in group["input_series"] if s not in errors]

    missing = gaps(coverage(*copy_tests(tmp_path, drop)))
    assert len(missing) == 4
    assert all(m.startswith("ServeErrorBudgetBurn{") and "route=/classify" in m
               and m.endswith(": no silent case with data") for m in missing), missing


def test_latency_objectives_are_bucket_boundaries() -> None:
    ops = load()
    for slo in ops.slos:
        assert slo.latency_objective_ms in ops.latency_buckets_ms
    env = ray_head.head_env(ops, ops.profile("cpu").cluster, base={})
    served = [float(b) for b in env["RAY_SERVE_REQUEST_LATENCY_BUCKETS_MS"].split(",")]
    assert served == ops.latency_buckets_ms


def test_objective_off_the_buckets_is_rejected(tmp_path) -> None:
    raw = yaml.safe_load(OPS_PATH.read_text())
    raw["slos"][0]["latency_objective_ms"] = 4321
    path = tmp_path / "ops.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValidationError, match="not in latency_buckets_ms"):
        parse(path)


# --- The metrics-pipeline alerts ----------------------------------------------------------------------

def alert_rule(name: str) -> dict:
    return next(r for r in all_alerts() if r["alert"] == name)


def test_metric_missing_guards_every_always_exported_family_and_says_why_of_the_rest() -> None:
    ops = load()
    others = [r for g in generate.groups(ops) for r in g["rules"] if r.get("alert") != "RayMetricMissing"]
    required, excluded = required_metrics.classify(ops, others)
    used = required_metrics.used_metrics(ops, others)
    assert set(required) | set(excluded) == set(used) and not set(required) & set(excluded)
    assert all(excluded.values())
    # What the replica alerts read is guarded; what only an event, traffic or Prometheus makes is not.
    assert {"ray_serve_deployment_replica_healthy", "ray_serve_replica_processing_queries",
            "ray_serve_deployment_replica_starts_total", "ray_serve_deployment_status",
            "ray_grpc_server_req_finished_total"} <= set(required)
    assert not set(required) & (set(EVENT_ONLY_METRICS) | set(required_metrics.PROMETHEUS_SERIES))
    assert not [n for n in required if n.startswith(("ray_vllm_", "ray_serveops_", "serveops:"))]
    # Every exclusion pattern still excludes something a rule or a dashboard reads.
    dead = [p for p in required_metrics.TRAFFIC_CREATED if not any(re.fullmatch(p, n) for n in used)]
    assert dead == []
    expr = alert_rule("RayMetricMissing")["expr"]
    guarded = re.findall(rf"unless on \({BY}\) group by \({BY}\) \((\w+)\)", expr)
    assert guarded == required == required_metrics.required_metrics(ops)
    assert all(f'"metric", "{n}"' in expr for n in required)


def test_a_renamed_metric_lands_in_the_guarded_list() -> None:
    """The list is read from the expressions: a rule that moves to a new name guards the new name."""
    ops = load()
    others = [r for g in generate.groups(ops) for r in g["rules"] if r.get("alert") != "RayMetricMissing"]
    renamed = [dict(r, expr=r["expr"].replace("ray_serve_deployment_status", "ray_serve_deployment_state"))
               for r in others]
    required, _ = required_metrics.classify(ops, renamed)
    assert "ray_serve_deployment_state" in required and "ray_serve_deployment_status" not in required


def test_metric_names_reads_selectors_not_labels_functions_or_strings() -> None:
    expr = ('label_replace(absent(a_total), "metric", "b_total", "", "") and on () min(up{job="ray"}) == 1\n'
            'or sum by (le, route) (rate(c_bucket{route=~"$x"}[$__rate_interval] offset 1h)) > 0.95 * 1e9\n'
            'or serveops:slo_errors:ratio_rate1h{slo="chat"} unless ignoring (x) d')
    assert required_metrics.metric_names(expr) == {"a_total", "up", "c_bucket", "d",
                                                   "serveops:slo_errors:ratio_rate1h"}


# Break a copy of each new rule; promtool must then fail its cases in ops.test.yaml. The copy holds that
# rule alone and the cases of its alert (none of these rules reads a recording rule): fast.
REPLICA = ops_rules.REPLICA
BREAKS = [
    ("ServeReplicaStalled", "\n) > 0", "\n) > 1000"),  # completions no longer count: busy fires
    ("ServeReplicaStalled", f"and on ({REPLICA})\nmax by ({REPLICA}) (ray_serve_deployment_replica_healthy "
     "offset 120s)\n", ""),  # the young replica fires
    ("ServeReplicaStalled", f"and on ({REPLICA})\nmax by ({REPLICA}) (ray_serve_deployment_replica_healthy) "
     "== 1\n", ""),  # the dead replica fires
    ("RayStaleReplicaSeries", "unless on", "and on"),
    ("RayScrapeSlow", "> 4", "> 3.8"),
    ("RayTargetSeriesGrowth", "\nand\nscrape_samples_scraped{job=\"ray\"} offset 2h", ""),  # the young target
    ("RayTargetSeriesGrowth", "> 2 *", "> 1.5 *"),
    # pages beside a target that is down
    ("RayMetricMissing", f"\nand on ({BY})\nmin by ({BY}) (up{{job=\"ray\"}}) == 1", ""),
    ("RayMetricMissing", f'  label_replace(group by ({BY}) (up{{job="ray"}}) unless on ({BY}) '
     f'group by ({BY}) (ray_serve_deployment_replica_healthy), "metric", '
     '"ray_serve_deployment_replica_healthy", "", "")\nor\n', ""),
    # without absent()'s Component label, a GCS-less head pages twice: the per-cluster branch and absent()
    ("RayGCSUnreachable", '"Component", "gcs_server", "", ""', '"Component", "", "", ""'),
]
PIPELINE_ALERTS = sorted({b[0] for b in BREAKS})


def promtool_alone(tmp_path: Path, name: str, old: str = "", new: str = "",
                   edit: Callable[[str], str] = str) -> subprocess.CompletedProcess:
    rule = dict(alert_rule(name))
    assert old in rule["expr"], f"{name}: the break no longer applies"
    rule["expr"] = edit(rule["expr"].replace(old, new))
    (tmp_path / RULES_FILE.name).write_text(yaml.safe_dump({"groups": [{"name": "one", "rules": [rule]}]}))
    doc = yaml.safe_load((generate.TESTS_DIR / "ops.test.yaml").read_text())
    cases = []
    for group in doc["tests"]:
        checks = [c for c in group.get("alert_rule_test", []) if c["alertname"] == name]
        if checks:
            cases.append({**group, "alert_rule_test": checks})
    assert len(cases) >= 2, name
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "ops.test.yaml").write_text(yaml.safe_dump({**doc, "tests": cases}))
    return subprocess.run(["promtool", "test", "rules", "tests/ops.test.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", PIPELINE_ALERTS)
def test_the_pipeline_rules_pass_their_cases_alone(tmp_path: Path, name: str) -> None:
    out = promtool_alone(tmp_path, name)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(("name", "old", "new"), BREAKS, ids=[f"{b[0]}-{i}" for i, b in enumerate(BREAKS)])
def test_promtool_fails_a_broken_copy_of_a_rule(tmp_path: Path, name: str, old: str, new: str) -> None:
    out = promtool_alone(tmp_path, name, old, new)
    assert out.returncode != 0 and f"alertname: {name}," in out.stdout + out.stderr, out.stdout


# The goodput burn-rate rules alone, with their cases from slo_burn_rules.test.yaml: each pair's
# threshold moved past its above (x1.05) or below (x0.95) case must fail promtool.
def promtool_goodput(tmp_path: Path, long_window: str, old: str = "",
                     new: str = "") -> subprocess.CompletedProcess:
    groups = generate.groups(load())
    recording = [r for r in groups[0]["rules"] if r["record"].startswith("serveops:llm_goodput_bad:")]
    alerts = [dict(r) for r in all_alerts() if r["alert"] == "LLMGoodputBudgetBurn"]
    for rule in alerts:
        if rule["labels"]["long_window"] == long_window:
            assert old in rule["expr"], f"{long_window}: the break no longer applies"
            rule["expr"] = rule["expr"].replace(old, new)
    doc = {"groups": [{"name": "recording", "rules": recording}, {"name": "alerts", "rules": alerts}]}
    (tmp_path / RULES_FILE.name).write_text(yaml.safe_dump(doc))
    cases = yaml.safe_load((generate.TESTS_DIR / "slo_burn_rules.test.yaml").read_text())
    tests = [t for t in cases["tests"] if t["name"].startswith("goodput ")]
    assert len(tests) == 2 * 4 * len(load().llm_goodput)  # above and below, per pair and model
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "goodput.test.yaml").write_text(yaml.safe_dump(
        {**cases, "group_eval_order": ["recording", "alerts"], "tests": tests}))
    return subprocess.run(["promtool", "test", "rules", "tests/goodput.test.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def test_the_goodput_rules_pass_their_cases_alone(tmp_path: Path) -> None:
    out = promtool_goodput(tmp_path, "1h")
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(("long_window", "old", "new"), [
    ("1h", "> 0.72", "> 0.8"),  # 14.4 x 5%: the case just above no longer fires
    ("1h", "> 0.72", "> 0.6"),  # the case just below fires (both windows' thresholds move)
    ("1d", "> 0.15", "> 0.2"),
    ("3d", "> 0.05", "> 0.04"),
])
def test_promtool_fails_a_goodput_rule_with_its_threshold_moved(tmp_path: Path, long_window: str, old: str,
                                                                new: str) -> None:
    out = promtool_goodput(tmp_path, long_window, old, new)
    assert out.returncode != 0 and "alertname: LLMGoodputBudgetBurn," in out.stdout + out.stderr, out.stdout


# --- Per Ray cluster ------------------------------------------------------------------------------------
# On a Prometheus that scrapes several Ray clusters every rule keeps their labels, so one cluster's burn
# never hides in another's traffic; on the local stack the labels are empty and change nothing.

AGGREGATION = re.compile(r"\b(count_values|bottomk|topk|quantile|stddev|stdvar|group|count|sum|min|max|avg)"
                         r"\s*(?:(by|without)\s*\(([^)]*)\))?\s*\(")
MATCHING = re.compile(r"\b(on|ignoring)\s*\(([^)]*)\)")
# absent() has no labels to be per cluster: only where a Prometheus with no Ray target at all must page.
GLOBAL_ABSENT = {"RayMetricsAbsent", "RayGCSUnreachable"}


def label_list(text: str) -> set[str]:
    return {label.strip() for label in text.split(",") if label.strip()}


def cluster_problems(rule: dict) -> list[str]:
    expr = STRING.sub('""', rule["expr"])
    found = []
    for agg, modifier, labels in AGGREGATION.findall(expr):
        if modifier != "by" and not (modifier == "without" and not set(LABELS) & label_list(labels)):
            found.append(f"{agg} {modifier} ({labels}) drops the cluster labels" if modifier else
                         f"{agg}(...) without `by ({BY}, ...)`")
        elif modifier == "by" and not set(LABELS) <= label_list(labels):
            found.append(f"{agg} by ({labels}) drops the cluster labels")
    for kind, labels in MATCHING.findall(expr):
        if (kind == "on") != (set(LABELS) <= label_list(labels)) or (kind == "ignoring" and
                                                                       set(LABELS) & label_list(labels)):
            found.append(f"{kind} ({labels}) does not match per cluster")
    if "vector(" in expr:
        found.append("vector() has no labels: it matches no cluster")
    if "absent(" in expr and rule.get("alert") not in GLOBAL_ABSENT:
        found.append("absent() has no labels: it cannot be per cluster")
    return found


def test_every_rule_aggregates_and_matches_per_cluster() -> None:
    rules = [r for g in generate.groups(load()) for r in g["rules"]]
    problems = [f"{r.get('alert') or r['record']}: {p}" for r in rules for p in cluster_problems(r)]
    assert not problems, "\n".join(sorted(set(problems)))


@pytest.mark.parametrize(("expr", "says"), [
    ('sum(rate(x[5m])) or vector(0)', "sum(...) without"),
    ("max by (application) (x)", "max by (application) drops"),
    (f"count without ({CLUSTER}) (x)", "drops the cluster labels"),
    (f"x - on ({CLUSTER}) y", "does not match per cluster"),
    (f"x and ignoring ({NAMESPACE}) y", "does not match per cluster"),
    ("absent(x)", "absent() has no labels"),
])
def test_the_cluster_check_names_a_global_form(expr: str, says: str) -> None:
    assert any(says in p for p in cluster_problems({"record": "r", "expr": expr})), cluster_problems(
        {"record": "r", "expr": expr})
    ok = f"sum by ({BY}) (x) / on ({BY}) group without (le) (y) and ignoring (le) z"
    assert cluster_problems({"record": "r", "expr": ok}) == []


LABEL_LISTS = re.compile(r"\b(by|on)\s*\(([^)]*)\)")


def without_labels(expr: str, drop: tuple[str, ...]) -> str:
    """The expression with `drop` taken out of every by (...) and on (...): the rule as it was before it
    kept them (both dropped), or half-way (one)."""
    def keep(m: re.Match[str]) -> str:
        return f"{m[1]} ({', '.join(label for label in m[2].split(', ') if label not in drop)})"
    return LABEL_LISTS.sub(keep, expr)


def test_without_labels_drops_only_the_named_ones() -> None:
    expr = f"sum by ({BY}, route) (x) / on ({BY}) group by ({BY}) (y)"
    assert without_labels(expr, LABELS) == "sum by (route) (x) / on () group by () (y)"
    assert without_labels(expr, (CLUSTER,)) == (f"sum by ({NAMESPACE}, route) (x) / on ({NAMESPACE}) "
                                                 f"group by ({NAMESPACE}) (y)")


# Each per-cluster case in ops.test.yaml has its cluster and a clean one that shares one label with it:
# a copy of the rule that drops either label, or both, from its by and on lists must fail it.
DROPS = [LABELS, (CLUSTER,), (NAMESPACE,)]
PER_CLUSTER_ALERTS = ["ServeDeploymentBelowTarget", "RayGCSUnreachable", "RayMetricMissing"]


@pytest.mark.parametrize("drop", DROPS, ids=lambda d: "+".join(d))
@pytest.mark.parametrize("name", PER_CLUSTER_ALERTS)
def test_promtool_fails_a_rule_that_drops_a_cluster_label(tmp_path: Path, name: str,
                                                          drop: tuple[str, ...]) -> None:
    out = promtool_alone(tmp_path, name, edit=lambda expr: without_labels(expr, drop))
    assert out.returncode != 0 and f"alertname: {name}," in out.stdout + out.stderr, out.stdout
    assert 'ray_io_cluster="' in out.stdout + out.stderr, out.stdout  # it is the per-cluster case that fails


def test_the_deployment_rule_passes_its_cases_alone(tmp_path: Path) -> None:
    out = promtool_alone(tmp_path, "ServeDeploymentBelowTarget")  # the others are PIPELINE_ALERTS
    assert out.returncode == 0, out.stdout + out.stderr


# The burn-rate rules with their per-cluster cases from slo_burn_rules.test.yaml (slo_burn_cases.py).
BURN_ALERTS = ("ServeErrorBudgetBurn", "ServeLatencyBudgetBurn", "LLMGoodputBudgetBurn")


def promtool_per_cluster_burn(tmp_path: Path, drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    groups = generate.groups(load())
    recording = [dict(r, expr=without_labels(r["expr"], drop)) for r in groups[0]["rules"]]
    alerts = [dict(r, expr=without_labels(r["expr"], drop))
              for r in all_alerts() if r["alert"] in BURN_ALERTS]
    doc = {"groups": [{"name": "recording", "rules": recording}, {"name": "alerts", "rules": alerts}]}
    (tmp_path / RULES_FILE.name).write_text(yaml.safe_dump(doc))
    cases = yaml.safe_load((generate.TESTS_DIR / "slo_burn_rules.test.yaml").read_text())
    tests = [t for t in cases["tests"] if t["name"].startswith("per cluster:")]
    assert sorted(c["alertname"] for t in tests for c in t["alert_rule_test"]) == sorted(BURN_ALERTS * 2)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "per_cluster.test.yaml").write_text(yaml.safe_dump(
        {**cases, "group_eval_order": ["recording", "alerts"], "tests": tests}))
    return subprocess.run(["promtool", "test", "rules", "tests/per_cluster.test.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def test_the_burn_rules_pass_their_per_cluster_cases_alone(tmp_path: Path) -> None:
    out = promtool_per_cluster_burn(tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("drop", DROPS, ids=lambda d: "+".join(d))
def test_promtool_fails_burn_rules_that_drop_a_cluster_label(tmp_path: Path, drop: tuple[str, ...]) -> None:
    out = promtool_per_cluster_burn(tmp_path, drop)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and all(f"alertname: {a}," in text for a in BURN_ALERTS), text
