"""SLOs as code others read (alerts/slo_export.py): the committed OpenSLO and Sloth files, parsed back,
hold exactly the SLOs of stack/ops.yaml (same objectives, routes, models and latency bounds) in the
shape each spec requires; and the same checks fail on a copy with a target changed or an SLO dropped.

Drift of the files from their generator: tests/test_generate.py (`make check` runs every GENERATOR).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import pytest
import yaml

from alerts import generate, metric_contract, slo_export, slo_rules
from stack import ROOT, artifacts
from stack.config import OpsConfig
from stack.serving.settings import Goodput

# One SLO as the checks compare it: (kind, route or model, objective as a share, le of the latency bucket).
Key = tuple[str, str, float, str]

# Required fields, as dotted paths: OpenSLO v1 per kind (for the ratio metrics we write; `raw` would
# replace `total`), and Sloth prometheus/v1 for the spec and for each SLO with an events SLI.
OPENSLO_REQUIRED: dict[str, tuple[str, ...]] = {
    "Service": ("apiVersion", "kind", "metadata.name", "spec"),
    "SLO": ("apiVersion", "kind", "metadata.name", "spec.service", "spec.indicator.metadata.name",
            "spec.indicator.spec.ratioMetric.counter", "spec.indicator.spec.ratioMetric.total",
            "spec.timeWindow", "spec.budgetingMethod", "spec.objectives"),
}
OPENSLO_METRIC_SOURCE = ("metricSource.type", "metricSource.spec.query")
SLOTH_REQUIRED = ("version", "service", "labels", "slos")
SLOTH_SLO_REQUIRED = ("name", "objective", "sli.events.error_query", "sli.events.total_query",
                      "alerting.name", "alerting.page_alert.labels.severity",
                      "alerting.ticket_alert.labels.severity")
RFC1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # OpenSLO's metadata.name
SLOTH_NAME = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_.]*[A-Za-z0-9]$")  # Sloth's service and SLO names
SLOTH_WINDOW = re.compile(r"\{\{ *\.window *\}\}")  # Sloth refuses an events query without it
PROM_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

# Per kind of SLO: the part of the ratio that counts its numerator, and the matcher that makes it so
# (absent from the total). Sloth's error query holds it too (the latency one as count - bucket).
NUMERATOR = {"availability": ("bad", 'status_code=~"5.."'), "latency": ("good", "_bucket{"),
             "goodput": ("bad", 'verdict="bad"')}
# Our alert per kind, which Sloth's alerts reuse.
OUR_ALERTS = {"availability": "ServeErrorBudgetBurn", "latency": "ServeLatencyBudgetBurn",
              "goodput": "LLMGoodputBudgetBurn"}
# Sloth's default 30-day windows (its google-30d plan): share of the budget burnt, long and short window.
SLOTH_DEFAULTS = {"page": [(0.02, "1h", "5m"), (0.05, "6h", "30m")],
                  "ticket": [(0.10, "1d", "2h"), (0.10, "3d", "6h")]}
HOURS = {"1h": 1, "6h": 6, "1d": 24, "3d": 72}


# --- reading the files back --------------------------------------------------------------------------

def dig(doc: Any, path: str) -> Any:
    for key in path.split("."):
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def missing(doc: Any, paths: Iterable[str]) -> list[str]:
    return [p for p in paths if dig(doc, p) is None or dig(doc, p) == ""]


def label_values(text: str, label: str) -> str:
    """Every value the queries give `label`, sorted and joined: the one value where they agree."""
    return ",".join(sorted(set(re.findall(rf'\b{label}="([^"]*)"', text))))


def kind_of(queries: Iterable[str]) -> str:
    text = " ".join(queries)
    if slo_rules.GOODPUT in text:
        return "goodput"
    return "latency" if f"{slo_rules.LATENCY}_bucket" in text else "availability"


def key(queries: list[str], objective: float) -> Key:
    kind, text = kind_of(queries), " ".join(queries)
    subject = label_values(text, "model" if kind == "goodput" else "route")
    return kind, subject, round(objective, 9), label_values(text, "le")


def numerator_problems(kind: str, numerator: str, total: str) -> list[str]:
    marker = NUMERATOR[kind][1]
    if marker in numerator and marker not in total:
        return []
    return [f"{kind}: the numerator must select {marker} and the total must not ({numerator} / {total})"]


def expected(ops: OpsConfig) -> list[Key]:
    keys: list[Key] = []
    for slo in ops.slos:
        keys.append(("availability", slo.route, round(slo.availability, 9), ""))
        # Ray writes bucket bounds as Python floats: a 1000 ms objective is le="1000.0".
        le = str(float(slo.latency_objective_ms))
        keys.append(("latency", slo.route, round(slo.latency_target, 9), le))
    keys += [("goodput", model, round(g.target, 9), "") for model, g in ops.llm_goodput.items()]
    return sorted(keys)


def compare(found: list[Key], names: list[str], ops: OpsConfig) -> list[str]:
    want, got = Counter(expected(ops)), Counter(found)
    repeated = sorted(n for n, count in Counter(names).items() if count > 1)
    return ([f"missing from the export: {k}" for k in sorted(want - got)]
            + [f"not in the ops config: {k}" for k in sorted(got - want)]
            + [f"name {n} repeats" for n in repeated])


def openslo_problems(text: str, ops: OpsConfig) -> list[str]:
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    services = {dig(d, "metadata.name") for d in docs if dig(d, "kind") == "Service"}
    problems: list[str] = []
    found: list[Key] = []
    names: list[str] = []
    for doc in docs:
        kind, name = dig(doc, "kind"), dig(doc, "metadata.name")
        where = f"{kind} {name}"
        if kind not in OPENSLO_REQUIRED:
            problems.append(f"{where}: kind is not one of {sorted(OPENSLO_REQUIRED)}")
            continue
        gaps = missing(doc, OPENSLO_REQUIRED[kind])
        problems += [f"{where}: no {path}" for path in gaps]
        if doc.get("apiVersion") != "openslo/v1":
            problems.append(f"{where}: apiVersion {doc.get('apiVersion')!r}, not openslo/v1")
        if not RFC1123_LABEL.match(str(name)):
            problems.append(f"{where}: metadata.name is not an RFC 1123 label")
        if gaps or kind != "SLO":
            continue
        names.append(name)
        spec = doc["spec"]
        if spec["service"] not in services:
            problems.append(f"{where}: service {spec['service']!r} is no Service of the file")
        if spec["timeWindow"] != [{"duration": "30d", "isRolling": True}]:
            problems.append(f"{where}: timeWindow {spec['timeWindow']}, not one 30d rolling window")
        if spec["budgetingMethod"] != "Occurrences":
            problems.append(f"{where}: budgetingMethod {spec['budgetingMethod']!r}, not Occurrences")
        objectives = spec["objectives"]
        target = objectives[0].get("target") if isinstance(objectives, list) and objectives else None
        if len(objectives) != 1 or not isinstance(target, float) or not 0 <= target < 1:
            problems.append(f"{where}: objectives {objectives}: one target in [0, 1)")
            continue
        ratio = spec["indicator"]["spec"]["ratioMetric"]
        if ratio["counter"] is not True:
            problems.append(f"{where}: ratioMetric.counter must be true (raw counters)")
        numerators = [part for part in ("good", "bad") if part in ratio]
        if len(numerators) != 1:
            problems.append(f"{where}: ratioMetric needs good or bad beside total, has {numerators}")
            continue
        queries: dict[str, str] = {}
        for part in (*numerators, "total"):
            problems += [f"{where}: {part} has no {p}" for p in missing(ratio[part], OPENSLO_METRIC_SOURCE)]
            if dig(ratio[part], "metricSource.type") != "Prometheus":
                problems.append(f"{where}: {part} is not a Prometheus metricSource")
            queries[part] = str(dig(ratio[part], "metricSource.spec.query"))
            if "rate(" in queries[part] or "{{" in queries[part] or "[" in queries[part]:
                problems.append(f"{where}: {part} query {queries[part]} is not a raw counter")
        sli = kind_of(queries.values())
        if numerators[0] != NUMERATOR[sli][0]:
            problems.append(f"{where}: a {sli} SLO counts {NUMERATOR[sli][0]} events, not {numerators[0]}")
        numerator, total = queries[numerators[0]], queries["total"]
        problems += [f"{where}: {p}" for p in numerator_problems(sli, numerator, total)]
        found.append(key(list(queries.values()), target))
    return problems + compare(found, names, ops)


def label_problems(where: str, labels: Any) -> list[str]:
    if not isinstance(labels, Mapping):
        return [f"{where}: labels must be a mapping"]
    return [f"{where}: {k!r}: {v!r} is no Prometheus label name with a non-empty string value"
            for k, v in labels.items()
            if not PROM_LABEL.match(str(k)) or k == "__name__" or not isinstance(v, str) or not v]


def sloth_problems(text: str, ops: OpsConfig) -> list[str]:
    spec = yaml.safe_load(text)
    problems = [f"no {path}" for path in missing(spec, SLOTH_REQUIRED)]
    if problems:
        return problems
    if spec["version"] != "prometheus/v1":
        problems.append(f"version {spec['version']!r}, not prometheus/v1")
    if not SLOTH_NAME.match(spec["service"]):
        problems.append(f"service {spec['service']!r} is no Sloth name")
    problems += label_problems("labels", spec["labels"])
    # Page and ticket alerts at our table's severities for the same windows.
    severities = {b.long: b.severity for b in slo_rules.BURN_RATES}
    page, ticket = severities["1h"], severities["3d"]
    found: list[Key] = []
    names: list[str] = []
    for slo in spec["slos"]:
        where = f"SLO {slo.get('name')}"
        gaps = missing(slo, SLOTH_SLO_REQUIRED)
        problems += [f"{where}: no {path}" for path in gaps]
        if gaps:
            continue
        names.append(slo["name"])
        if not SLOTH_NAME.match(slo["name"]):
            problems.append(f"{where}: name is no Sloth name")
        if not 0 < slo["objective"] <= 100:
            problems.append(f"{where}: objective {slo['objective']} is not a percent in (0, 100]")
        if set(slo["sli"]) != {"events"}:
            problems.append(f"{where}: sli must be one type, events; has {sorted(slo['sli'])}")
        events = slo["sli"]["events"]
        for query in ("error_query", "total_query"):
            if not SLOTH_WINDOW.search(events[query]):
                problems.append(f"{where}: {query} has no {{{{.window}}}}")
        if events["error_query"] == events["total_query"]:
            problems.append(f"{where}: error_query and total_query are the same")
        alerting = slo["alerting"]
        if alerting["page_alert"]["labels"]["severity"] != page:
            problems.append(f"{where}: page alert severity is not {page}")
        if alerting["ticket_alert"]["labels"]["severity"] != ticket:
            problems.append(f"{where}: ticket alert severity is not {ticket}")
        for path in ("labels", "alerting.labels", "alerting.page_alert.labels",
                     "alerting.ticket_alert.labels"):
            if dig(slo, path) is not None:
                problems += label_problems(f"{where}: {path}", dig(slo, path))
        annotations = alerting.get("annotations") or {}
        problems += [f"{where}: annotation {k} is empty" for k, v in annotations.items() if not v]
        queries = [events["error_query"], events["total_query"]]
        sli = kind_of(queries)
        problems += [f"{where}: {p}" for p in numerator_problems(sli, *queries)]
        found.append(key(queries, slo["objective"] / 100))
    return problems + compare(found, names, ops)


def selectors(expr: str) -> set[tuple[str, frozenset[str]]]:
    """(metric, its label matchers) of each range selector in a PromQL expression."""
    return {(name, frozenset(re.findall(r'\w+(?:=~|!~|!=|=)"[^"]*"', body)))
            for name, body in re.findall(r"([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})?\[", expr)}


@pytest.fixture(scope="module")
def openslo_text() -> str:
    return slo_export.OPENSLO_FILE.read_text()


@pytest.fixture(scope="module")
def sloth_text() -> str:
    return slo_export.SLOTH_FILE.read_text()


# --- the committed files -----------------------------------------------------------------------------

def test_every_file_carries_the_one_header() -> None:
    files = sorted(slo_export.OUT_DIR.glob("*.yaml"))
    assert files == sorted([slo_export.OPENSLO_FILE, slo_export.SLOTH_FILE])
    for path in files:
        first = path.read_text().splitlines()[0]
        assert first == artifacts.header("alerts/slo_export.py").rstrip("\n")


def test_openslo_holds_the_ops_slos(openslo_text: str, ops: OpsConfig) -> None:
    assert openslo_problems(openslo_text, ops) == []
    kinds = Counter(d["kind"] for d in yaml.safe_load_all(openslo_text))
    assert kinds == {"Service": 1, "SLO": 2 * len(ops.slos) + len(ops.llm_goodput)}


def test_sloth_holds_the_ops_slos(sloth_text: str, ops: OpsConfig) -> None:
    assert sloth_problems(sloth_text, ops) == []
    assert len(yaml.safe_load(sloth_text)["slos"]) == 2 * len(ops.slos) + len(ops.llm_goodput)


def test_both_name_the_same_slos(openslo_text: str, sloth_text: str) -> None:
    opens = [d["metadata"]["name"] for d in yaml.safe_load_all(openslo_text) if d["kind"] == "SLO"]
    assert opens == [s["name"] for s in yaml.safe_load(sloth_text)["slos"]]


# --- the checks can fail -----------------------------------------------------------------------------

def halve_first(text: str, field: str) -> str:
    halve = lambda m: f"{field}: {float(m.group(1)) / 2}"  # noqa: E731
    changed, n = re.subn(rf"\b{field}: ([0-9.]+)", halve, text, count=1)
    assert n == 1 and changed != text
    return changed


def test_a_changed_target_is_caught(openslo_text: str, sloth_text: str, ops: OpsConfig) -> None:
    for problems in (openslo_problems(halve_first(openslo_text, "target"), ops),
                     sloth_problems(halve_first(sloth_text, "objective"), ops)):
        assert any(p.startswith("missing from the export") for p in problems), problems
        assert any(p.startswith("not in the ops config") for p in problems), problems


def test_a_dropped_slo_is_caught(openslo_text: str, sloth_text: str, ops: OpsConfig) -> None:
    opens = "\n---\n".join(openslo_text.split("\n---\n")[:-1]) + "\n"
    assert len(list(yaml.safe_load_all(opens))) == len(list(yaml.safe_load_all(openslo_text))) - 1
    sloth = sloth_text.rsplit("\n- name: ", 1)[0] + "\n"
    assert len(yaml.safe_load(sloth)["slos"]) == len(yaml.safe_load(sloth_text)["slos"]) - 1
    for problems in (openslo_problems(opens, ops), sloth_problems(sloth, ops)):
        assert len(problems) == 1 and problems[0].startswith("missing from the export"), problems


def test_a_missing_required_field_is_caught(openslo_text: str, sloth_text: str, ops: OpsConfig) -> None:
    opens = openslo_text.replace("  budgetingMethod: Occurrences\n", "", 1)
    assert opens != openslo_text
    assert any(p.endswith("no spec.budgetingMethod") for p in openslo_problems(opens, ops))
    sloth, n = re.subn(r"\n    name: \w+\n", "\n", sloth_text, count=1)  # the first SLO's alerting.name
    assert n == 1
    assert any(p.endswith("no alerting.name") for p in sloth_problems(sloth, ops))


def test_the_checks_follow_the_ops_config(ops: OpsConfig) -> None:
    """Rendered from another config, the files pass against that config and fail against ours."""
    tighter = ops.slos[-1].model_copy(update={"latency_objective_ms": 250.0})
    other = ops.model_copy(update={
        "slos": [*ops.slos[1:-1], tighter],
        "llm_goodput": {**ops.llm_goodput,
                        "org/Other-Model.v2": Goodput(ttft_ms=1000, tpot_ms=50, target=0.9)},
    })
    texts = slo_export.outputs(other)
    opens, sloth = texts[slo_export.OPENSLO_FILE], texts[slo_export.SLOTH_FILE]
    assert f'route="{tighter.route}",le="250.0"' in opens and f'route="{tighter.route}",le="250.0"' in sloth
    assert 'model="org/Other-Model.v2"' in opens and "name: org-other-model-v2-goodput" in sloth
    assert openslo_problems(opens, other) == [] and sloth_problems(sloth, other) == []
    assert openslo_problems(opens, ops) != [] and sloth_problems(sloth, ops) != []


# --- one source of truth -----------------------------------------------------------------------------

def test_queries_select_what_our_rules_select(ops: OpsConfig, sloth_text: str, openslo_text: str) -> None:
    """Every selector of the exports is one of alerts/slo_rules.py's for that route, or its per-model
    goodput selector with the model matched; the OpenSLO queries are Sloth's, unrated."""
    rules = {s.name: selectors(slo_rules.error_ratio(s, "5m") + slo_rules.slow_ratio(s, "5m"))
             for s in ops.slos}
    goodput = selectors(slo_rules.bad_goodput_ratio("5m"))
    for slo in yaml.safe_load(sloth_text)["slos"]:
        found = selectors(slo["sli"]["events"]["error_query"] + slo["sli"]["events"]["total_query"])
        assert found, slo["name"]
        if "model" in slo["labels"]:
            model = f'model="{slo["labels"]["model"]}"'
            for name, matchers in found:
                assert model in matchers and (name, matchers - {model}) in goodput, slo["name"]
        else:
            assert found <= rules[slo["labels"]["slo"]], slo["name"]
    sloth_sels = {sel for s in yaml.safe_load(sloth_text)["slos"] for sel in
                  selectors(s["sli"]["events"]["error_query"] + s["sli"]["events"]["total_query"])}
    open_queries = [q for d in yaml.safe_load_all(openslo_text) if d["kind"] == "SLO"
                    for q in (dig(d, f"spec.indicator.spec.ratioMetric.{p}.metricSource.spec.query")
                              for p in ("good", "bad", "total")) if q]
    assert {sel for q in open_queries for sel in selectors(q.replace("})", "}[5m])"))} == sloth_sels


