"""One shape for every alerting rule: severity, a static summary, a templated description, a runbook."""

from __future__ import annotations

from typing import Any

SEVERITIES = ("critical", "warning", "info")


def alert(name: str, expr: str, for_: str, severity: str, summary: str, description: str,
          runbook_url_base: str, **labels: str) -> dict[str, Any]:
    assert severity in SEVERITIES, severity
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity, **labels},
        "annotations": {"summary": summary, "description": description,
                        "runbook_url": f"{runbook_url_base}/{name}.md"},
    }
