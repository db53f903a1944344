"""`make preflight`: the guide's production checklist against the ops config and, when up, the live stack.

One function per checklist item, each taking a Context and returning a Result. Live sources (the Ray
dashboard for cluster resources, Prometheus for loaded rules and measured shutdown times) are read
once; one that does not answer is None, and the items say what they could not check. Exit 1 when
any item FAILs.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Literal

import httpx
import yaml
from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema

from stack import ROOT, prom, resources
from stack.artifacts import RULES_FILE
from stack.config import OPS_PATH, OPS_PATH_ENV, OpsConfig, Profile, load
from stack.local import ray_head, rollout
from stack.profile import select
from stack.resources import GIB

Status = Literal["PASS", "FAIL", "N/A"]
GPU_MEMORY_UTILIZATION = (0.80, 0.85)
HEADROOM = 0.80  # deployments at max_replicas may take this share of the cluster
MIN_DOWNSCALE_DELAY_S = 300
REQUIRED_ALERTS = {
    "p99 latency": ("ServeLatencyBudgetBurn",),
    "error rate": ("ServeErrorBudgetBurn",),
    "memory": ("ServeReplicaMemoryHigh", "RayNodeMemoryHigh", "ServeReplicaOOMKilled"),
}
# Ray 2.60's measurements of how long a replica (or a multiplexed model) takes to go away.
UNLOAD_METRICS = ("ray_serve_replica_shutdown_duration_ms", "ray_serve_multiplexed_model_unload_latency_ms")
UNLOAD_WINDOW = "2d"  # all Prometheus keeps (monitoring.start): replicas stop rarely


@dataclass(frozen=True)
class Result:
    status: Status
    reason: str  # names the deployment and value at fault
    item: str = ""  # the checklist line; evaluate() fills it in


@dataclass(frozen=True)
class Live:
    """What the running stack said; None where a source did not answer."""

    cluster: dict[str, float] | None = None  # CPU, GPU, memory over alive nodes, as ray.cluster_resources()
    alert_rules: set[str] | None = None  # alerting rules Prometheus has loaded
    # "app/deployment" -> (worst seconds, metric), a histogram bucket bound.
    unload_s: dict[str, tuple[float, str]] | None = None


@dataclass(frozen=True)
class Context:
    ops: OpsConfig
    profile_name: str
    live: Live = field(default_factory=Live)
    rules_file: Path = RULES_FILE
    last_good: Path = rollout.LAST_GOOD

    @property
    def profile(self) -> Profile:
        return self.ops.profile(self.profile_name)

    @property
    def has_gpus(self) -> bool:
        return self.profile.cluster.num_gpus != 0  # None: Ray detects them (the gpu profile)

    @cached_property
    def deployments(self) -> list[resources.Deployment]:
        """Every deployment Serve runs, the LLM ingress included: what item 3 adds up."""
        return resources.deployments(self.profile)

    @cached_property
    def configured(self) -> list[resources.Deployment]:
        """The deployments whose options the ops config sets, the ones items 1, 4, 5 and 6 check. The
        ingress runs at ray.serve.llm's defaults but for max_ongoing_requests; its resources still count."""
        return [d for d in self.deployments if not d.ingress]


def _amount(resource: str, value: float) -> str:
    return f"{value / GIB:.3g} GiB" if resource == "memory" else f"{value:g}"


def _values(xs: list[float]) -> str:
    return "/".join(f"{x:g}" for x in sorted(set(xs)))


def resources_declared(ctx: Context) -> Result:
    keys = {"num_cpus": "CPU", "memory": "memory", **({"num_gpus": "GPU"} if ctx.has_gpus else {})}
    missing = []
    for d in ctx.configured:
        actor = d.options.ray_actor_options or {}
        # An LLM may declare them in its engine's bundles (LLMConfig's defaults follow tensor_parallel_size).
        bundles = d.engine_bundles
        absent = [k for k, res in keys.items() if k not in actor and not any(res in b for b in bundles)]
        if absent:
            missing.append(f"{d.name} ({', '.join(absent)})")
    wanted = ", ".join(keys) + ("" if ctx.has_gpus else f" (profile {ctx.profile_name} has no GPU)")
    if missing:
        return Result("FAIL", f"no {wanted} declared for: {'; '.join(missing)}")
    return Result("PASS", f"{wanted} declared for all {len(ctx.configured)} deployments")


