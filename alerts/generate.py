"""`make alerts`: generate the rule files from stack/ops.yaml, then promtool check and test them.

Output: alerts/serveops.rules.yaml and its Kubernetes form, a PrometheusRule in alerts/k8s/; both
committed, and `--check` fails when either drifts from this generator.
Every alert links its runbook, runbooks/<AlertName>.md; a stub is written where none exists yet.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Any

import yaml

from alerts import ops_rules, slo_rules
from stack import ROOT
from stack.config import OpsConfig, load

ALERTS_DIR = ROOT / "alerts"
RULES_FILE = ALERTS_DIR / "serveops.rules.yaml"
TESTS_DIR = ALERTS_DIR / "tests"
RUNBOOKS_DIR = ROOT / "runbooks"
K8S_RULE = ALERTS_DIR / "k8s" / "serveops-prometheusrule.yaml"
HEADER = "# Generated from stack/ops.yaml by `make alerts` (alerts/generate.py). Do not edit.\n"


def groups(ops: OpsConfig) -> list[dict[str, Any]]:
    runbooks = ops.observability.runbook_url_base.rstrip("/")
    return [
        {"name": "serveops-slo-recording", "rules": slo_rules.recording_rules(ops)},
        {"name": "serveops-slo-alerts", "rules": slo_rules.alerting_rules(ops, runbooks)},
        {"name": "serveops-operational-alerts", "rules": ops_rules.ops_alerts(ops, runbooks)},
    ]


def render(ops: OpsConfig) -> str:
    return HEADER + yaml.safe_dump({"groups": groups(ops)}, sort_keys=False, width=120)


def prometheus_rule(ops: OpsConfig) -> str:
    """The same groups as a prometheus-operator PrometheusRule."""
    cr = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
          "metadata": {"name": "serveops", "labels": {"app.kubernetes.io/name": "serveops",
                                                       "app.kubernetes.io/part-of": "serveops"}},
          "spec": {"groups": groups(ops)}}
    return HEADER + yaml.safe_dump(cr, sort_keys=False, width=120)


def alert_names(ops: OpsConfig) -> list[str]:
    return sorted({r["alert"] for g in groups(ops) for r in g["rules"] if "alert" in r})


def write_runbook_stubs(names: list[str]) -> None:
    for name in names:
        path = RUNBOOKS_DIR / f"{name}.md"
        if not path.exists():
            path.write_text(f"# {name}\n\nStub: Meaning, Impact, Diagnosis and Mitigation come with the "
                            "runbooks issue (#7).\n")


def reload_prometheus(ops: OpsConfig) -> None:
    """A running local Prometheus picks the new rules up at once (it runs with --web.enable-lifecycle)."""
    import httpx

    try:
        httpx.post(f"{ops.listen.url(ops.listen.prometheus_port)}/-/reload", timeout=5)
        print("reloaded the local Prometheus")
    except httpx.HTTPError:
        pass  # not running: it loads the rules when `make up` starts it


def promtool(*args: str) -> int:
    return subprocess.run(["promtool", *args], cwd=ALERTS_DIR).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed rules drifted")
    args = parser.parse_args()
    ops = load()
    outputs = {RULES_FILE: render(ops), K8S_RULE: prometheus_rule(ops)}
    if args.check:
        stale = [p for p, text in outputs.items() if not p.exists() or p.read_text() != text]
        if stale:
            print(f"drifted, run `make alerts`: {[str(p.relative_to(ROOT)) for p in stale]}", file=sys.stderr)
            return 1
    else:
        for path, text in outputs.items():
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
        write_runbook_stubs(alert_names(ops))
        print(f"wrote {RULES_FILE.relative_to(ROOT)}: {len(alert_names(ops))} alerts")
        reload_prometheus(ops)
    tests = sorted(str(p.relative_to(ALERTS_DIR)) for p in TESTS_DIR.glob("*.yaml"))
    if promtool("check", "rules", RULES_FILE.name) != 0:
        return 1
    return promtool("test", "rules", *tests) if tests else 0


if __name__ == "__main__":
    sys.exit(main())
