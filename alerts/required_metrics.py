"""The metric families RayMetricMissing guards: every one a rule or a dashboard reads that a live stack
always exports, computed from the rule expressions and the dashboard queries.

So a metric renamed upstream (ray-project/ray#59071) pages instead of leaving a dashboard empty and
its alerts silent. A family that is not always there is left out here, each with its reason: one
that only an event creates (a failed health check, a memory kill, a GPU), one that only traffic
creates (Ray exports a counter or histogram from its first observation), and the series Prometheus
writes itself. The live lane checks the list against what the Ray targets export.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from dashboards.catalog import all_dashboards
from dashboards.spec import EVENT_ONLY_METRICS
from stack.cluster_labels import BY
from stack.config import OpsConfig

# Written by Prometheus for each scrape, not exported by a target; RayMetricsAbsent and
# RayMetricsTargetDown cover a Ray target that is gone.
PROMETHEUS_MADE = "written by Prometheus for each scrape, not exported by a target"
PROMETHEUS_SERIES = ("up", "scrape_duration_seconds", "scrape_samples_scraped")

# Families the first request of a kind creates (full-name patterns). Seen on Ray 2.60: absent from a
# fresh session until that request, then kept for the session.
TRAFFIC_CREATED: dict[str, str] = {
    r"ray_serve_(num_http_requests|http_request_latency_ms)_\w+":
        "created by the first HTTP request Serve's proxy answers",
    r"ray_serve_deployment_(request_counter_total|processing_latency_ms_\w+)":
        "created by the first request a replica completes",
    r"ray_serve_(actual_batch_size|batch)_\w+": "created by the first @serve.batch batch (/embed)",
    r"ray_serve_multiplexed_models_unload_counter_total":
        "created by the first LRU eviction of a tenant model",
    r"ray_serve_(num_multiplexed_models|multiplexed_\w+)":
        "created by the first tenant model load (/predict); gone while TenantModels is scaled to zero",
    r"ray_serve_num_scheduling_tasks\w*":
        "created by the first request through a DeploymentHandle (Ray builds the router lazily)",
    r"ray_serveops_\w+": "serveops' own request metrics, created by the first request of their route",
    r"serveops_request_latency_ms_\w+":
        "serveops' latency histogram with exemplars: its exporter has a series from a route's first request",
    r"ray_vllm_\w+": "created by the LLM engine's first request (absent from a fresh session until then)",
}

# A metric name in PromQL: not a function (followed by "("), a keyword, a label name or a string.
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"' + r"|'(?:[^'\\]|\\.)*'")
_NOT_NAMES = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
                        r"|\{[^}]*\}|\[[^\]]*\]|\boffset\s+\w+")
_NAME = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "bool", "inf", "nan", "offset", "by", "without", "on", "ignoring",
             "group_left", "group_right"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (a recorded name counts as a name)."""
    text = _NOT_NAMES.sub(" ", _STRINGS.sub('""', expr))
    return {n for n in _NAME.findall(text) if n not in _KEYWORDS}


def used_metrics(ops: OpsConfig, rules: Iterable[dict]) -> dict[str, str]:
    """Every metric name the given rules and the dashboards read -> one place that reads it."""
    used: dict[str, str] = {}
    for rule in rules:
        for name in sorted(metric_names(rule["expr"])):
            used.setdefault(name, rule.get("alert") or rule.get("record") or "?")
    for board in all_dashboards(ops):
        for panel in board.panels:
            for query in panel.queries:
                for name in sorted(metric_names(query.expr)):
                    used.setdefault(name, f"{board.uid}: {panel.title}")
    return used


def not_always_exported(name: str, recorded: set[str]) -> str | None:
    """Why a live stack may lack this family, or None: it must always be there."""
    if name in recorded:
        return "a recording rule of ours; its sources are checked instead"
    if name in PROMETHEUS_SERIES:
        return PROMETHEUS_MADE
    if name in EVENT_ONLY_METRICS:
        return EVENT_ONLY_METRICS[name]
    return next((why for pattern, why in TRAFFIC_CREATED.items() if re.fullmatch(pattern, name)), None)


def classify(ops: OpsConfig, rules: list[dict]) -> tuple[list[str], dict[str, str]]:
    """(required, excluded): the families RayMetricMissing guards, and every other one used with why."""
    recorded = {r["record"] for r in rules if "record" in r}
    required, excluded = [], {}
    for name in sorted(used_metrics(ops, rules)):
        why = not_always_exported(name, recorded)
        if why is None:
            required.append(name)
        else:
            excluded[name] = why
    return required, excluded


def required_metrics(ops: OpsConfig) -> list[str]:
    """The families RayMetricMissing guards, as the generated rule file holds them."""
    from alerts import generate  # the rules, built from the same ops config

    rules = [r for g in generate.groups(ops) for r in g["rules"] if r.get("alert") != "RayMetricMissing"]
    return classify(ops, rules)[0]


def absent_expr(names: Iterable[str], up: str, guard: str) -> str:
    """One series {<cluster labels>, metric=<name>} per cluster that has targets (`up`) but not the
    family, while guard holds for that cluster. Not absent(): a family one cluster exports would hide
    that another lost it."""
    targets = f"group by ({BY}) ({up})"
    parts = [f'label_replace({targets} unless on ({BY}) group by ({BY}) ({n}), "metric", "{n}", "", "")'
             for n in names]
    return "(\n  " + "\nor\n  ".join(parts) + f"\n)\nand on ({BY})\n" + guard
