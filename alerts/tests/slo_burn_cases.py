"""Writes slo_burn_rules.test.yaml: every burn-rate rule (SLO x kind x window pair) shown firing and
shown silent while its route serves traffic.

Expected alerts come from the burn-rate table and the SLO objectives, never from a rule's
expression: a route serves a constant bad-request ratio just above (x1.05) or just below (x0.95) a
pair's threshold, factor x budget, so both windows hold that ratio. The pair must fire once its
`for` has run, and not one evaluation earlier; the ratio just below must stay silent as long. A rule
with a wrong threshold, route, bucket, status filter or `for` fails promtool; one reading the wrong
window does not (every window holds the same ratio). Only the rules' annotation templates are read,
since promtool compares annotations too.

One group per SLO and pair holds errors above and latency below; another, the other way round. Per
LLM model and pair, one group holds its bad-goodput share just above the pair's threshold, another
just below.

Per cluster: one group per alert on a Prometheus that scrapes several Ray clusters. Cluster a in
namespace prod burns just above the first pair's threshold; b/prod and a/staging serve clean
traffic, each so much more that its sum with a/prod stays below every threshold. Each clean one
shares a label with a/prod, so a rule that drops either cluster label from its sums goes silent.
The clean ones serve no bad requests at all: their recorded ratios must still be 0, not missing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import yaml

from alerts.slo_rules import BURN_RATES, BurnRate
from stack import ROOT
from stack.artifacts import header
from stack.cluster_labels import CLUSTER, NAMESPACE
from stack.config import OpsConfig, Slo
from stack.serving.settings import Goodput

OUT = ROOT / "alerts" / "tests" / "slo_burn_rules.test.yaml"
SAMPLE_S = 60  # input series: one sample a minute
EVAL_S = 300  # rules evaluated every 5m: a fifth of the work of 1m; promtool runs this on every check
PER_MIN = 600.0  # requests a minute on the route under test
CLIENT_ERRORS = 0.01  # share of 4xx: traffic, not errors
ABOVE, BELOW = 1.05, 0.95
UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


Labels = dict[str, str]
Series = list[dict[str, str]]
Rules = dict[tuple[str, str, str], dict[str, Any]]  # (alert, slo or model, long window) -> its rule
Expected = Callable[[BurnRate, float, Rules, Labels], dict[str, Any]]  # (pair, ratio, rules, cluster)
SeriesOf = Callable[[float, int, Labels, float], Series]  # (ratio, samples, cluster, requests a minute)
NO_CLUSTER: Labels = {}  # the local stack's series: no cluster labels
BURNING: Labels = {CLUSTER: "a", NAMESPACE: "prod"}
CLEAN: tuple[Labels, ...] = ({CLUSTER: "b", NAMESPACE: "prod"}, {CLUSTER: "a", NAMESPACE: "staging"})


@dataclass(frozen=True)
class Kind:
    alert: str
    record: str
    budget: Callable[[Slo], float]
    series: Callable[[Slo, float, int, Labels, float], Series]


def counter(per_sample: float, samples: int) -> str:
    return f"0+{per_sample:.10g}x{samples - 1}"


def prefix(cluster: Labels) -> str:
    """The cluster's matchers, ahead of a series' own."""
    return "".join(f'{k}="{v}",' for k, v in cluster.items())


def error_series(slo: Slo, ratio: float, samples: int, cluster: Labels = NO_CLUSTER,
                 per_min: float = PER_MIN) -> Series:
    """5xx at `ratio` of all requests; 4xx are the client's and count as traffic only. No 5xx series
    at all at ratio 0: a cluster that never failed has none."""
    metric = f'ray_serve_num_http_requests_total{{{prefix(cluster)}route="{slo.route}",status_code='
    ok = 1 - ratio - CLIENT_ERRORS
    assert ok > 0, (slo.name, ratio)
    return [{"series": f'{metric}"{code}"}}', "values": counter(per_min * share, samples)}
            for code, share in (("200", ok), ("404", CLIENT_ERRORS), ("503", ratio)) if share > 0]


def latency_series(slo: Slo, ratio: float, samples: int, cluster: Labels = NO_CLUSTER,
                   per_min: float = PER_MIN) -> Series:
    """`ratio` of requests slower than the objective. Ray writes bucket bounds as floats ("500.0")."""
    assert 0 <= ratio < 1, (slo.name, ratio)
    sel = f'{prefix(cluster)}route="{slo.route}"'
    le = float(slo.latency_objective_ms)
    return [
        {"series": f'ray_serve_http_request_latency_ms_bucket{{{sel},le="{le}"}}',
         "values": counter(per_min * (1 - ratio), samples)},
        {"series": f"ray_serve_http_request_latency_ms_count{{{sel}}}", "values": counter(per_min, samples)},
    ]


ERRORS = Kind("ServeErrorBudgetBurn", "serveops:slo_errors:ratio_rate", lambda slo: 1 - slo.availability,
              error_series)
LATENCY = Kind("ServeLatencyBudgetBurn", "serveops:slo_slow:ratio_rate", lambda slo: 1 - slo.latency_target,
               latency_series)


def seconds(duration: str) -> int:
    return int(duration[:-1]) * UNITS_S[duration[-1]]


def step_at_or_after(t: float) -> int:
    return math.ceil(t / EVAL_S) * EVAL_S


def fires_at(burn: BurnRate) -> int:
    """Rates need two samples: the condition holds from the first evaluation after the second
    sample, and the alert fires at the first evaluation `for` after that."""
    return step_at_or_after(step_at_or_after(SAMPLE_S) + seconds(burn.for_))


def firing_at(budget: float, ratio: float, t: int) -> list[BurnRate]:
    """The pairs of the table that fire at t on a constant ratio: both windows hold `ratio`."""
    return [b for b in BURN_RATES if ratio > b.factor * budget and t >= fires_at(b)]


def firing(kind: Kind, slo: Slo, ratio: float, t: int) -> list[BurnRate]:
    return firing_at(kind.budget(slo), ratio, t)


def duration(t: int) -> str:
    return f"{t // 60}m" if t % 60 == 0 else f"{t}s"


def fill(rule: dict[str, Any], labels: dict[str, str], ratio: float) -> dict[str, str]:
    """The rule's templates, filled as Prometheus would: $value is the long window's ratio."""
    value = f"{ratio * 100:.4g}%"  # Prometheus' humanizePercentage: %.4g of the percentage
    out = {}
    for key, text in rule["annotations"].items():
        for name, label in labels.items():
            text = text.replace(f"{{{{ $labels.{name} }}}}", label)
        out[key] = text.replace("{{ $value | humanizePercentage }}", value)
    assert not any("{{" in v for v in out.values()), f"unfilled template in {rule['alert']}: {out}"
    return out


def annotations(rule: dict[str, Any], slo: Slo, ratio: float) -> dict[str, str]:
    return fill(rule, {"route": slo.route}, ratio)


def exp_alert(kind: Kind, slo: Slo, burn: BurnRate, ratio: float, rules: Rules,
              cluster: Labels = NO_CLUSTER) -> dict[str, Any]:
    labels = {"severity": burn.severity, "slo": slo.name, "route": slo.route, "long_window": burn.long,
              "short_window": burn.short, **cluster}
    rule = rules[(kind.alert, slo.name, burn.long)]
    return {"exp_labels": labels, "exp_annotations": annotations(rule, slo, ratio)}


def group(slo: Slo, burn: BurnRate, hot: Kind, cold: Kind,
          rules: Rules) -> dict[str, Any]:
    """`hot` just above this pair's threshold, `cold` just below it: checked one evaluation before
    the pair's `for` has run (nothing fires) and at it (only `hot` fires)."""
    ratios = {hot: ABOVE * burn.factor * hot.budget(slo), cold: BELOW * burn.factor * cold.budget(slo)}
    end = fires_at(burn)
    samples = end // SAMPLE_S + 1
    checks = [{"eval_time": duration(t), "alertname": kind.alert,
               "exp_alerts": [exp_alert(kind, slo, b, ratio, rules) for b in firing(kind, slo, ratio, t)]}
              for t in (end - EVAL_S, end) for kind, ratio in ratios.items()]
    return {"name": f"{slo.name} {burn.long}/{burn.short}: {hot.alert} above, {cold.alert} below",
            "interval": duration(SAMPLE_S),
            "input_series": [s for kind, ratio in ratios.items()
                             for s in kind.series(slo, ratio, samples, NO_CLUSTER, PER_MIN)],
            "alert_rule_test": checks}


