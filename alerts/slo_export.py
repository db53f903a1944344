"""SLOs as code others read: the SLOs of stack/ops.yaml as OpenSLO v1 documents and as a Sloth spec.

Output: alerts/slos/serveops.openslo.yaml (a Service and an SLO per objective, one multi-document file,
so `oslo validate` resolves every SLO's service in one pass) and alerts/slos/serveops.sloth.yaml
(Sloth's prometheus/v1), committed; `--check` fails when either drifts from its generator.

Per route in `slos:` an availability SLO (5xx over all requests) and a latency SLO (the latency
histogram's bucket at the objective over its count); per model in `llm_goodput:` a goodput SLO (bad
verdicts over all). Metric names and label matchers are alerts/slo_rules.py's, so the exports count the
same events as our rules. Those rules (alerts/serveops.rules.yaml) stay what the stack runs: these
files are for other tools. Load Sloth's rules or ours into one Prometheus, not both: its alerts take
our alert names.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from alerts.slo_rules import BURN_RATES, GOODPUT, LATENCY, REQUESTS, le_value
from stack import ROOT, artifacts
from stack.artifacts import RULES_FILE
from stack.config import OpsConfig, Slo, load
from stack.serving.settings import Goodput

OUT_DIR = RULES_FILE.parent / "slos"
SERVICE = "serveops"
OPENSLO_FILE = OUT_DIR / f"{SERVICE}.openslo.yaml"
SLOTH_FILE = OUT_DIR / f"{SERVICE}.sloth.yaml"
OPENSLO_API = "openslo/v1"
SLOTH_VERSION = "prometheus/v1"
# The budget period the burn-rate table assumes (14.4x over 1h burns 2% of 30 days); Sloth's default too.
PERIOD = "30d"
WINDOW = "{{.window}}"  # Sloth fills in each of its windows; OpenSLO queries have none

# Sloth's default 30-day windows (long, short, factor) are the Google SRE workbook's, which is where our
# BURN_RATES table comes from: its page alert is the first two pairs, its ticket alert the last two.
SLOTH_PAGE = (("1h", "5m", 14.4), ("6h", "30m", 6.0))
SLOTH_TICKET = (("1d", "2h", 3.0), ("3d", "6h", 1.0))

# Our alert for each kind of SLO: Sloth's alerts take its name, so a page from either opens one runbook.
ALERTS = {"availability": "ServeErrorBudgetBurn", "latency": "ServeLatencyBudgetBurn",
          "goodput": "LLMGoodputBudgetBurn"}


@dataclass(frozen=True)
class Sli:
    """One SLO with its events as bare selectors: OpenSLO sums the counters, Sloth rates them."""

    name: str  # an RFC 1123 label: OpenSLO's metadata.name, Sloth's SLO name
    display: str
    kind: str  # a key of ALERTS
    objective: float  # the share of events that must be good
    total: str
    bad: str | None = None
    good: str | None = None  # the latency bucket at the objective: bad = total - good
    description: str = ""
    labels: tuple[tuple[str, str], ...] = ()


def dns_name(*parts: str) -> str:
    """Lowercase alphanumerics and '-', at most 63: OpenSLO's names; Sloth accepts them too."""
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")[:63].rstrip("-")


def route_slis(slo: Slo) -> list[Sli]:
    sel = f'route="{slo.route}"'  # slo_rules' matchers, in the same order
    le = le_value(slo.latency_objective_ms)
    labels = (("slo", slo.name), ("route", slo.route))
    return [
        Sli(dns_name(slo.name, "availability"), f"{slo.route} availability", "availability", slo.availability,
            total=f"{REQUESTS}{{{sel}}}", bad=f'{REQUESTS}{{{sel},status_code=~"5.."}}',
            description=f"Requests to {slo.route} answered without a 5xx.", labels=labels),
        Sli(dns_name(slo.name, "latency"), f"{slo.route} latency", "latency", slo.latency_target,
            total=f"{LATENCY}_count{{{sel}}}", good=f'{LATENCY}_bucket{{{sel},le="{le}"}}',
            description=f"Requests to {slo.route} answered within {slo.latency_objective_ms:g} ms "
                        f"(Serve's latency histogram, bucket le={le}).", labels=labels),
    ]


def goodput_sli(model: str, goodput: Goodput) -> Sli:
    sel = f'model="{model}"'
    return Sli(dns_name(model, "goodput"), f"{model} goodput", "goodput", goodput.target,
               total=f"{GOODPUT}{{{sel}}}", bad=f'{GOODPUT}{{verdict="bad",{sel}}}',
               description=f"LLM requests to {model} that succeeded with the first token within "
                           f"{goodput.ttft_ms:g} ms and a mean of at most {goodput.tpot_ms:g} ms a token "
                           "after it, as the LLM ingress judges them.",
               labels=(("model", model),))


def slis(ops: OpsConfig) -> list[Sli]:
    out = [sli for slo in ops.slos for sli in route_slis(slo)]
    out += [goodput_sli(model, goodput) for model, goodput in ops.llm_goodput.items()]
    names = [s.name for s in out]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:  # OpenSLO and Sloth both key SLOs by name: the second would replace the first
        raise ValueError(f"SLO names {repeated} repeat once made DNS-safe; rename an SLO or a model")
    return out


