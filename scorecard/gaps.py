"""Why an alert has no experiment that fires it: the reasons a recall gap may carry.

Keyed by alertname and, where one alert has several identities, the static labels that pick one.
A page that no experiment fires and that has no reason here fails the scorecard (and a test).
A reason for an identity an experiment does fire is stale; a test catches that too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scorecard.model import Identity

SLO_TESTS = "alerts/tests/slo_burn_rules.test.yaml"


@dataclass(frozen=True)
class Reason:
    alert: str
    why: str
    labels: dict[str, str] = field(default_factory=dict)  # must all match the identity's

    def applies(self, identity: Identity) -> bool:
        wanted = {"severity": identity.severity, **identity.labels}
        return self.alert == identity.alert and all(wanted.get(k) == v for k, v in self.labels.items())


def _slow_burn(alert: str, long: str, short: str, for_: str, minutes: str) -> Reason:
    return Reason(alert, f"the {long}/{short} pair pages only after `for: {for_}` of sustained burn: at "
                  f"100% errors over {minutes} of fault per route, longer than the whole scorecard; "
                  f"slo-burn proves the 1h/5m pair end to end, and {SLO_TESTS} fires this pair in "
                  "promtool", {"long_window": long, "short_window": short})


REASONS: tuple[Reason, ...] = (
    _slow_burn("ServeErrorBudgetBurn", "6h", "30m", "15m", "17 min"),
    _slow_burn("ServeLatencyBudgetBurn", "6h", "30m", "15m", "17 min"),
    _slow_burn("ServeErrorBudgetBurn", "1d", "2h", "1h", "1 h"),
    _slow_burn("ServeLatencyBudgetBurn", "1d", "2h", "1h", "1 h"),
    _slow_burn("ServeErrorBudgetBurn", "3d", "6h", "3h", "3 h"),
    _slow_burn("ServeLatencyBudgetBurn", "3d", "6h", "3h", "3 h"),
    Reason("LLMGoodputBudgetBurn", "needs the LLM's requests slow or failing for the 5m and 1h windows; no "
           "fault hook on the LLM app yet, and slowing it with load would starve every other route; "
           f"{SLO_TESTS} fires each pair in promtool and the live lane counts good requests"),
    Reason("RayMetricsAbsent", "needs Ray's service discovery removed from Prometheus (no job=\"ray\" target "
           "at all): every other alert goes blind with it, for the rest of the run; promtool tests it "
           "(alerts/tests/ops.test.yaml)"),
    Reason("RayMetricsTargetDown", "needs a second Ray node whose metrics go dark: head-partition fires it "
           "with `make up NODES=2` (the link cut); on one node the only target is the head, whose agent "
           "also serves the GCS and Serve's metrics"),
    Reason("GPUMemoryHigh", "needs a GPU (the gpu profile); the cpu profile has none"),
    Reason("LLMKVCacheSaturated", "needs the LLM's KV cache filled for 5 min; on the cpu profile the engine "
           "queues long before, and the load needed would starve every other route"),
    Reason("LLMTimeToFirstTokenHigh", "needs 5 min of slow first tokens; no fault hook on the LLM app yet"),
    Reason("ServeReplicaMemoryGrowing", "needs 30 min of sustained growth past 1 GiB an hour"),
    Reason("ServeReplicaMemoryHigh", "needs a replica over 6 GiB resident for 5 min: more than the cpu "
           "profile's memory lets a replica hold"),
    Reason("RayNodeMemoryHigh", "needs the node over 85% for 5 min; oom passes through it faster "
           "(Ray's monitor kills at 95%)"),
    Reason("ServeDeploymentBelowTarget", "needs a deployment short of its target for 5 min; every "
           "experiment's replica comes back within that"),
    Reason("ServeRequestQueueBuildup", "needs over 20 requests queued at one deployment for 2 min"),
    Reason("RayScrapeSlow", "needs Ray's /metrics near the scrape timeout: a label-cardinality blow-up "
           "(ray-project/ray#62088) this stack cannot make without a synthetic exporter"),
    Reason("RayTargetSeriesGrowth", "needs Ray's series count far above its own 1 h baseline"),
    Reason("RayStaleReplicaSeries", "needs more than `alerting.stale_replicas_max` (5) gone replicas of one "
           "deployment whose series Ray still exports (ray-project/ray#65892); one scorecard run replaces "
           "at most three of any deployment"),
)


def reason_for(identity: Identity) -> str | None:
    return next((r.why for r in REASONS if r.applies(identity)), None)