def gpu_memory_utilization(ctx: Context) -> Result:
    if not ctx.has_gpus:
        return Result("N/A", f"profile {ctx.profile_name} has num_gpus 0: vLLM's CPU backend sizes its KV "
                             "cache from VLLM_CPU_KVCACHE_SPACE, not gpu_memory_utilization")
    low, high = GPU_MEMORY_UTILIZATION
    values = {m.model_id: m.engine_kwargs.get("gpu_memory_utilization") for m in ctx.profile.llm.models}
    bad = [f"{mid}: {v if v is not None else 'unset (vLLM default 0.9)'}" for mid, v in values.items()
           if v is None or not low <= v <= high]
    text = ", ".join(f"{mid} {v}" for mid, v in values.items())
    if bad:
        return Result("FAIL", f"gpu_memory_utilization outside {low}-{high}: {'; '.join(bad)}")
    return Result("PASS", f"gpu_memory_utilization within {low}-{high}: {text}")


def _cluster_total(ctx: Context) -> tuple[str, dict[str, float]]:
    """Where the cluster's size comes from, and the size: the live cluster, else the profile's settings."""
    if ctx.live.cluster is not None:
        return "live Ray cluster", ctx.live.cluster
    c = ctx.profile.cluster
    sized = {k: float(v) for k, v in (("CPU", c.num_cpus), ("GPU", c.num_gpus)) if v is not None}
    return f"profile {ctx.profile_name}'s cluster settings (stack not reachable)", sized


def max_replicas_headroom(ctx: Context) -> Result:
    need = sum((d.replica * d.max_replicas for d in ctx.deployments), resources.NONE).resources()
    parts = [f"{d.name} {d.max_replicas}x("
             f"{', '.join(f'{k} {_amount(k, v)}' for k, v in d.replica.resources().items() if v)})"
             for d in ctx.deployments]
    source, total = _cluster_total(ctx)
    compared, unknown, over = [], [], []
    for key, needed in need.items():
        if key not in total:
            if needed:
                unknown.append(f"{key} {_amount(key, needed)} (cluster's unknown: Ray detects it at start)")
            continue
        if not needed and not total[key]:
            continue
        cap = HEADROOM * total[key]
        line = (f"{key} {_amount(key, needed)} {'<=' if needed <= cap else '>'} "
                f"80% of {_amount(key, total[key])} = {_amount(key, cap)}")
        (over if needed > cap else compared).append(line)
    arithmetic = f"sum of max_replicas x per-replica reservation: {'; '.join(parts)}"
    if over:
        return Result("FAIL", f"over 80% of the {source}: {'; '.join(over)} ({arithmetic})")
    if not compared:
        return Result("N/A", f"no cluster size to compare with: {'; '.join(unknown)} ({arithmetic})")
    return Result("PASS", f"fits 80% of the {source}: {'; '.join(compared + unknown)} ({arithmetic})")


def downscale_delay(ctx: Context) -> Result:
    fixed, ok, bad = [], [], []
    for d in ctx.configured:
        low, high, cfg = d.min_replicas, d.max_replicas, d.autoscaling
        if cfg is None or high <= low:
            fixed.append(f"{d.name} ({low}..{high})")
            continue
        delays = {"downscale_delay_s": cfg.downscale_delay_s}
        if low == 0:  # the last replica goes after downscale_to_zero_delay_s, when set
            to_zero = cfg.downscale_to_zero_delay_s
            delays["downscale_to_zero_delay_s"] = cfg.downscale_delay_s if to_zero is None else to_zero
        unset = "" if "downscale_delay_s" in (d.options.autoscaling_config or {}) else " (Serve's default)"
        text = f"{d.name} {low}..{high}: " + ", ".join(f"{k} {v:g} s" for k, v in delays.items()) + unset
        (bad if min(delays.values()) < MIN_DOWNSCALE_DELAY_S else ok).append(text)
    fixed_text = f"fixed size (min_replicas == max_replicas), nothing to scale down: {', '.join(fixed)}"
    if bad:
        return Result("FAIL", f"below {MIN_DOWNSCALE_DELAY_S} s: {'; '.join(bad)}")
    if not ok:
        return Result("N/A", f"no deployment can scale; {fixed_text}")
    rest = f"; {fixed_text}" if fixed else ""
    return Result("PASS", f">= {MIN_DOWNSCALE_DELAY_S} s: {'; '.join(ok)}{rest}")