# --- OpenSLO v1 --------------------------------------------------------------------------------------

def _source(selector: str) -> dict[str, Any]:
    # Raw counters, summed over replicas: the OpenSLO consumer applies its own windows (counter: true).
    return {"metricSource": {"type": "Prometheus", "spec": {"query": f"sum({selector})"}}}


def _openslo_slo(sli: Sli) -> dict[str, Any]:
    ratio: dict[str, Any] = {"counter": True}
    if sli.good:
        ratio["good"] = _source(sli.good)
    if sli.bad:
        ratio["bad"] = _source(sli.bad)
    ratio["total"] = _source(sli.total)
    return {
        "apiVersion": OPENSLO_API,
        "kind": "SLO",
        "metadata": {"name": sli.name, "displayName": sli.display},
        "spec": {
            "description": sli.description,
            "service": SERVICE,
            "indicator": {"metadata": {"name": sli.name}, "spec": {"ratioMetric": ratio}},
            "timeWindow": [{"duration": PERIOD, "isRolling": True}],
            "budgetingMethod": "Occurrences",
            "objectives": [{"displayName": sli.display, "target": sli.objective}],
        },
    }


def openslo(ops: OpsConfig) -> list[dict[str, Any]]:
    service = {"apiVersion": OPENSLO_API, "kind": "Service",
               "metadata": {"name": SERVICE, "displayName": "serveops"},
               "spec": {"description": "Ray Serve and vLLM: the routes and LLM models of stack/ops.yaml."}}
    return [service, *(_openslo_slo(sli) for sli in slis(ops))]


# --- Sloth prometheus/v1 -----------------------------------------------------------------------------

def _rate(selector: str) -> str:
    return f"sum(rate({selector}[{WINDOW}]))"


def _error_query(sli: Sli) -> str:
    if sli.good:
        return f"{_rate(sli.total)} - {_rate(sli.good)}"
    # With no bad request yet the selector is empty: count zero, as our rules do, not no data.
    return f"({_rate(sli.bad or '')} or vector(0))"


def severity(windows: tuple[tuple[str, str, float], ...]) -> str:
    """Our table's severity for Sloth's window pairs. Fails where the table left Google's windows: the
    Sloth spec would then alert at other burn rates than the stack does."""
    table = {(b.long, b.short, float(b.factor)): b.severity for b in BURN_RATES}
    found = {table.get(w) for w in windows}
    if len(found) != 1 or None in found:
        raise ValueError(f"BURN_RATES no longer holds Sloth's default windows {windows} at one severity")
    return str(found.pop())


def sloth(ops: OpsConfig) -> dict[str, Any]:
    runbooks = ops.observability.runbook_url_base.rstrip("/")
    page, ticket = severity(SLOTH_PAGE), severity(SLOTH_TICKET)
    return {
        "version": SLOTH_VERSION,
        "service": SERVICE,
        "labels": {"app": SERVICE},
        "slos": [{
            "name": sli.name,
            "objective": round(sli.objective * 100, 6),  # Sloth takes percent
            "description": sli.description,
            "labels": dict(sli.labels),
            "sli": {"events": {"error_query": _error_query(sli), "total_query": _rate(sli.total)}},
            "alerting": {
                "name": ALERTS[sli.kind],
                "labels": {"category": sli.kind},
                "annotations": {"summary": f"{sli.display}: the error budget is burning too fast.",
                                "runbook_url": f"{runbooks}/{ALERTS[sli.kind]}.md"},
                "page_alert": {"labels": {"severity": page}},
                "ticket_alert": {"labels": {"severity": ticket}},
            },
        } for sli in slis(ops)],
    }


# --- files -------------------------------------------------------------------------------------------

class _Dumper(yaml.SafeDumper):
    """No anchors: a reader of the spec should not have to resolve `*id001`."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _dump(docs: list[dict[str, Any]], notes: tuple[str, ...]) -> str:
    head = artifacts.header("alerts/slo_export.py") + "".join(f"# {line}\n" for line in notes)
    # Wide lines: a query folded over two lines reads worse than a long one.
    body = yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, width=250, explicit_start=len(docs) > 1)
    return head + body


def outputs(ops: OpsConfig) -> dict[Path, str]:
    rules, opens, spec = (p.relative_to(ROOT) for p in (RULES_FILE, OPENSLO_FILE, SLOTH_FILE))
    return {
        OPENSLO_FILE: _dump(openslo(ops), (
            "OpenSLO v1: one Service, an SLO per route objective and per LLM model; raw counters, summed.",
            f"Check: oslo validate -f {opens}. The stack runs {rules}, not this file.")),
        SLOTH_FILE: _dump([sloth(ops)], (
            f"Sloth prometheus/v1: sloth generate -i {spec} (its default {PERIOD} period and windows",
            f"are Google's, as alerts/slo_rules.py's BURN_RATES). The stack runs {rules}: load one or",
            "the other, the alert names are the same.")),
    }


def main(argv: list[str] | None = None) -> int:
    ops = load()
    return artifacts.emit("slo_export", lambda: outputs(ops), owned=(OUT_DIR,), argv=argv)


if __name__ == "__main__":
    sys.exit(main())
