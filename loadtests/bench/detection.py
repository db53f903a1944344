"""Detection latency of every alert a chaos experiment expects, against the rule's own bound.

detect_s runs from the fault to the alert being active in Alertmanager. Prometheus' activeAt splits
it: condition_s, until an evaluation first saw the symptom in the metrics (a replica that Serve
must first fail three health checks on shows late), and alerting_s, the rest. The rule bounds the
rest: `for` + one scrape interval + one evaluation interval.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chaos import engine, experiment
from chaos import run as chaos_run
from stack import prom
from stack.config import BenchMode, OpsConfig


def figures(ops: OpsConfig, mode: BenchMode, out: Path) -> dict[str, Any]:
    names = experiment.in_run_order() if mode.chaos == "all" else list(mode.chaos)
    rules = prom.alerting_rules(ops)
    interval_s = ops.observability.scrape_interval_s + ops.observability.evaluation_interval_s
    alerts: dict[str, dict[str, Any]] = {}
    failed = []
    for name in names:
        result = chaos_run.one(name, short=True, reports=out)
        if not result.passed:
            failed.append(name)
        for expected in experiment.load(name).expect:
            alert = engine.describe(expected)
            detect, condition = result.detect_s.get(alert), result.condition_s.get(alert)
            for_s = prom.rule_for_s(rules, expected.alert, expected.labels)
            bound = (for_s or 0.0) + interval_s
            alerting = None if detect is None or condition is None else round(detect - condition, 1)
            alerts[alert] = {"experiment": name, "detect_s": detect, "condition_s": condition,
                             "alerting_s": alerting, "for_s": for_s, "bound_s": bound,
                             "within_bound": alerting is not None and alerting <= bound}
    return {"detection_latency_s": {
        "value": {a: v["detect_s"] for a, v in alerts.items()},
        "met": bool(alerts) and all(v["within_bound"] for v in alerts.values()),
        "goal": "alerting_s <= for + scrape interval + evaluation interval, per alert",
        "alerts": alerts,
        "inputs": {"experiments": names, "timings": "short",
                   "scrape_interval_s": ops.observability.scrape_interval_s,
                   "evaluation_interval_s": ops.observability.evaluation_interval_s,
                   "experiments_failed": failed},
    }}
