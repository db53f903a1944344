"""After a short, clean, mixed load: every metric the dashboards and rules use exists in Prometheus,
every panel shows data (or is event-only, with its reason), and no alert fires.

conftest.py runs this module first, before any test injects a fault.
"""

from __future__ import annotations

import re
import threading
import time

import httpx
import pytest
import yaml

from alerts import generate as alert_rules
from alerts.required_metrics import metric_names
from dashboards.catalog import all_dashboards
from dashboards.spec import EVENT_ONLY_METRICS
from stack.config import OpsConfig, load
from stack.prom import api as prom

pytestmark = pytest.mark.live
LOAD_S = 40
METRIC = re.compile(r"\b((?:ray_|serveops_|serveops:)[a-zA-Z0-9_:]+|up)\b")
VARIABLES = {"$cluster": ".*", "$namespace": ".*", "$application": ".*", "$deployment": ".*", "$model": ".*",
             "$__rate_interval": "1m"}


def mixed_load(base: str, model: str, stop: threading.Event) -> tuple[list[int], list[threading.Thread]]:
    """Two clients cycling through every route until stopped."""
    statuses: list[int] = []
    requests = [
        ("/embed", {"text": "clean load"}, {}),
        ("/embed", {"text": ["one text", "and another, longer text"]}, {}),
        ("/classify", {"text": "A calm and healthy service."}, {}),
        # Four tenants for a cache of three: LRU evictions are part of a normal day.
        *(("/predict", {"features": [0.1] * 8}, {"serve_multiplexed_model_id": t})
          for t in ("acme", "globex", "initech", "umbrella")),
        ("/v1/completions", {"model": model, "prompt": "hello", "max_tokens": 8}, {}),
        ("/v1/chat/completions", {"model": model, "stream": True, "max_tokens": 8,
                                  "messages": [{"role": "user", "content": "hi"}]}, {}),
    ]

    def client() -> None:
        with httpx.Client(base_url=base, timeout=60) as c:
            while not stop.is_set():
                for path, body, headers in requests:
                    statuses.append(c.post(path, json=body, headers=headers).status_code)

    threads = [threading.Thread(target=client) for _ in range(2)]
    for t in threads:
        t.start()
    return statuses, threads


@pytest.fixture(scope="module")
def after_clean_load(live_stack: OpsConfig, model_id: str) -> OpsConfig:
    stop = threading.Event()
    statuses, threads = mixed_load(live_stack.listen.serve_url, model_id, stop)
    time.sleep(LOAD_S)
    stop.set()
    for t in threads:
        t.join()
    assert statuses and set(statuses) == {200}, sorted(set(statuses))
    time.sleep(3 * live_stack.observability.scrape_interval_s)  # scrape and evaluate what it did
    return live_stack


def used_metrics() -> dict[str, str]:
    """Metric name -> where it is used."""
    used: dict[str, str] = {}
    for board in all_dashboards(load()):
        for panel in board.panels:
            for query in panel.queries:
                for name in sorted(metric_names(query.expr)):
                    used.setdefault(name, f"{board.uid}: {panel.title}")
    rules = yaml.safe_load(alert_rules.RULES_FILE.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            for name in sorted(metric_names(rule["expr"])):
                used.setdefault(name, rule.get("alert") or rule.get("record"))
    return {n: where for n, where in used.items() if METRIC.fullmatch(n)}


def test_every_metric_used_exists(after_clean_load: OpsConfig) -> None:
    present = set(prom(after_clean_load, "/api/v1/label/__name__/values"))
    missing = {n: where for n, where in used_metrics().items()
               if n not in present and n not in EVENT_ONLY_METRICS}
    assert missing == {}


def test_every_panel_has_data_or_a_reason(after_clean_load: OpsConfig) -> None:
    total, with_data, empty = 0, 0, []
    for board in all_dashboards(load()):
        for panel in board.panels:
            total += 1
            has_data = False
            for query in panel.queries:
                expr = query.expr
                for var, value in VARIABLES.items():
                    expr = expr.replace(var, value)
                has_data |= bool(prom(after_clean_load, "/api/v1/query", query=expr)["result"])
            if has_data:
                with_data += 1
            elif not panel.event_only:
                empty.append(f"{board.uid}: {panel.title}")
    print(f"panels with data: {with_data}/{total} ({with_data / total:.0%}); the rest are event-only")
    assert empty == []


def test_no_alert_fires_on_a_clean_run(after_clean_load: OpsConfig) -> None:
    alerts = prom(after_clean_load, "/api/v1/alerts")["alerts"]
    firing = [a["labels"] for a in alerts if a["state"] == "firing"]
    assert firing == []


def test_rules_are_loaded(after_clean_load: OpsConfig) -> None:
    groups = {g["name"] for g in prom(after_clean_load, "/api/v1/rules")["groups"]}
    assert {"serveops-slo-recording", "serveops-slo-alerts", "serveops-operational-alerts"} <= groups
