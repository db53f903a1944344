"""The metric contract (alerts/metric_contract.py): every metric and label that a rule, a dashboard panel
or a runbook query reads is in the pinned export of Ray and vLLM, checked with no stack."""

from __future__ import annotations

import dataclasses
import json

import pytest

from alerts import metric_contract
from dashboards import catalog
from dashboards.spec import PanelSpec, q
from stack.config import load


@pytest.fixture(scope="module")
def pinned() -> dict:
    return json.loads(metric_contract.FIXTURE.read_text())


def test_every_metric_and_label_we_read_is_pinned(pinned: dict) -> None:
    problems = metric_contract.check(load(), pinned)
    assert not problems, "\n".join(problems)


def test_the_contract_names_its_versions_and_sources(pinned: dict) -> None:
    assert set(pinned["versions"]) == {"ray", "vllm"} and all(pinned["versions"].values())
    assert any("/metrics" in s for s in pinned["sources"])
    families = {n.split("_")[1] for n in pinned["samples"] if n.startswith("ray_")}
    assert {"serve", "vllm", "serveops", "node"} <= families, families


def test_the_uses_cover_rules_dashboards_and_runbooks() -> None:
    kinds = {u.where.split(" ")[0] for u in metric_contract.uses(load())}
    assert kinds == {"rule", "dashboard", "runbook"}


def with_panel(monkeypatch: pytest.MonkeyPatch, expr: str) -> None:
    boards = catalog.all_dashboards(load())
    broken = dataclasses.replace(boards[0], panels=(*boards[0].panels, PanelSpec("copy", "d", "short",
                                                                                   (q(expr, "x"),))))
    monkeypatch.setattr(metric_contract, "all_dashboards", lambda ops: [broken, *boards[1:]])


@pytest.mark.parametrize(("expr", "says"), [
    ("sum(rate(ray_serve_num_http_request_total[5m]))", "ray_serve_num_http_request_total is not exported"),
    ('sum(rate(ray_serve_num_http_requests_total{rout="/embed"}[5m]))', "has no label 'rout'"),
    # vLLM's label is model_name
    ("sum by (model) (ray_vllm_num_requests_running)", "groups on 'model'"),
])
def test_a_dashboard_copy_with_a_misspelled_metric_or_label_fails(monkeypatch: pytest.MonkeyPatch,
                                                                  pinned: dict, expr: str, says: str) -> None:
    with_panel(monkeypatch, expr)
    problems = metric_contract.check(load(), pinned)
    assert any(says in p and "dashboard serveops-serve: copy" in p for p in problems), problems


def test_runbook_queries_read_as_the_shell_passes_them() -> None:
    code = ("serveops promql '1 - (sum(rate(a_bucket{le=\"2.5\"}['\"${SINCE_WINDOW:-5m}\"'])))'\n"
            "echo no\n"
            'serveops promql "max by (m) (last_over_time(b[${SINCE_WINDOW:-10m}]))"\n'
            'serveops promql "avg_over_time(c[$SINCE_WINDOW]) > 0"\n')
    assert metric_contract.runbook_queries(code) == [
        '1 - (sum(rate(a_bucket{le="2.5"}[5m])))', "max by (m) (last_over_time(b[10m]))",
        "avg_over_time(c[5m]) > 0"]


def test_references_split_selector_labels_from_grouping() -> None:
    refs, grouped = metric_contract.references(
        'sum by (route) (rate(x_total{route="/a",status_code=~"5.."}[5m])) / on (route) sum(y)')
    assert [(r.metric, set(r.labels)) for r in refs] == [("x_total", {"route", "status_code"}), ("y", set())]
    assert grouped == {"route"}


LIVE = {"versions": {"ray": "2.61.0", "vllm": "0.32.0"}, "samples": {
    "a_total": {"type": "counter", "labels": ["route"]},
    "b": {"type": "gauge", "labels": ["model_name", "engine"]}}}
PINNED = {"versions": {"ray": "2.60.0", "vllm": "0.32.0"}, "samples": {
    "a_total": {"type": "counter", "labels": ["route"]},
    "b": {"type": "gauge", "labels": ["model_name"]},
    "c_total": {"type": "counter", "labels": []}}}


def test_diff_names_what_an_upgrade_changed() -> None:
    assert metric_contract.diff(LIVE, PINNED, ["a_total"]) == []
    assert metric_contract.diff(LIVE, PINNED, ["a_total", "b", "c_total"]) == [
        "b: labels differ (gone [], new ['engine'])", "c_total: pinned, not exported live",
        "versions: pinned {'ray': '2.60.0', 'vllm': '0.32.0'}, live {'ray': '2.61.0', 'vllm': '0.32.0'}: "
        "re-pin with `make metrics-contract` once the rules, dashboards and runbooks follow"]


def test_exposition_parses_to_sample_names_types_and_labels() -> None:
    text = ("# HELP x_total Requests.\n# TYPE x_total counter\n"
            "x_total{route=\"/a\"} 1\nx_total{code=\"5\"} 2\n"
            "# HELP h Latency.\n# TYPE h histogram\nh_bucket{le=\"1.0\"} 1\nh_bucket{le=\"+Inf\"} 1\n"
            "h_count 1\nh_sum 0.5\n")
    assert metric_contract.parse_exposition(text) == {
        "h_bucket": {"type": "histogram", "labels": ["le"]}, "h_count": {"type": "histogram", "labels": []},
        "h_sum": {"type": "histogram", "labels": []},
        "x_total": {"type": "counter", "labels": ["code", "route"]}}
