"""The generated dashboards: no drift, and every panel has what an on-call engineer needs."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml

from alerts import generate as alert_rules
from dashboards import generate
from dashboards.catalog import all_dashboards
from stack import ROOT
from stack.config import load

BOARDS = {p.stem: json.loads(p.read_text()) for p in sorted(generate.JSON_DIR.glob("*.json"))}
PANELS = [(uid, p) for uid, board in BOARDS.items() for p in board["panels"]]


def test_no_drift() -> None:
    out = subprocess.run([sys.executable, "-m", "dashboards.generate", "--check"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_the_seven_dashboards() -> None:
    assert set(BOARDS) == {"serveops-serve", "serveops-deployment", "serveops-llm", "serveops-batching",
                           "serveops-multiplexing", "serveops-resources", "serveops-slo"}


@pytest.mark.parametrize(("uid", "panel"), PANELS, ids=[f"{u}:{p['title']}" for u, p in PANELS])
def test_panel_is_complete(uid: str, panel: dict) -> None:
    assert panel["description"]
    assert panel["fieldConfig"]["defaults"]["unit"]
    assert panel["datasource"]["uid"] == "${datasource}"
    for target in panel["targets"]:
        assert target["datasource"]["uid"] == "${datasource}"
        expr = target["expr"]
        for window in re.findall(r"\b(?:rate|increase)\([^\[]*\[([^\]]+)\]", expr):
            assert window == "$__rate_interval", expr


@pytest.mark.parametrize("uid", sorted(BOARDS))
def test_variables(uid: str) -> None:
    names = [v["name"] for v in BOARDS[uid]["templating"]["list"]]
    assert names[0] == "datasource"
    if uid not in ("serveops-slo",):
        assert "application" in names


def test_runbook_links_point_at_real_alerts() -> None:
    alerts = set(alert_rules.alert_names(load()))
    linked = set()
    for _, panel in PANELS:
        for link in panel.get("links", []):
            name = link["url"].rsplit("/", 1)[-1].removesuffix(".md")
            assert name in alerts, link
            assert (ROOT / "runbooks" / f"{name}.md").exists()
            linked.add(name)
    assert len(linked) >= 10


def test_provisioning_and_configmaps() -> None:
    provider = yaml.safe_load((ROOT / "dashboards" / "provisioning" / "dashboards.yaml").read_text())
    assert provider["providers"][0]["type"] == "file"
    source = yaml.safe_load((ROOT / "dashboards" / "provisioning" / "datasources.yaml").read_text())
    assert source["datasources"][0]["url"] == "http://127.0.0.1:9090"
    for spec in all_dashboards(load()):
        cm = yaml.safe_load((ROOT / "dashboards" / "k8s" / f"{spec.uid}-configmap.yaml").read_text())
        assert cm["metadata"]["labels"] == {"grafana_dashboard": "1"}
        assert json.loads(cm["data"][f"{spec.uid}.json"]) == BOARDS[spec.uid]


def test_prometheus_rule_matches_crd_and_rules() -> None:
    import jsonschema

    crd_path = ROOT.parent / "shared" / "reference" / "prometheus-operator-crds" / \
        "monitoring.coreos.com_prometheusrules.yaml"
    if not crd_path.exists():  # the CRDs ship beside the repo, in ../shared
        pytest.fail(f"missing {crd_path}")
    crd = yaml.safe_load(crd_path.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    cr = yaml.safe_load(alert_rules.K8S_RULE.read_text())
    # Draft7Validator directly: the CRD's Go-style patterns ("(?i)" mid-pattern) fail the metaschema check.
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(cr), key=str)
    assert errors == [], errors[:3]
    rules = yaml.safe_load(alert_rules.RULES_FILE.read_text())
    assert cr["spec"]["groups"] == rules["groups"]
