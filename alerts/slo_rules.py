"""SLO rules: per-route error and slow-request ratios, per-model LLM goodput, and multiwindow
multi-burn-rate alerts on each.

The burn-rate pairs are the Google SRE workbook's: page when 2% of a 30-day budget burns in an
hour (14.4x over 1h and 5m) or 5% in six hours (6x over 6h and 30m); open a ticket at 10% in a day
(3x over 1d and 2h) or 10% in three days (1x over 3d and 6h). The short window makes the alert
stop soon after the burn does.

Every ratio is per Ray cluster (stack/cluster_labels.py): on a Prometheus that scrapes several, one
cluster's burn must not hide in another's clean traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alerts.rule import alert
from stack.cluster_labels import BY
from stack.config import OpsConfig, Slo
from stack.serving.settings import Goodput

REQUESTS = "ray_serve_num_http_requests_total"
LATENCY = "ray_serve_http_request_latency_ms"
GOODPUT = "ray_serveops_llm_goodput_total"  # the LLM ingress's judge: verdict good|bad per model
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")


@dataclass(frozen=True)
class BurnRate:
    severity: str
    long: str
    short: str
    factor: float
    for_: str


BURN_RATES = (
    BurnRate("critical", "1h", "5m", 14.4, "2m"),
    BurnRate("critical", "6h", "30m", 6, "15m"),
    BurnRate("warning", "1d", "2h", 3, "1h"),
    BurnRate("warning", "3d", "6h", 1, "3h"),
)


def le_value(ms: float) -> str:
    """Ray exports bucket bounds as floats ("500.0")."""
    return f"{float(ms)}"


def error_ratio(slo: Slo, window: str) -> str:
    """Per cluster: 5xx over all requests. A cluster without 5xx reads 0 from its own traffic times 0
    (vector(0) has no labels: it would match no cluster's denominator)."""
    sel = f'route="{slo.route}"'
    total = f"sum by ({BY}) (rate({REQUESTS}{{{sel}}}[{window}]))"
    return (f'(sum by ({BY}) (rate({REQUESTS}{{{sel},status_code=~"5.."}}[{window}]))\n'
            f"or {total} * 0)\n/\n{total}")


def slow_ratio(slo: Slo, window: str) -> str:
    sel = f'route="{slo.route}"'
    fast = f'{sel},le="{le_value(slo.latency_objective_ms)}"'
    return (f"1 - (\n  sum by ({BY}) (rate({LATENCY}_bucket{{{fast}}}[{window}]))\n"
            f"  /\n  sum by ({BY}) (rate({LATENCY}_count{{{sel}}}[{window}]))\n)")


def bad_goodput_ratio(window: str) -> str:
    """Per cluster and model: the share of judged LLM requests that were not good. Every model,
    configured or not."""
    by = f"{BY}, model"
    return (f'(sum by ({by}) (rate({GOODPUT}{{verdict="bad"}}[{window}]))\n'
            f'or sum by ({by}) (rate({GOODPUT}[{window}])) * 0)\n'
            f'/\nsum by ({by}) (rate({GOODPUT}[{window}]))')


def recording_rules(ops: OpsConfig) -> list[dict[str, Any]]:
    rules = []
    for slo in ops.slos:
        labels = {"slo": slo.name, "route": slo.route}
        for window in WINDOWS:
            for record, expr in (("slo_errors", error_ratio), ("slo_slow", slow_ratio)):
                rules.append({"record": f"serveops:{record}:ratio_rate{window}", "expr": expr(slo, window),
                              "labels": labels})
    rules += [{"record": f"serveops:llm_goodput_bad:ratio_rate{window}", "expr": bad_goodput_ratio(window)}
              for window in WINDOWS]
    return rules


def _burn_alert(name: str, record: str, kind: str, slo: Slo, budget: float, burn: BurnRate,
                runbook_url_base: str) -> dict[str, Any]:
    threshold = burn.factor * budget
    sel = f'{{slo="{slo.name}"}}'
    return alert(
        name,
        f"{record}{burn.long}{sel} > {threshold:g}\nand\n{record}{burn.short}{sel} > {threshold:g}",
        burn.for_, burn.severity,
        f"A route is burning its {kind} budget too fast.",
        f"{{{{ $labels.route }}}}: {kind} ratio over {burn.long} is {{{{ $value | humanizePercentage }}}}, "
        f"above {burn.factor:g}x the budget of {budget:.3%}.",
        runbook_url_base, slo=slo.name, route=slo.route, long_window=burn.long, short_window=burn.short,
    )


def _goodput_alert(model: str, goodput: Goodput, burn: BurnRate, runbook_url_base: str) -> dict[str, Any]:
    threshold = burn.factor * goodput.budget
    record, sel = "serveops:llm_goodput_bad:ratio_rate", f'{{model="{model}"}}'
    return alert(
        "LLMGoodputBudgetBurn",
        f"{record}{burn.long}{sel} > {threshold:g}\nand\n{record}{burn.short}{sel} > {threshold:g}",
        burn.for_, burn.severity,
        "An LLM model is burning its goodput budget too fast: too many requests fail, start slowly or "
        "stream slowly.",
        f"{{{{ $labels.model }}}}: share of requests not good (TTFT over {goodput.ttft_ms:g} ms, TPOT over "
        f"{goodput.tpot_ms:g} ms, or failed) over {burn.long} is {{{{ $value | humanizePercentage }}}}, "
        f"above {burn.factor:g}x the budget of {goodput.budget:.3%}.",
        runbook_url_base, model=model, long_window=burn.long, short_window=burn.short,
    )


def alerting_rules(ops: OpsConfig, runbook_url_base: str) -> list[dict[str, Any]]:
    rules = []
    for slo in ops.slos:
        for burn in BURN_RATES:
            rules.append(_burn_alert("ServeErrorBudgetBurn", "serveops:slo_errors:ratio_rate", "error",
                                     slo, slo.error_budget, burn, runbook_url_base))
            rules.append(_burn_alert("ServeLatencyBudgetBurn", "serveops:slo_slow:ratio_rate", "latency",
                                     slo, slo.latency_budget, burn, runbook_url_base))
    for model, goodput in ops.llm_goodput.items():
        rules += [_goodput_alert(model, goodput, burn, runbook_url_base) for burn in BURN_RATES]
    return rules
