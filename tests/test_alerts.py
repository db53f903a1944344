"""The generated rules: every alert is complete and tested both ways (drift and promtool:
tests/test_generate.py)."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from alerts import generate
from alerts.rule import SEVERITIES
from stack import ROOT
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


def test_every_alert_tested_firing_and_not() -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    for path in generate.TESTS_DIR.glob("*.yaml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {r["alert"] for r in all_alerts()}
    assert names - fires == set(), "alerts never shown firing"
    assert names - silent == set(), "alerts never shown silent"


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