def test_exported_queries_read_pinned_metrics_and_labels(sloth_text: str, openslo_text: str) -> None:
    pinned = json.loads(metric_contract.FIXTURE.read_text())["samples"]
    queries = [q for s in yaml.safe_load(sloth_text)["slos"] for q in s["sli"]["events"].values()]
    queries += [q for d in yaml.safe_load_all(openslo_text) if d["kind"] == "SLO"
                for q in (dig(d, f"spec.indicator.spec.ratioMetric.{p}.metricSource.spec.query")
                          for p in ("good", "bad", "total")) if q]
    for query in queries:
        refs, _ = metric_contract.references(SLOTH_WINDOW.sub("5m", query))
        assert refs, query
        for ref in refs:
            assert ref.metric in pinned, f"{query}: {ref.metric} is not exported"
            assert ref.labels <= set(pinned[ref.metric]["labels"]), f"{query}: {ref.metric} lacks a label"


def test_sloth_default_windows_are_our_burn_rate_table() -> None:
    """Sloth's default windows equal Google's, which our table copies: the Sloth spec alerts as we do."""
    assert len(slo_rules.BURN_RATES) == sum(len(pairs) for pairs in SLOTH_DEFAULTS.values())
    for alert, pairs in SLOTH_DEFAULTS.items():
        for share, long, short in pairs:
            burn = next(b for b in slo_rules.BURN_RATES if (b.long, b.short) == (long, short))
            assert burn.factor == pytest.approx(share * 30 * 24 / HOURS[long])
            assert burn.severity == {"page": "critical", "ticket": "warning"}[alert]
    for alert, windows in (("page", slo_export.SLOTH_PAGE), ("ticket", slo_export.SLOTH_TICKET)):
        assert [(lng, sh) for lng, sh, _ in windows] == [(lng, sh) for _, lng, sh in SLOTH_DEFAULTS[alert]]


