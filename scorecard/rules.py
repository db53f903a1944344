"""Alert identities from the generated rules, and which identity a chaos expectation names."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from typing import Any

from scorecard.model import ChaosRun, Identity

BURN_ALERTS = ("ServeErrorBudgetBurn", "ServeLatencyBudgetBurn")
PER_ROUTE = ("slo", "route")  # a burn-rate identity lists these instead of keying on them
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def seconds(duration: str) -> float:
    """A Prometheus duration ("1h30m", "30s", "0m") in seconds."""
    parts = _DURATION.findall(duration.strip())
    if not parts or "".join(n + u for n, u in parts) != duration.strip():
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def identities(groups: list[dict[str, Any]]) -> list[Identity]:
    """Every alerting rule of alerts.generate.groups(ops), collapsed to identities, in rule order."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, Any]] = {}
    for rule in (r for g in groups for r in g["rules"] if "alert" in r):
        labels = dict(rule.get("labels", {}))
        severity = labels.pop("severity", "none")
        burn = rule["alert"] in BURN_ALERTS
        per_route = {k: labels.pop(k) for k in PER_ROUTE if burn and k in labels}
        key = (rule["alert"], (("severity", severity), *sorted(labels.items())))
        entry = found.setdefault(key, {"alert": rule["alert"], "severity": severity, "labels": labels,
                                       "for_s": seconds(rule.get("for", "0s")), "expr": rule["expr"],
                                       "routes": [], "slos": []})
        for label, field in (("route", "routes"), ("slo", "slos")):
            if label in per_route and per_route[label] not in entry[field]:
                entry[field].append(per_route[label])
    return [Identity(**e) for e in found.values()]


def compatible(identity: Identity, alert: str, labels: dict[str, str]) -> bool:
    """Can an alert with these labels be this identity's? Labels the identity does not fix (dynamic
    ones: application, deployment, metric...) do not decide."""
    if alert != identity.alert or labels.get("severity", identity.severity) != identity.severity:
        return False
    if any(k in identity.labels and identity.labels[k] != v for k, v in labels.items()):
        return False
    if "route" in labels and identity.routes and labels["route"] not in identity.routes:
        return False
    return not ("slo" in labels and identity.slos and labels["slo"] not in identity.slos)


def attribute(alert: str, labels: dict[str, str], known: Iterable[Identity]) -> tuple[list[Identity], str]:
    """The identity an expectation's detection belongs to. When the expectation leaves several open
    (a burn rate without its window pair), the first to fire is the one with the shortest `for`:
    chaos records the first matching alert."""
    found = [i for i in known if compatible(i, alert, labels)]
    if len(found) <= 1:
        return found, ""
    shortest = min(i.for_s for i in found)
    chosen = [i for i in found if i.for_s == shortest]
    return chosen, (f"the expectation matches {len(found)} rules; counted for the shortest `for` "
                    f"({', '.join(i.key for i in chosen)})")


def expectations(run: ChaosRun) -> list[tuple[str, str, dict[str, str]]]:
    """(key in detect_s, alertname, labels) of each alert the experiment expected. Older results have
    no `expected`: the keys of detect_s, chaos.engine.describe()'s `Alert{'k': 'v'}`, say the same."""
    if run.expected:
        out = []
        for e in run.expected:
            labels = {str(k): str(v) for k, v in (e.get("labels") or {}).items()}
            out.append((e["alert"] + (f"{labels}" if labels else ""), e["alert"], labels))
        return out
    parsed = []
    for key in run.detect_s:
        alert, brace, rest = key.partition("{")
        labels = ast.literal_eval(brace + rest) if brace else {}
        parsed.append((key, alert, {str(k): str(v) for k, v in labels.items()}))
    return parsed


def route_of(identity: Identity, labels: dict[str, str], slo_routes: dict[str, str],
             fallback: str | None) -> str | None:
    """The route a burn-rate detection was on: the expectation's route or slo, the identity's only
    route, else the experiment's load route."""
    if "route" in labels:
        return labels["route"]
    if "slo" in labels and labels["slo"] in slo_routes:
        return slo_routes[labels["slo"]]
    return identity.routes[0] if len(identity.routes) == 1 else fallback


def pair(identity: str) -> str:
    """What tells an alert's identities apart, short: "1h/5m" for a burn-rate pair, else the labels."""
    _, brace, rest = identity.partition("{")
    if not brace:
        return ""
    labels = dict(kv.split("=", 1) for kv in rest.rstrip("}").split(","))
    if "long_window" in labels and "short_window" in labels:
        return f"{labels['long_window']}/{labels['short_window']}"
    return ",".join(f"{k}={v}" for k, v in labels.items())


def short(identity: str) -> str:
    """An identity's name for a chart: "ServeErrorBudgetBurn 1h/5m"."""
    return f"{identity.partition('{')[0]} {pair(identity)}".strip()
