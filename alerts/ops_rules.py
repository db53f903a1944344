"""Operational alerts: replicas, autoscaling, queues, scrape targets, memory, the LLM engine, GPUs,
and the metrics pipeline itself (stale series, slow scrapes, series growth, missing families).

Each expression reads metrics Ray 2.60, vLLM or our exporters really export (a live test checks
every name). Thresholds come from `alerting:` in the ops config.

Every aggregation and match keeps the cluster labels (stack/cluster_labels.py): on a Prometheus that
scrapes several Ray clusters, each alert is one cluster's, never a sum that hides one in the others.
"""

from __future__ import annotations

from typing import Any

from alerts import required_metrics, slo_rules
from alerts.rule import alert
from stack import queries
from stack.cluster_labels import BY
from stack.config import OpsConfig

DEP = f"{BY}, application, deployment"
REPLICA = f"{DEP}, replica"
REPLICA_RSS = 'ray_component_rss_mb{Component=~"ray::ServeReplica.*"}'
GCS_RPCS = 'ray_grpc_server_req_finished_total{Component="gcs_server"}'
UP = 'up{job="ray"}'


def new_series(metric: str, window: str) -> str:
    """A counter rose within the window, or first appeared in it (a new series starts at its value,
    which increase() cannot see)."""
    return f"({metric} - ({metric} offset {window}) > 0)\nor\n({metric} unless ({metric} offset {window}))"


def rise(metric: str, window: str) -> str:
    """How much a counter rose within the window; a series born in it rose by its whole value."""
    return f"({metric} - ({metric} offset {window}))\nor\n({metric} unless ({metric} offset {window}))"


def replica_restarts(step_s: int) -> str:
    """Replicas seen alive in 15m beyond what the target explains.

    Seen: the healthy gauge, which Ray exports for live replicas only (replica_starts_total keeps a
    dead replica's series for the whole session and would latch the alert). Explained: the target
    15m ago plus every rise of the target since (a scale-up, or a scale-from-zero), and never less
    than the highest target: a fresh deploy's replicas are not restarts. Per Ray session.
    Oscillation (scale down, then up again) is explained, and has its own alert.
    """
    by = f"{DEP}, SessionName"
    def target(offset: str = "") -> str:
        return f"max by ({by}) (ray_serve_autoscaling_target_replicas{offset})"

    seen = f"count by ({by}) (max_over_time(ray_serve_deployment_replica_healthy[15m]))"
    highest = f"max by ({by}) (max_over_time(ray_serve_autoscaling_target_replicas[15m]))"
    rises = f"sum_over_time(clamp_min({target()} - {target(f' offset {step_s}s')}, 0)[15m:{step_s}s])"
    # A deployment younger than the window has no target 15m ago: count its highest instead.
    at_start = f"({target(' offset 15m')} or {highest})"
    return (f"{seen}\n> on ({by}) {highest}\nand on ({by})\n"
            f"{seen}\n> on ({by}) ({at_start} + on ({by}) ({rises} or ({highest} * 0)))")


def stalled(window: str) -> str:
    """Live replicas that had requests in flight for most of the window and completed none.

    Most of the window (the median of the in-flight gauge), not all of it: a client that gives up
    cancels its hung request, and the replica sits at zero until the router sends it the next one.
    Completed: Serve's request counter, which counts successes only (failures and cancellations go
    to its error counter), so requests that end as cancelled are no progress; a series born in the
    window counts by its whole value. Live: the healthy gauge, which Ray drops with the replica (a
    dead replica's counters stay exported and must not count), now and a window ago: a replica
    younger than the window has not had the time to complete anything (a cold start's first load).
    """
    live = f"max by ({REPLICA}) (ray_serve_deployment_replica_healthy"
    in_flight = f"quantile_over_time(0.5, ray_serve_replica_processing_queries[{window}])"
    return (f"max by ({REPLICA}) ({in_flight}) > 0\n"
            f"and on ({REPLICA})\n{live}) == 1\n"
            f"and on ({REPLICA})\n{live} offset {window})\n"
            f"unless on ({REPLICA})\n"
            f"sum by ({REPLICA}) (\n{rise('ray_serve_deployment_request_counter_total', window)}\n) > 0")