def test_a_table_off_googles_windows_stops_the_export(monkeypatch: pytest.MonkeyPatch,
                                                      ops: OpsConfig) -> None:
    first, *rest = slo_rules.BURN_RATES
    moved = type(first)(first.severity, first.long, first.short, 10, first.for_)
    monkeypatch.setattr(slo_export, "BURN_RATES", (moved, *rest))
    with pytest.raises(ValueError, match="Sloth's default windows"):
        slo_export.sloth(ops)


def test_sloth_alerts_are_ours_with_their_runbooks(sloth_text: str, ops: OpsConfig) -> None:
    ours = set(generate.alert_names(ops))
    for slo in yaml.safe_load(sloth_text)["slos"]:
        queries = slo["sli"]["events"].values()
        name = slo["alerting"]["name"]
        assert name == OUR_ALERTS[kind_of(queries)] and name in ours, slo["name"]
        assert slo["alerting"]["annotations"]["runbook_url"].endswith(f"/{name}.md")
        assert (ROOT / "runbooks" / f"{name}.md").exists()


def test_names_are_dns_labels_and_never_repeat(ops: OpsConfig) -> None:
    assert slo_export.dns_name("meta-llama/Llama-3.1-8B", "goodput") == "meta-llama-llama-3-1-8b-goodput"
    long = slo_export.dns_name("m" * 62 + "/x", "goodput")
    assert len(long) <= 63 and RFC1123_LABEL.match(long)
    twice = ops.model_copy(update={"slos": [*ops.slos, ops.slos[0]]})
    with pytest.raises(ValueError, match="repeat"):
        slo_export.slis(twice)