GOODPUT_ALERT = "LLMGoodputBudgetBurn"


def goodput_series(model: str, ratio: float, samples: int, cluster: Labels = NO_CLUSTER,
                   per_min: float = PER_MIN) -> Series:
    """`ratio` of the model's judged requests bad (slow streams), the rest good; no bad series at 0."""
    metric = f'ray_serveops_llm_goodput_total{{{prefix(cluster)}model="{model}",'
    return [{"series": f'{metric}verdict="{verdict}",reason="{reason}"}}',
             "values": counter(per_min * share, samples)}
            for verdict, reason, share in (("good", "ok", 1 - ratio), ("bad", "tpot", ratio)) if share > 0]


def goodput_alert(model: str, goodput: Goodput, burn: BurnRate, ratio: float, rules: Rules,
                  cluster: Labels = NO_CLUSTER) -> dict[str, Any]:
    labels = {"severity": burn.severity, "model": model, "long_window": burn.long, "short_window": burn.short,
              **cluster}
    return {"exp_labels": labels,
            "exp_annotations": fill(rules[(GOODPUT_ALERT, model, burn.long)], {"model": model}, ratio)}


def goodput_group(model: str, goodput: Goodput, burn: BurnRate, factor: float,
                  rules: Rules) -> dict[str, Any]:
    """The model's bad share at `factor` x this pair's threshold: checked one evaluation before the
    pair's `for` has run and at it; every pair whose threshold the share passes fires."""
    ratio = factor * burn.factor * goodput.budget
    end = fires_at(burn)
    checks = [{"eval_time": duration(t), "alertname": GOODPUT_ALERT,
               "exp_alerts": [goodput_alert(model, goodput, b, ratio, rules)
                              for b in firing_at(goodput.budget, ratio, t)]}
              for t in (end - EVAL_S, end)]
    return {"name": f"goodput {model} {burn.long}/{burn.short}: {'above' if factor > 1 else 'below'}",
            "interval": duration(SAMPLE_S),
            "input_series": goodput_series(model, ratio, end // SAMPLE_S + 1),
            "alert_rule_test": checks}


def dilution(burn: BurnRate) -> int:
    """How many times a/prod's traffic each clean cluster serves: enough that a/prod's bad share, just
    above this pair's threshold, summed with one clean cluster's traffic, is below the lowest one."""
    lowest = min(b.factor for b in BURN_RATES)
    times = math.ceil(ABOVE * burn.factor / (BELOW * lowest))
    assert ABOVE * burn.factor / (1 + times) <= BELOW * lowest
    return times


def cluster_group(name: str, alertname: str, budget: float, series: SeriesOf, expected: Expected, record: str,
                  static: Labels, rules: Rules) -> dict[str, Any]:
    """a/prod just above the first pair's threshold, b/prod and a/staging clean and diluting: the pair
    fires for a/prod alone (checked one evaluation before its `for` has run and at it), and the clean
    clusters' recorded ratios are 0."""
    burn = BURN_RATES[0]
    ratio, end = ABOVE * burn.factor * budget, fires_at(burn)
    samples, per_min = end // SAMPLE_S + 1, dilution(burn) * PER_MIN
    checks = [{"eval_time": duration(t), "alertname": alertname,
               "exp_alerts": [expected(b, ratio, rules, BURNING) for b in firing_at(budget, ratio, t)]}
              for t in (end - EVAL_S, end)]
    matchers = ",".join(f'{k}="{v}"' for k, v in static.items())
    zeros = {"expr": f"{record}{burn.long}{{{matchers}}} == 0", "eval_time": duration(end),
             "exp_samples": [{"labels": f"{record}{burn.long}{{{prefix(c)}{matchers}}}", "value": 0}
                             for c in CLEAN]}
    return {"name": f"per cluster: {name} {burn.long}/{burn.short}, a/prod burns, b/prod and a/staging clean",
            "interval": duration(SAMPLE_S),
            "input_series": series(ratio, samples, BURNING, PER_MIN)
            + [s for c in CLEAN for s in series(0, samples, c, per_min)],
            "alert_rule_test": checks, "promql_expr_test": [zeros]}


def cluster_groups(ops: OpsConfig, rules: Rules) -> list[dict[str, Any]]:
    """Errors and latency on the first SLO's route; goodput on the first model."""
    slo = ops.slos[0]
    static = {"slo": slo.name, "route": slo.route}
    out = [cluster_group(f"{slo.name} {kind.alert}", kind.alert, kind.budget(slo), partial(kind.series, slo),
                         partial(exp_alert, kind, slo), kind.record, static, rules)
           for kind in (ERRORS, LATENCY)]
    for model, goodput in list(ops.llm_goodput.items())[:1]:
        out.append(cluster_group(f"goodput {model}", GOODPUT_ALERT, goodput.budget,
                                 partial(goodput_series, model), partial(goodput_alert, model, goodput),
                                 "serveops:llm_goodput_bad:ratio_rate", {"model": model}, rules))
    return out


def index(alert_rules: list[dict[str, Any]]) -> Rules:
    return {(r["alert"], r["labels"].get("slo") or r["labels"]["model"], r["labels"]["long_window"]): r
            for r in alert_rules if "slo" in r["labels"] or r["alert"] == GOODPUT_ALERT}


def render(ops: OpsConfig, rule_groups: list[dict[str, Any]]) -> str:
    """The test file for the rule file's groups. They run in file order at each evaluation, so an alert
    reads this evaluation's ratios (unordered, promtool may run the alerts first: one step late)."""
    rules = index([r for g in rule_groups for r in g["rules"] if "alert" in r])
    tests = [group(slo, burn, hot, cold, rules) for slo in ops.slos for burn in BURN_RATES
             for hot, cold in ((ERRORS, LATENCY), (LATENCY, ERRORS))]
    tests += [goodput_group(model, goodput, burn, factor, rules) for model, goodput in ops.llm_goodput.items()
              for burn in BURN_RATES for factor in (ABOVE, BELOW)]
    tests += cluster_groups(ops, rules)
    doc = {"rule_files": ["../serveops.rules.yaml"], "evaluation_interval": duration(EVAL_S),
           "group_eval_order": [g["name"] for g in rule_groups], "tests": tests}
    return (header("alerts/tests/slo_burn_cases.py")
            + "# Every burn-rate rule firing and silent, then per cluster; how the cases are chosen: "
              "slo_burn_cases.py.\n"
            + yaml.safe_dump(doc, sort_keys=False, width=200))