def stale_replica_series(most: int) -> str:
    """Deployments with more than `most` gone replicas whose counters Ray still exports: no healthy
    gauge (ray-project/ray#65892). Per deployment and over a count, not per replica: Ray 2.60 keeps
    every gone replica's series for the session, so a per-replica alert would fire after each
    replacement or scale-down and never resolve."""
    return (f"count by ({DEP}) (\ngroup by ({REPLICA}) (ray_serve_deployment_replica_starts_total)\n"
            f"unless on ({REPLICA})\nray_serve_deployment_replica_healthy\n) > {most}")


def gcs_silent(window: str) -> str:
    """Per cluster: its GCS answers nothing, or it has Ray targets but no GCS series at all (its head
    is gone). That branch carries the Component label absent() gives, so on the local stack the two
    are one series, one alert. absent() stays for a Prometheus with no Ray target at all: no series
    is left to name a cluster."""
    missing = (f'label_replace(group by ({BY}) ({UP}) unless on ({BY}) group by ({BY}) ({GCS_RPCS}), '
               '"Component", "gcs_server", "", "")')
    return f"sum by ({BY}) (rate({GCS_RPCS}[{window}])) == 0\nor\n{missing}\nor\nabsent({GCS_RPCS})"


def series_growth(factor: float, floor: int) -> str:
    """Samples per scrape above the target's own baseline: its highest in the hour before last. Only
    for a target scraped two hours ago, so a fresh stack's start-up is no baseline."""
    now = 'scrape_samples_scraped{job="ray"}'
    baseline = f"max_over_time({now}[1h] offset 1h)"
    return (f"{now} > {factor:g} * {baseline}\nand\n{now} > {floor} + {baseline}\n"
            f"and\n{now} offset 2h")


def metric_missing(ops: OpsConfig, base: str, others: list[dict[str, Any]]) -> dict[str, Any]:
    """Critical: a missing family blinds the pages that read it (ServeReplicaStalled, ServeDeploymentFailed,
    RayGCSUnreachable...) while nothing else says so. Per cluster, and only while every Ray target of
    the cluster answers: a target that is down or gone has its own alerts, and would otherwise page
    once per family. For 3m: a starting stack exports every family within a minute of its first
    replica."""
    names, _ = required_metrics.classify(ops, others)
    expr = required_metrics.absent_expr(names, UP, f"min by ({BY}) ({UP}) == 1")
    return alert("RayMetricMissing", expr, "3m", "critical",
                 "A metric the rules or dashboards need is missing.",
                 "No Ray target exports {{ $labels.metric }} while every one answers: the alerts and "
                 "panels that read it see nothing. Renamed upstream, or dropped by a relabel rule.", base)


def ops_alerts(ops: OpsConfig, base: str) -> list[dict[str, Any]]:
    rules = _ops_alerts(ops, base)
    others = slo_rules.recording_rules(ops) + slo_rules.alerting_rules(ops, base) + rules
    return [*rules, metric_missing(ops, base, others)]


