"""Dashboards as data: the generator renders these, and the live test runs every query in them."""

from __future__ import annotations

from dataclasses import dataclass, field

from stack import cluster_labels

# Metrics a healthy local stack does not export (yet), and why; every other name a dashboard or rule
# uses must exist in a live Prometheus after a short mixed load.
NO_GPU = "serveops_gpu_* exist only where NVML sees a GPU"
EVENT_ONLY_METRICS = {
    "ray_memory_manager_worker_eviction_total": "created by Ray's memory monitor's first kill",
    "ray_serveops_model_load_failures_total": "created by the first failed model load",
    "ray_serve_health_check_failures_total": "created by the first failed health check",
    "serveops_gpu_memory_used_bytes": NO_GPU,
    "serveops_gpu_memory_total_bytes": NO_GPU,
    "serveops_gpu_utilization_ratio": NO_GPU,
    "serveops_gpu_power_watts": NO_GPU,
    "serveops_gpu_temperature_celsius": NO_GPU,
    "ray_serve_num_http_error_requests_total": "created by the first request Serve answers with an error",
    "ray_serve_deployment_error_counter_total": "created by the first exception a replica raises",
    # vLLM's Ray wrapper skips inc(0): no series until a prompt reuses a full cached KV block.
    "ray_vllm_prefix_cache_hits_total": "created by vLLM's first prefix-cache hit; short prompts never hit",
}

# Families Ray's Serve, Serve Deployment, Serve LLM and default dashboards chart that ours leave out on
# purpose (full-name patterns -> why). tests/test_dashboard_parity.py fails on any other family Ray
# charts, the stack exports, and no serveops panel reads.
LEFT_OUT_OF_RAY_DASHBOARDS: dict[str, str] = {
    r"autoscaler_\w+": "exported by Ray's autoscaler, which the stack does not run (fixed-size cluster; "
                       "KubeRay scales pods); node counts come from ray_cluster_active_nodes",
    r"ray_node_(gpus|gram|gpu)_\w+|ray_component_gpu_\w+":
        "GPU: charted from our NVML exporter (serveops_gpu_*, serveops / Resources) instead",
    r"ray_tpu_\w+": "TPU: the stack runs on none",
    r"ray_serve_(num_grpc_\w+|grpc_request_latency_ms|num_ongoing_grpc_requests)":
        "Serve's gRPC ingress, which the stack does not enable (HTTP only)",
    r"ray_node_manager_unexpected_worker_failure_total":
        "created only by a worker's unexpected death; replica deaths show as restarts (Replicas seen in "
        "15m) and memory kills as ray_memory_manager_worker_eviction_total",
    r"ray_serve_registered_multiplexed_model_id":
        "one series per tenant model id, unbounded with tenants; models per replica and load/unload "
        "rates carry the signal",
    r"ray_serve_num_scheduling_tasks_in_backoff":
        "exported only once a router has backed off (no replica could take a request, as while a "
        "deployment scales up from zero); ray_serve_num_scheduling_tasks, charted, grows then too",
    r"ray_vllm_num_requests_swapped": "vLLM V0 only: vLLM v1 preempts by recompute and exports no such gauge",
    r"ray_vllm_(nixl_\w+|kv_offload_\w+|external_prefix_cache_\w+)":
        "KV-connector metrics (NIXL for disaggregated prefill, KV offloading): the stack sets no "
        "kv_transfer_config, so vLLM never creates them",
}

# Filters the panels share; the dashboard variables fill them. Every query filters on the cluster
# (stack/cluster_labels.py): on a Grafana that sees several Ray clusters a panel shows the chosen ones.
CLUSTER = f'{cluster_labels.CLUSTER}=~"$cluster",{cluster_labels.NAMESPACE}=~"$namespace"'
APP = CLUSTER + ',application=~"$application"'
# Serve's HTTP series of user requests: with the HAProxy ingress, its health checks of every ingress
# replica (/-/healthz, /-/routes) are counted as requests too.
HTTP = APP + ',route!~"/-/.*"'
DEP = APP + ',deployment=~"$deployment"'
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str
    exemplar: bool = False  # Grafana draws the series' exemplars (trace ids) as points


@dataclass(frozen=True)
class PanelSpec:
    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"  # or "stat"
    runbook: str | None = None  # the alert this panel is the picture of
    # Why a panel may be empty on a healthy local stack (e.g. no GPU, no error yet); None: never empty.
    event_only: str | None = None


@dataclass(frozen=True)
class DashboardSpec:
    uid: str
    title: str
    description: str
    panels: tuple[PanelSpec, ...]
    variables: tuple[str, ...] = ("application", "deployment")  # after cluster and namespace, which all have
    tags: tuple[str, ...] = field(default=("serveops",))


def q(expr: str, legend: str, exemplar: bool = False) -> Query:
    return Query(expr, legend, exemplar)


def quantiles(metric: str, by: str, flt: str, scale: str = "") -> tuple[Query, ...]:
    """p50, p95 and p99 of a histogram, one series per `by` value."""
    return tuple(
        q(f"histogram_quantile({p}, sum by (le, {by}) (rate({metric}_bucket{{{flt}}}[{RATE}]))){scale}",
          f"p{int(p * 100)} {{{{{by}}}}}")
        for p in (0.5, 0.95, 0.99)
    )
