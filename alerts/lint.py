"""`make lint-ops`: lint the generated dashboards and rules, as Grafana's dashboard-linter and cloudflare's
pint would, with the checks that fit here. PromQL is read with PromQL's own grammar (promql-parser),
never with a regular expression.

Dashboards (dashboards/json/*.json):
- datasource: a Prometheus datasource variable, and every panel and query reads `${datasource}`;
- rate-interval: rate(), irate() and increase() over `$__rate_interval`, the one window Grafana keeps
  above the scrape interval at every zoom (a stat's increase() over a stated period is a total);
- unit, description: on every panel;
- cluster-variables: `cluster` and `namespace` variables whose All value matches a missing label;
- cluster-filter: every selector of every query and variable filters on both;
Rules (alerts/serveops.rules.yaml):
- for: every alert has a `for`; a zero one only where ZERO_FOR says why;
- cluster-aggregation: every aggregation and vector match keeps the cluster labels;
Both:
- rate-counter: rate(), irate() and increase() only over counters (and histogram or summary parts),
  by the types in the pinned metric contract (tests/data/metrics/contract.json).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser
import yaml

from stack import ROOT, cluster_labels
from stack.artifacts import DASHBOARDS_DIR, RULES_FILE

CONTRACT = ROOT / "tests" / "data" / "metrics" / "contract.json"
RATE_INTERVAL = "$__rate_interval"
# Grafana's variables are not PromQL: each range one becomes a duration no query writes, so the parser
# reads the query and the walk still knows which window was which.
_GRAFANA_RANGES = {"$__rate_interval": 7777, "$__interval": 7778, "$__range": 7779}
RATED = ("rate", "irate", "increase")
COUNTER_PARTS = ("_bucket", "_sum", "_count")
# Gauges that are counts in all but type, and why rate() is still right over them.
COUNTS_AS_GAUGES: dict[str, str] = {
    "ray_serve_controller_num_control_loops": "a running count Ray exports as a gauge: rate() reads a "
                                              "controller restart as a reset, deriv() would dip below zero",
}
# Alerts without a `for`, and why waiting would only delay the page.
ZERO_FOR: dict[str, str] = {
    "ServeDeploymentFailed": "DEPLOY_FAILED is terminal: Serve gave up on the release, it does not flap",
    "ServeAutoscalerOscillation": "counts changes over 30m: the window already holds the persistence",
    "ServeReplicaOOMKilled": "a kill is an event: the increase over its window is the persistence",
    "ServeReplicaRestarts": "a replacement is an event counted over its window",
    "ServeReplicaUnhealthy": "two failed health checks within 2m are already the persistence",
}


@dataclass(frozen=True)
class Finding:
    rule: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: [{self.rule}] {self.message}"


def parse(expr: str) -> Any:
    for var, seconds in _GRAFANA_RANGES.items():
        expr = expr.replace(f"[{var}]", f"[{seconds}s]")
    return promql_parser.parse(expr)


def _children(node: Any) -> Iterator[Any]:
    for attr in ("lhs", "rhs", "expr", "vector_selector", "param"):
        child = getattr(node, attr, None)
        if child is not None and hasattr(child, "prettify"):
            yield child
    yield from getattr(node, "args", None) or ()


def walk(node: Any) -> Iterator[Any]:
    yield node
    for child in _children(node):
        yield from walk(child)


def selectors(node: Any) -> Iterator[Any]:
    return (n for n in walk(node) if type(n).__name__ == "VectorSelector")


def metric_types(contract: Path = CONTRACT) -> dict[str, str]:
    return {name: s["type"] for name, s in json.loads(contract.read_text())["samples"].items()}


def counter_like(name: str, types: dict[str, str]) -> bool:
    """A counter, or a histogram's or summary's parts. A family not in the contract (one that exists
    only after an event) goes by the naming convention: counters end in _total."""
    kind = types.get(name)
    if name in COUNTS_AS_GAUGES:
        return True
    if kind is None:
        return name.endswith(("_total", *COUNTER_PARTS))
    return kind == "counter" or (kind in ("histogram", "summary") and name.endswith(COUNTER_PARTS))


def rate_findings(tree: Any, where: str, types: dict[str, str], *, dashboard: bool,
                  stat: bool = False) -> list[Finding]:
    """stat: the panel shows one figure, where increase() over a stated period is a total, not a rate."""
    out = []
    for call in (n for n in walk(tree) if type(n).__name__ == "Call" and n.func.name in RATED):
        arg = call.args[0]
        if type(arg).__name__ != "MatrixSelector":
            continue  # a subquery: a computed series, whose type the contract cannot tell
        name = arg.vector_selector.name
        if name and not counter_like(name, types):
            out.append(Finding("rate-counter", where, f"{call.func.name}() over {name}, a "
                               f"{types.get(name, 'non-counter')}: use deriv() or delta() on a gauge"))
        fixed = arg.range.total_seconds() != _GRAFANA_RANGES[RATE_INTERVAL]
        if dashboard and fixed and not (stat and call.func.name == "increase"):
            out.append(Finding("rate-interval", where, f"{call.func.name}({name}[...]) over a fixed window: "
                               f"use [{RATE_INTERVAL}]"))
    return out


def cluster_filter_findings(tree: Any, where: str) -> list[Finding]:
    want = {(cluster_labels.CLUSTER, "$cluster"), (cluster_labels.NAMESPACE, "$namespace")}
    out = []
    for sel in selectors(tree):
        have = {(m.name, m.value) for m in sel.matchers.matchers if str(m.op).endswith(".Re")}
        if not want <= have:
            missing = ", ".join(f'{k}=~"{v}"' for k, v in sorted(want - have))
            out.append(Finding("cluster-filter", where,
                               f"{sel.name or 'a selector'} does not filter on {missing}"))
    return out


def aggregation_findings(tree: Any, where: str) -> list[Finding]:
    keep = set(cluster_labels.LABELS)
    out = []
    for node in walk(tree):
        kind, mod = type(node).__name__, getattr(node, "modifier", None)
        if kind == "AggregateExpr":
            labels = set(mod.labels) if mod else set()
            by = mod is None or str(mod.type).endswith("By")
            if (by and not keep <= labels) or (not by and keep & labels):
                clause = f"{'by' if by else 'without'} ({', '.join(sorted(labels))})"
                out.append(Finding("cluster-aggregation", where, f"{node.op} {clause} merges clusters"))
        elif kind == "BinaryExpr" and mod is not None and mod.matching is not None:
            labels = set(mod.matching.labels)
            on = str(mod.matching.type).endswith("Include")
            if (on and not keep <= labels) or (not on and keep & labels):
                out.append(Finding("cluster-aggregation", where, f"{'on' if on else 'ignoring'} "
                                   f"({', '.join(sorted(labels))}) matches across clusters"))
    return out


def lint_dashboard(board: dict[str, Any], types: dict[str, str]) -> list[Finding]:
    uid = board.get("uid", "?")
    out = []
    variables = {v["name"]: v for v in board.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        out.append(Finding("datasource", uid, "no Prometheus datasource variable"))
    for name in cluster_labels.LABELS:
        var = variables.get("cluster" if name == cluster_labels.CLUSTER else "namespace")
        if not var or not var.get("includeAll") or var.get("allValue") != ".*":
            out.append(Finding("cluster-variables", uid, f"no {name} variable with All as .*"))
    for var in variables.values():
        if var.get("type") == "query":
            query = var.get("query")
            text = query.get("query") if isinstance(query, dict) else query
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", text or "")
            if inner and var["name"] != "cluster":  # the cluster variable lists the clusters
                expr = inner.group(1)
                if var["name"] == "namespace":
                    expr = expr.replace("}", ',namespace=~"$namespace"}', 1)  # it is the namespace
                out += cluster_filter_findings(parse(expr), f"{uid} variable {var['name']}")
    for panel in board.get("panels", []):
        where = f"{uid} / {panel.get('title', '?')}"
        if (panel.get("datasource") or {}).get("uid") != "${datasource}":
            out.append(Finding("datasource", where, "the panel does not read ${datasource}"))
        if not (panel.get("fieldConfig", {}).get("defaults", {}).get("unit")):
            out.append(Finding("unit", where, "no unit"))
        if not panel.get("description"):
            out.append(Finding("description", where, "no description"))
        for target in panel.get("targets", []):
            if (target.get("datasource") or {}).get("uid") != "${datasource}":
                out.append(Finding("datasource", where,
                                   f"query {target.get('refId')} does not read ${{datasource}}"))
            try:
                tree = parse(target["expr"])
            except ValueError as err:
                out.append(Finding("parse", where, f"query {target.get('refId')}: {err}"))
                continue
            out += rate_findings(tree, where, types, dashboard=True, stat=panel.get("type") == "stat")
            out += cluster_filter_findings(tree, where)
    return out


def lint_rules(groups: list[dict[str, Any]], types: dict[str, str]) -> list[Finding]:
    out = []
    for group in groups:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            where = f"{group['name']} / {name}"
            if "alert" in rule:
                zero = str(rule.get("for", "")) in ("", "0", "0s", "0m")
                if "for" not in rule:
                    out.append(Finding("for", where, "no `for`"))
                elif zero and rule["alert"] not in ZERO_FOR:
                    out.append(Finding("for", where, "a zero `for` that ZERO_FOR does not explain"))
            try:
                tree = parse(rule["expr"])
            except ValueError as err:
                out.append(Finding("parse", where, str(err)))
                continue
            out += rate_findings(tree, where, types, dashboard=False)
            out += aggregation_findings(tree, where)
    return out


def lint(dashboards_dir: Path = DASHBOARDS_DIR, rules_file: Path = RULES_FILE,
         contract: Path = CONTRACT) -> list[Finding]:
    types = metric_types(contract)
    out = []
    for path in sorted(dashboards_dir.glob("*.json")):
        out += lint_dashboard(json.loads(path.read_text()), types)
    out += lint_rules(yaml.safe_load(rules_file.read_text())["groups"], types)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dashboards", type=Path, default=DASHBOARDS_DIR)
    parser.add_argument("--rules", type=Path, default=RULES_FILE)
    args = parser.parse_args(argv)
    found = lint(args.dashboards, args.rules)
    for finding in found:
        print(finding)
    print(f"lint: {len(found)} finding(s)" if found else "lint: clean")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