def _ops_alerts(ops: OpsConfig, base: str) -> list[dict[str, Any]]:
    gcs_window = f"{max(30, 4 * ops.observability.scrape_interval_s)}s"
    obs, a = ops.observability, ops.alerting
    stall = f"{a.stall_window_s}s"
    return [
        alert("ServeReplicaRestarts", replica_restarts(ops.observability.scrape_interval_s),
              "0m", "warning", "Serve replaced replicas of a deployment.",
              "{{ $labels.application }}/{{ $labels.deployment }}: {{ $value }} replicas ran in 15 minutes, "
              "more than its target and scale-ups explain: replicas crashed, failed health checks or were "
              "redeployed.",
              base),
        alert("ServeReplicaOOMKilled", new_series("ray_memory_manager_worker_eviction_total", "10m"),
              "0m", "critical", "Ray's memory monitor killed a worker.",
              "{{ $labels.Name }} was killed for memory within the last 10 minutes.", base),
        # On the misses Serve's controller counts, not the healthy gauge: Serve replaces a replica after
        # 3 misses in a row and stops exporting its gauge, so `healthy == 0` rarely lasts a scrape
        # (seen in chaos hung-replica). Two misses in 2m: a hung replica, not one slow answer.
        alert("ServeReplicaUnhealthy",
              f"sum by ({REPLICA}) (\n{rise('ray_serve_health_check_failures_total', '2m')}\n) >= 2",
              "0m", "critical", "A Serve replica fails its health check.",
              "{{ $labels.application }}/{{ $labels.deployment }} replica {{ $labels.replica }} missed "
              "{{ $value }} health checks in 2 minutes.", base),
        alert("ServeReplicaStalled", stalled(stall), "1m", "critical",
              "A Serve replica holds requests and completes none.",
              "{{ $labels.application }}/{{ $labels.deployment }} replica {{ $labels.replica }} has had "
              f"requests in flight (median {{{{ $value }}}}) for {a.stall_window_s}s and completed none, "
              "while it passes its health check: its handler is stuck. Replace the replica.", base),
        alert("RayStaleReplicaSeries", stale_replica_series(a.stale_replicas_max), "5m", "warning",
              "Ray still exports the series of many replicas that are gone.",
              "{{ $labels.application }}/{{ $labels.deployment }}: Ray exports the counters of {{ $value }} "
              "gone replicas (no healthy gauge): counts over replicas include them, and the target grows "
              "with each replacement (ray-project/ray#65892) until the Ray session restarts.", base),
        alert("ServeDeploymentBelowTarget",
              f"max by ({DEP}) (ray_serve_autoscaling_target_replicas)\n"
              f"- on ({DEP})\n(sum by ({DEP}) (ray_serve_deployment_replica_healthy) or "
              f"max by ({DEP}) (ray_serve_autoscaling_target_replicas) * 0)\n> 0",
              "5m", "warning", "A deployment runs fewer healthy replicas than its target.",
              "{{ $labels.application }}/{{ $labels.deployment }} is {{ $value }} replicas short "
              "of its target.", base),
        # ray_serve_deployment_status: 1 is DEPLOY_FAILED (0 unknown ... 6 healthy).
        alert("ServeDeploymentFailed", "ray_serve_deployment_status == 1", "0m", "critical",
              "A deployment failed to deploy.",
              "{{ $labels.application }}/{{ $labels.deployment }} is DEPLOY_FAILED: its new replicas do not "
              "start. Roll back to the last good config.", base),
        alert("ServeAutoscalerOscillation",
              f"{queries.target_changes('30m', obs.scrape_interval_s)} >= {a.oscillation_changes_30m}",
              "0m", "warning", "The autoscaler keeps changing a deployment's replica target.",
              "{{ $labels.application }}/{{ $labels.deployment }}: the target changed {{ $value }} times "
              "in 30 minutes.", base),
        alert("ServeRequestQueueBuildup",
              f"sum by ({DEP}) (ray_serve_deployment_queued_queries) > {a.queue_depth:g}",
              "2m", "warning", "Requests queue up in front of a deployment.",
              "{{ $labels.application }}/{{ $labels.deployment }}: {{ $value }} requests waiting for "
              "a replica.", base),
        alert("RayMetricsTargetDown", 'up{job="ray"} == 0', "1m", "critical",
              "Prometheus cannot scrape a Ray metrics endpoint.",
              "{{ $labels.instance }} has not answered scrapes for a minute.", base),
        # Global: a cluster with no target left has no series to carry its labels.
        alert("RayMetricsAbsent", f"absent({UP})", "2m", "critical",
              "Prometheus has no Ray metrics target at all.",
              "No {{ $labels.job }} target in service discovery: the head is down, or Prometheus "
              "cannot read Ray's service-discovery file.", base),
        alert("RayScrapeSlow",
              f'scrape_duration_seconds{{job="ray"}} > {a.scrape_slow_ratio * obs.scrape_timeout_s:g}', "5m",
              "warning", "Prometheus' scrapes of a Ray target come close to the scrape timeout.",
              "{{ $labels.instance }} takes {{ $value | humanizeDuration }} per scrape, over "
              f"{a.scrape_slow_ratio:.0%} of the {obs.scrape_timeout_s:g}s timeout: past it scrapes fail and "
              "every metric of the target has gaps (ray-project/ray#62088).", base),
        alert("RayTargetSeriesGrowth", series_growth(a.series_growth_factor, a.series_growth_floor), "10m",
              "warning", "A Ray target exports far more series than it used to.",
              "{{ $labels.instance }} exports {{ $value }} samples per scrape, over "
              f"{a.series_growth_factor:g}x and {a.series_growth_floor} more than its highest in the hour "
              "before last: label cardinality or stale series are growing, and scrapes slow down.", base),
        # The GCS answers raylets' heartbeats and resource reports all the time; silence means it is
        # stopped, partitioned or gone.
        # A short rate window (four scrapes, at least 30s) so a silent GCS pages within about a minute.
        alert("RayGCSUnreachable",
              gcs_silent(gcs_window), "30s", "critical",
              "The Ray head's GCS answers no requests.",
              "GCS request rate {{ $value }}/s for 30 seconds: the head or its GCS is down, stopped or "
              "cut off; Serve keeps serving, but nothing can be deployed, scaled or recovered.", base),
        alert("RayNodeMemoryHigh", f"ray_node_mem_used / ray_node_mem_total > {a.node_memory_ratio:g}", "5m",
              "warning", "A Ray node's memory is nearly full.",
              "{{ $labels.instance }} uses {{ $value | humanizePercentage }} of its memory; Ray's memory "
              "monitor kills workers from 95%.", base),
        alert("ServeReplicaMemoryHigh", f"{REPLICA_RSS} > {a.replica_rss_high_mb:g}", "5m", "warning",
              "A Serve replica's resident memory is high.",
              "{{ $labels.Component }} (pid {{ $labels.pid }}) holds {{ $value | humanize }} MB.", base),
        alert("ServeReplicaMemoryGrowing",
              f"deriv({REPLICA_RSS}[30m]) * 3600 > {a.replica_rss_growth_mb_per_h:g}", "30m", "warning",
              "A Serve replica's memory keeps growing.",
              "{{ $labels.Component }} (pid {{ $labels.pid }}) grows by {{ $value | humanize }} MB "
              "an hour.", base),
        alert("LLMTimeToFirstTokenHigh",
              f'1 - (\n  sum by ({BY}, model_name) (rate(ray_vllm_time_to_first_token_seconds_bucket'
              f'{{le="{a.llm_ttft_objective_s}"}}[5m]))\n  /\n'
              f"  sum by ({BY}, model_name) (rate(ray_vllm_time_to_first_token_seconds_count[5m]))\n)"
              f" > {a.llm_ttft_slow_ratio:g}",
              "5m", "warning", "Too many LLM requests wait long for their first token.",
              f"{{{{ $labels.model_name }}}}: {{{{ $value | humanizePercentage }}}} of requests took over "
              f"{a.llm_ttft_objective_s:g}s to the first token.", base),
        alert("LLMKVCacheSaturated", f"ray_vllm_kv_cache_usage_perc > {a.kv_cache_usage_ratio:g}", "5m",
              "warning", "The LLM engine's KV cache is nearly full.",
              "{{ $labels.model_name }}: KV cache {{ $value | humanizePercentage }} used; requests will "
              "queue or be preempted.", base),
        alert("GPUMemoryHigh",
              "serveops_gpu_memory_used_bytes / serveops_gpu_memory_total_bytes"
              f" > {a.gpu_memory_ratio:g}", "10m", "warning", "A GPU's memory is nearly full.",
              "GPU {{ $labels.gpu }} ({{ $labels.name }}) is {{ $value | humanizePercentage }} full.", base),
    ]