def health_checks(ctx: Context) -> Result:
    deps = ctx.configured
    fields = ("health_check_period_s", "health_check_timeout_s")
    missing = [f"{d.name} ({', '.join(f for f in fields if getattr(d.options, f) is None)})"
               for d in deps if any(getattr(d.options, f) is None for f in fields)]
    if missing:
        return Result("FAIL", f"not set (Serve's defaults apply): {'; '.join(missing)}")
    values = {f: [getattr(d.options, f) for d in deps] for f in fields}
    text = ", ".join(f"{f} {_values(vs)} s" for f, vs in values.items())
    return Result("PASS", f"set on all {len(deps)} deployments: {text}")


def graceful_shutdown(ctx: Context) -> Result:
    deps = ctx.configured
    unset = [d.name for d in deps if d.options.graceful_shutdown_timeout_s is None]
    if unset:
        return Result("FAIL", "graceful_shutdown_timeout_s not set (Serve's default 20 s, whatever the model "
                              f"needs): {', '.join(unset)}")
    timeouts = {d.name: float(d.options.graceful_shutdown_timeout_s or 0) for d in deps}
    configured = f"graceful_shutdown_timeout_s {_values(list(timeouts.values()))} s"
    measured = ctx.live.unload_s
    if measured is None:
        return Result("N/A", f"{configured}; unload time not measured: Prometheus not reachable (stack down)")
    seen = {label: measured[label] for label in timeouts if label in measured}
    if not seen:
        return Result("N/A", f"{configured}; unload time not measured: no replica of these deployments "
                             f"stopped in Prometheus' last {UNLOAD_WINDOW} ({', '.join(UNLOAD_METRICS)})")
    # Same bound, metric and timeout read as one line.
    groups: dict[str, list[str]] = {}
    for label, (seconds, metric) in seen.items():
        key = f"median {seconds:.1f} s vs timeout {timeouts[label]:g} s ({metric})"
        groups.setdefault(key, []).append(label)
    lines = [f"{text}: {', '.join(labels)}" for text, labels in groups.items()]
    # Half the shutdowns reaching the timeout: replicas are cut off mid-unload as a rule.
    over = [f"{label} took a median {seen[label][0]:.1f} s ({seen[label][1]}), timeout {timeouts[label]:g} s"
            for label in seen if seen[label][0] >= timeouts[label]]
    unseen = [label for label in timeouts if label not in seen]
    rest = f"; not measured: {', '.join(unseen)}" if unseen else ""
    if over:
        return Result("FAIL", f"not shorter than graceful_shutdown_timeout_s: {'; '.join(over)}{rest}")
    return Result("PASS", f"measured over Prometheus' last {UNLOAD_WINDOW} (interpolated in buckets): "
                          f"{'; '.join(lines)}{rest}")


def _rule_alerts(path: Path) -> set[str]:
    groups = (yaml.safe_load(path.read_text()) or {}).get("groups") or []
    return {r["alert"] for g in groups for r in g.get("rules") or [] if "alert" in r}


def alerts_exist(ctx: Context) -> Result:
    rel = ctx.rules_file.relative_to(ROOT) if ctx.rules_file.is_relative_to(ROOT) else ctx.rules_file
    in_file = _rule_alerts(ctx.rules_file) if ctx.rules_file.exists() else set()
    wanted = [name for names in REQUIRED_ALERTS.values() for name in names]
    problems = [f"missing from {rel}: {', '.join(n for n in wanted if n not in in_file)}"] \
        if not set(wanted) <= in_file else []
    loaded = ctx.live.alert_rules
    if loaded is not None and not set(wanted) <= loaded:
        problems.append(f"not loaded by Prometheus: {', '.join(n for n in wanted if n not in loaded)}")
    if loaded is None and ctx.live.cluster is not None:
        problems.append("the stack is up but Prometheus does not answer, so no rule is evaluated")
    if problems:
        return Result("FAIL", "; ".join(problems))
    kinds = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in REQUIRED_ALERTS.items())
    where = (f"in {rel} and loaded by Prometheus ({len(loaded)} alerts)" if loaded is not None
             else f"in {rel} (Prometheus not reachable: loaded rules not checked)")
    return Result("PASS", f"{kinds} {where}")


