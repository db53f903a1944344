"""The dashboard and rule lint (alerts/lint.py): the generated files are clean, and every check fails on a
copy broken the way it guards against."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from alerts import lint
from stack.artifacts import DASHBOARDS_DIR, RULES_FILE

TYPES = lint.metric_types()
BOARD = json.loads((DASHBOARDS_DIR / "serveops-serve.json").read_text())
GROUPS = yaml.safe_load(RULES_FILE.read_text())["groups"]


def test_the_generated_dashboards_and_rules_are_clean() -> None:
    assert [str(f) for f in lint.lint()] == []


def _panel(board: dict[str, Any], title: str) -> dict[str, Any]:
    return next(p for p in board["panels"] if p["title"] == title)


def _var(board: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in board["templating"]["list"] if v["name"] == name)


def _expr(board: dict[str, Any], title: str, edit: Callable[[str], str]) -> None:
    target = _panel(board, title)["targets"][0]
    target["expr"] = edit(target["expr"])


RPS = "Requests per second by route"
Break = Callable[[dict[str, Any]], None]


def _drop_var(name: str) -> Break:
    return lambda b: b["templating"]["list"].remove(_var(b, name))


def _in_query(old: str, new: str) -> Break:
    return lambda b: _expr(b, RPS, lambda e: e.replace(old, new))


def _panel_datasource(b: dict[str, Any]) -> None:
    _panel(b, RPS)["datasource"].update(uid="prom-1")


def _query_datasource(b: dict[str, Any]) -> None:
    _panel(b, RPS)["targets"][0]["datasource"].update(uid="prom-1")


def _unfiltered_variable(b: dict[str, Any]) -> None:
    _var(b, "application").update(query="label_values(ray_serve_deployment_replica_healthy, application)")


BROKEN_BOARDS: dict[str, tuple[str, Break]] = {
    "no datasource variable": ("datasource", _drop_var("datasource")),
    "a panel on a fixed datasource": ("datasource", _panel_datasource),
    "a query on a fixed datasource": ("datasource", _query_datasource),
    "a rate over a fixed window": ("rate-interval", _in_query("$__rate_interval", "5m")),
    "a panel without a unit": ("unit", lambda b: _panel(b, RPS)["fieldConfig"]["defaults"].pop("unit")),
    "a panel without a description": ("description", lambda b: _panel(b, RPS).update(description="")),
    "no cluster variable": ("cluster-variables", _drop_var("cluster")),
    "a namespace variable whose All drops series": ("cluster-variables",
                                                    lambda b: _var(b, "namespace").update(allValue="")),
    "a query without the cluster filter": ("cluster-filter", _in_query('ray_io_cluster=~"$cluster",', "")),
    "a variable without the cluster filter": ("cluster-filter", _unfiltered_variable),
    "a rate over a gauge": ("rate-counter", _in_query("ray_serve_num_http_requests_total",
                                                      "ray_serve_deployment_queued_queries")),
}


@pytest.mark.parametrize("case", sorted(BROKEN_BOARDS))
def test_a_broken_dashboard_fails_its_check(case: str) -> None:
    rule, breaks = BROKEN_BOARDS[case]
    board = copy.deepcopy(BOARD)
    breaks(board)
    assert rule in {f.rule for f in lint.lint_dashboard(board, TYPES)}
    assert not lint.lint_dashboard(BOARD, TYPES)


def _rule(groups: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(r for g in groups for r in g["rules"] if r.get("alert") == name or r.get("record") == name)


C = "ray_io_cluster, namespace"
QUEUE = "ServeRequestQueueBuildup"
BELOW = "ServeDeploymentBelowTarget"
BROKEN_RULES: dict[str, tuple[str, str, dict[str, Any]]] = {  # case -> (check, alert, what it becomes)
    "a zero for nobody explained": ("for", BELOW, {"for": "0m"}),
    "a sum over every cluster": ("cluster-aggregation", QUEUE, {
        "expr": "sum(ray_serve_deployment_queued_queries) > 1"}),
    "a match across clusters": ("cluster-aggregation", QUEUE, {
        "expr": f"sum by ({C}) (ray_serve_deployment_queued_queries) > on () "
                f"max by ({C}) (ray_serve_deployment_replica_healthy)"}),
    "a without that drops the cluster": ("cluster-aggregation", QUEUE, {
        "expr": "sum without (ray_io_cluster) (ray_serve_deployment_queued_queries) > 1"}),
    "a rate over a gauge": ("rate-counter", QUEUE, {
        "expr": f"sum by ({C}) (rate(ray_serve_deployment_queued_queries[5m])) > 1"}),
}


@pytest.mark.parametrize("case", sorted(BROKEN_RULES))
def test_a_broken_rule_fails_its_check(case: str) -> None:
    check, alert, becomes = BROKEN_RULES[case]
    groups = copy.deepcopy(GROUPS)
    _rule(groups, alert).update(becomes)
    assert check in {f.rule for f in lint.lint_rules(groups, TYPES)}


def test_an_alert_without_a_for_fails_its_check() -> None:
    groups = copy.deepcopy(GROUPS)
    _rule(groups, BELOW).pop("for")
    assert "for" in {f.rule for f in lint.lint_rules(groups, TYPES)}


def test_counters_histogram_parts_and_event_counters_may_be_rated() -> None:
    assert lint.counter_like("ray_serve_num_http_requests_total", TYPES)
    assert lint.counter_like("ray_serve_http_request_latency_ms_bucket", TYPES)
    assert lint.counter_like("ray_serve_health_check_failures_total", TYPES)  # not in the contract: by name
    assert not lint.counter_like("ray_serve_deployment_replica_healthy", TYPES)
    assert not lint.counter_like("serveops_gpu_power_watts", TYPES)


def test_grafana_ranges_parse_and_are_told_apart() -> None:
    tree = lint.parse('sum(rate(x_total{a=~"$cluster"}[$__rate_interval])) + sum(rate(y_total[5m]))')
    found = lint.rate_findings(tree, "here", {}, dashboard=True)
    assert [f.rule for f in found] == ["rate-interval"] and "y_total" in found[0].message
