"""`make alerts`: generate the rule file from stack/ops.yaml, then promtool check and test it.

Output: alerts/serveops.rules.yaml and its burn-rate tests, alerts/tests/slo_burn_rules.test.yaml,
committed; `--check` fails when either drifts from its generator.
Its Kubernetes form, a PrometheusRule, is one of the manifests (stack/k8s/), built from this file.
Every alert links its runbook, runbooks/<AlertName>.md; a stub is written where none exists yet.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from alerts import ops_rules, slo_rules
from alerts.tests import slo_burn_cases
from stack import ROOT, artifacts
from stack.artifacts import RULES_FILE
from stack.config import OpsConfig, load

ALERTS_DIR = RULES_FILE.parent
TESTS_DIR = ALERTS_DIR / "tests"
RUNBOOKS_DIR = ROOT / "runbooks"


def groups(ops: OpsConfig) -> list[dict[str, Any]]:
    runbooks = ops.observability.runbook_url_base.rstrip("/")
    return [
        {"name": "serveops-slo-recording", "rules": slo_rules.recording_rules(ops)},
        {"name": "serveops-slo-alerts", "rules": slo_rules.alerting_rules(ops, runbooks)},
        {"name": "serveops-operational-alerts", "rules": ops_rules.ops_alerts(ops, runbooks)},
    ]


def render(ops: OpsConfig) -> str:
    return artifacts.header("alerts/generate.py") + yaml.safe_dump({"groups": groups(ops)}, sort_keys=False,
                                                                    width=120)


def alert_names(ops: OpsConfig) -> list[str]:
    return sorted({r["alert"] for g in groups(ops) for r in g["rules"] if "alert" in r})


def outputs(ops: OpsConfig) -> dict[Path, str]:
    """The rule file, and the burn-rate tests generated from the same table (checked for drift too)."""
    return {RULES_FILE: render(ops), slo_burn_cases.OUT: slo_burn_cases.render(ops, groups(ops))}


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


def main(argv: list[str] | None = None) -> int:
    ops = load()
    check = "--check" in (argv if argv is not None else sys.argv[1:])
    if artifacts.emit("alerts", lambda: outputs(ops), argv=argv) != 0:
        return 1
    if not check:
        write_runbook_stubs(alert_names(ops))
        reload_prometheus(ops)
    tests = sorted(str(p.relative_to(ALERTS_DIR)) for p in TESTS_DIR.glob("*.yaml"))
    if promtool("check", "rules", RULES_FILE.name) != 0:
        return 1
    return promtool("test", "rules", *tests) if tests else 0


if __name__ == "__main__":
    sys.exit(main())
