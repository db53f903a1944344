"""What each alert's bound needs from the stack: the window term's inputs per kind (live).

Burn rates read the route's traffic around the fault from Prometheus; the health-check bound reads
the target deployment's settings from the ops config's profile; the oscillation bound reads the
experiment's square-wave period. Anything missing leaves the bound open ("no bound"), never a pass.
"""

from __future__ import annotations

from dataclasses import dataclass

from alerts.slo_rules import BURN_RATES
from chaos.experiment import EXPERIMENTS_DIR, Experiment, parse
from scorecard import history
from scorecard.bounds import HealthCheck, Inputs, bound
from scorecard.history import Labels, Source
from scorecard.model import Bound, ChaosRun, Identity, Pipeline
from scorecard.rules import BURN_ALERTS, route_of, seconds
from stack.config import OpsConfig, Profile

SERVE_HEALTH_DEFAULTS = (10.0, 30.0)  # Serve's health_check_period_s and health_check_timeout_s


def experiment(name: str) -> Experiment | None:
    path = EXPERIMENTS_DIR / f"{name}.yaml"
    return parse(path) if path.exists() else None


def health(profile: Profile | None, app: str | None, deployment: str | None) -> HealthCheck | None:
    if app is None or deployment is None:
        return None
    opts = (profile.apps.get(app) or {}).get(deployment) if profile else None
    period, timeout = SERVE_HEALTH_DEFAULTS
    if opts is None:
        return HealthCheck(period, timeout)
    return HealthCheck(opts.health_check_period_s or period, opts.health_check_timeout_s or timeout,
                       getattr(opts, "watchdog_s", None))


@dataclass
class LiveBounds:
    """bound_for of measure.detections against the live stack."""

    ops: OpsConfig
    source: Source
    pipeline: Pipeline
    profile: Profile | None

    def __call__(self, identity: Identity, run: ChaosRun, labels: Labels, detect_s: float | None) -> Bound:
        return bound(identity, self.inputs(identity, run, labels, detect_s), self.pipeline)

    def inputs(self, identity: Identity, run: ChaosRun, labels: Labels, detect_s: float | None) -> Inputs:
        exp = experiment(run.experiment)
        if identity.alert in BURN_ALERTS:
            return self.burn(identity, run, labels, detect_s, exp)
        if identity.alert == "ServeReplicaUnhealthy":
            app = labels.get("application") or (exp.target.app if exp else None)
            dep = labels.get("deployment") or (exp.target.deployment if exp else None)
            return Inputs(health=health(self.profile, app, dep))
        if identity.alert == "ServeReplicaRestarts":
            return self.replacement(run, labels, detect_s, exp)
        if identity.alert == "ServeAutoscalerOscillation" and exp and "period_s" in exp.timings:
            mode = "short" if run.mode == "short" else "normal"
            return Inputs(changes=self.ops.alerting.oscillation_changes_30m,
                          period_s=exp.timing("period_s", mode))
        return Inputs()

    def replacement(self, run: ChaosRun, labels: Labels, detect_s: float | None,
                    exp: Experiment | None) -> Inputs:
        """The deployment's health checks, and the mean startup latency of its replicas started between
        the fault and the detection (Serve's controller exports it per deployment)."""
        app = labels.get("application") or (exp.target.app if exp else None)
        dep = labels.get("deployment") or (exp.target.deployment if exp else None)
        fault = run.fault_at
        if app is None or dep is None or fault is None or detect_s is None:
            return Inputs(health=health(self.profile, app, dep))
        span = round(detect_s + 2 * self.ops.observability.scrape_interval_s)
        sel = f'{{application="{app}",deployment="{dep}"}}'
        expr = (f"sum(increase(ray_serve_replica_startup_latency_ms_sum{sel}[{span}s])) / "
                f"sum(increase(ray_serve_replica_startup_latency_ms_count{sel}[{span}s]))")
        try:
            found = self.source.instant(expr, fault + span)
        except Exception:  # Prometheus could not say: the bound stays open
            found = []
        startup = found[0][1] / 1000 if found and found[0][1] == found[0][1] else None  # NaN: none started
        return Inputs(health=health(self.profile, app, dep), startup_s=startup)

    def burn(self, identity: Identity, run: ChaosRun, labels: Labels, detect_s: float | None,
             exp: Experiment | None) -> Inputs:
        long_w, short_w = identity.labels.get("long_window"), identity.labels.get("short_window")
        pair = (identity.severity, long_w, short_w)
        rate = next((b for b in BURN_RATES if (b.severity, b.long, b.short) == pair), None)
        route = route_of(identity, labels, {s.name: s.route for s in self.ops.slos},
                         exp.load.route if exp else None)
        slo = self.ops.slo_for(route) if route else None
        fault = run.fault_at
        if rate is None or slo is None or fault is None:
            return Inputs()
        latency = identity.alert == "ServeLatencyBudgetBurn"
        budget = slo.latency_budget if latency else slo.error_budget
        until = fault + detect_s if detect_s is not None else run.marks.get("healed", fault + 60)
        obs = self.ops.observability
        try:
            t = history.traffic(self.source, slo.route, fault, until, seconds(rate.long), seconds(rate.short),
                                slo.latency_objective_ms if latency else None,
                                min_span_s=max(30.0, 3 * obs.scrape_interval_s))
        except Exception:  # Prometheus could not say: the bound stays open
            return Inputs(threshold=rate.factor * budget)
        return Inputs(traffic=t, threshold=rate.factor * budget, long_s=seconds(rate.long),
                      short_s=seconds(rate.short))
