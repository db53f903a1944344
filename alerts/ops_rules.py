"""Operational alerts: replicas, autoscaling, queues, scrape targets, memory, the LLM engine, GPUs.

Each expression reads metrics Ray 2.60, vLLM or our exporters really export (a live test checks
every name). Thresholds come from `alerting:` in the ops config.
"""

from __future__ import annotations

from typing import Any

from alerts.rule import alert
from stack.config import OpsConfig

DEP = "application, deployment"
REPLICA_RSS = 'ray_component_rss_mb{Component=~"ray::ServeReplica.*"}'
GCS_RPCS = 'ray_grpc_server_req_finished_total{Component="gcs_server"}'


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


def ops_alerts(ops: OpsConfig, base: str) -> list[dict[str, Any]]:
    gcs_window = f"{max(30, 4 * ops.observability.scrape_interval_s)}s"
    a = ops.alerting
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
              f"sum by ({DEP}, replica) (\n{rise('ray_serve_health_check_failures_total', '2m')}\n) >= 2",
              "0m", "critical", "A Serve replica fails its health check.",
              "{{ $labels.application }}/{{ $labels.deployment }} replica {{ $labels.replica }} missed "
              "{{ $value }} health checks in 2 minutes.", base),
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
              f"changes(ray_serve_autoscaling_target_replicas[30m]) >= {a.oscillation_changes_30m}",
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
        alert("RayMetricsAbsent", 'absent(up{job="ray"})', "2m", "critical",
              "Prometheus has no Ray metrics target at all.",
              "No {{ $labels.job }} target in service discovery: the head is down, or Prometheus "
              "cannot read Ray's service-discovery file.", base),
        # The GCS answers raylets' heartbeats and resource reports all the time; silence means it is
        # stopped, partitioned or gone.
        # A short rate window (four scrapes, at least 30s) so a silent GCS pages within about a minute.
        alert("RayGCSUnreachable",
              f"sum(rate({GCS_RPCS}[{gcs_window}])) == 0\nor\nabsent({GCS_RPCS})", "30s", "critical",
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
              f'1 - (\n  sum by (model_name) (rate(ray_vllm_time_to_first_token_seconds_bucket'
              f'{{le="{a.llm_ttft_objective_s}"}}[5m]))\n  /\n'
              f"  sum by (model_name) (rate(ray_vllm_time_to_first_token_seconds_count[5m]))\n)"
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
