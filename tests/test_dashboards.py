"""The generated dashboards: every panel has what an on-call engineer needs.

Drift is checked once, for every artifact, by tests/test_generate.py.
"""

from __future__ import annotations

import json

import pytest
import yaml

from alerts import generate as alert_rules
from dashboards import generate
from stack import ROOT
from stack.config import load

BOARDS = {p.stem: json.loads(p.read_text()) for p in sorted(generate.JSON_DIR.glob("*.json"))}
PANELS = [(uid, p) for uid, board in BOARDS.items() for p in board["panels"]]


def test_the_eight_dashboards() -> None:
    assert set(BOARDS) == {"serveops-serve", "serveops-deployment", "serveops-llm", "serveops-batching",
                           "serveops-multiplexing", "serveops-resources", "serveops-cluster", "serveops-slo"}


# Descriptions, units, the datasource variable and $__rate_interval on every panel: alerts/lint.py
# (tests/test_lint.py).


@pytest.mark.parametrize("uid", sorted(BOARDS))
def test_variables(uid: str) -> None:
    names = [v["name"] for v in BOARDS[uid]["templating"]["list"]]
    assert names[:3] == ["datasource", "cluster", "namespace"]
    if uid not in ("serveops-slo", "serveops-cluster"):  # node and SLO series carry no application
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


def test_provisioning() -> None:
    provider = yaml.safe_load((ROOT / "dashboards" / "provisioning" / "dashboards.yaml").read_text())
    assert provider["providers"][0]["type"] == "file"
    source = yaml.safe_load((ROOT / "dashboards" / "provisioning" / "datasources.yaml").read_text())
    assert source["datasources"][0]["url"] == "http://127.0.0.1:9090"