def rollback_config(ctx: Context) -> Result:
    path = ctx.last_good
    if not path.exists():
        return Result("FAIL", f"no rollback config at {path}: rollout.roll_out keeps it when a rollout "
                              "reaches RUNNING (`make up`)")
    try:
        schema = ServeDeploySchema.model_validate(yaml.safe_load(path.read_text()))
    except (ValidationError, yaml.YAMLError) as err:
        return Result("FAIL", f"{path} is not a valid Serve config: {str(err).splitlines()[0]}")
    apps = ", ".join(a.name for a in schema.applications)
    return Result("PASS", f"{path} validates as a Serve config (applications: {apps})")


ITEMS: list[tuple[str, Callable[[Context], Result]]] = [
    ("1. resources declared (num_cpus, num_gpus, memory)", resources_declared),
    ("2. gpu_memory_utilization 0.80-0.85", gpu_memory_utilization),
    ("3. max_replicas leaves 20% headroom", max_replicas_headroom),
    ("4. downscale_delay_s >= 300 s", downscale_delay),
    ("5. health checks set", health_checks),
    ("6. graceful_shutdown_timeout_s exceeds model unload time", graceful_shutdown),
    ("7. p99 latency, error-rate and memory alerts", alerts_exist),
    ("8. rollback config kept", rollback_config),
]


def evaluate(ctx: Context) -> list[Result]:
    results = []
    for title, check in ITEMS:
        try:
            r = check(ctx)
        except Exception as err:  # a config Serve would refuse is a FAIL to report, not a crash
            r = Result("FAIL", f"could not evaluate: {type(err).__name__}: {err}")
        results.append(replace(r, item=title))
    return results


def _cluster(ops: OpsConfig) -> dict[str, float] | None:
    try:
        nodes = ray_head.alive_nodes(ops.targets.ray_dashboard_url)
        alive = [n.get("resources_total") or {} for n in nodes]
    except (httpx.HTTPError, ValueError, KeyError):
        return None
    return {k: sum(float(n.get(k, 0)) for n in alive) for k in ("CPU", "GPU", "memory")}


def _prometheus(ops: OpsConfig) -> tuple[set[str] | None, dict[str, tuple[float, str]] | None]:
    try:
        groups = prom.api(ops, "/api/v1/rules", type="alert")["groups"]
        unload: dict[str, tuple[float, str]] = {}
        for metric in UNLOAD_METRICS:
            # The median, not the maximum: a hung replica (killed at the timeout by design) must not
            # read as a model that needs longer to unload.
            # Pooled over every series (controllers, Ray sessions) of the deployment in the window.
            expr = (f"histogram_quantile(0.5, sum by (application, deployment, le) "
                    f"(max_over_time({metric}_bucket[{UNLOAD_WINDOW}])))")
            for s in prom.api(ops, "/api/v1/query", query=expr)["result"]:
                label = f"{s['metric']['application']}/{s['metric']['deployment']}"
                seconds = float(s["value"][1]) / 1000
                if not math.isnan(seconds) and seconds > unload.get(label, (-1.0, ""))[0]:
                    unload[label] = (seconds, metric)
    except (httpx.HTTPError, ValueError, KeyError):
        return None, None
    return {r["name"] for g in groups for r in g["rules"]}, unload


def gather(ops: OpsConfig) -> Live:
    alert_rules, unload = _prometheus(ops)
    return Live(cluster=_cluster(ops), alert_rules=alert_rules, unload_s=unload)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rules", type=Path, default=RULES_FILE, help="alert rules file to check")
    parser.add_argument("--last-good", type=Path, default=rollout.LAST_GOOD, help="rollback config to check")
    args = parser.parse_args(argv)
    ops, profile = load(), select()
    live = gather(ops)
    t = ops.targets
    print(f"preflight: profile {profile}, ops config {os.environ.get(OPS_PATH_ENV) or OPS_PATH}")
    cluster = (", ".join(f"{k} {_amount(k, v)}" for k, v in live.cluster.items()) if live.cluster is not None
               else "not reachable")
    rules = f"{len(live.alert_rules)} alerts loaded" if live.alert_rules is not None else "not reachable"
    print(f"live: Ray cluster at {t.ray_dashboard_url}: {cluster}; Prometheus at {t.prometheus_url}: {rules}")
    results = evaluate(Context(ops, profile, live, args.rules, args.last_good))
    for r in results:
        print(f"{r.status:<4}  {r.item}\n      {r.reason}")
    counts = {s: sum(r.status == s for r in results) for s in ("PASS", "FAIL", "N/A")}
    print("preflight: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
