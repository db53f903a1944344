"""The serveops dashboards. Metric names are checked against a live Prometheus by the tests."""

from __future__ import annotations

from dashboards.spec import APP, DEP, HTTP, NO_GPU, RATE, DashboardSpec, PanelSpec, q, quantiles
from stack.config import OpsConfig

REPLICAS = 'Component=~"ray::ServeReplica.*"'


def serve_overview() -> DashboardSpec:
    return DashboardSpec("serveops-serve", "serveops / Serve overview",
                         "Traffic, errors, latency and replicas of every Serve application.", (
        PanelSpec("Requests per second by route", "HTTP requests Serve answered, by route.", "reqps",
                  (q(f"sum by (route) (rate(ray_serve_num_http_requests_total{{{HTTP}}}[{RATE}]))", "{{route}}"),)),
        PanelSpec("5xx ratio by route", "Share of requests that failed with a server error; the error SLO.",
                  "percentunit",
                  (q(f'sum by (route) (rate(ray_serve_num_http_requests_total{{{HTTP},status_code=~"5.."}}[{RATE}]))'
                     f" / sum by (route) (rate(ray_serve_num_http_requests_total{{{HTTP}}}[{RATE}]))", "{{route}}"),),
                  runbook="ServeErrorBudgetBurn",
                  event_only="no route fails with a 5xx on a clean run"),
        PanelSpec("HTTP latency p95 by route", "End-to-end latency at Serve's ingress, 95th percentile.", "ms",
                  (q(f"histogram_quantile(0.95, sum by (le, route) "
                     f"(rate(ray_serve_http_request_latency_ms_bucket{{{HTTP}}}[{RATE}])))", "{{route}}"),),
                  runbook="ServeLatencyBudgetBurn"),
        PanelSpec("Requests by outcome", "serveops' count of requests by outcome and error class.", "reqps",
                  (q(f"sum by (route, outcome, error_class) (rate(ray_serveops_requests_total{{{APP}}}[{RATE}]))",
                     "{{route}} {{outcome}} {{error_class}}"),)),
        PanelSpec("Healthy replicas by deployment", "Replicas passing their health check.", "short",
                  (q(f"sum by (application, deployment) (ray_serve_deployment_replica_healthy{{{DEP}}})",
                     "{{application}}/{{deployment}}"),), runbook="ServeReplicaUnhealthy"),
        PanelSpec("Ongoing requests at replicas", "Requests a deployment's replicas are working on.", "short",
                  (q(f"sum by (application, deployment) (ray_serve_num_ongoing_requests_at_replicas{{{DEP}}})",
                     "{{application}}/{{deployment}}"),)),
    ))


def deployment() -> DashboardSpec:
    return DashboardSpec("serveops-deployment", "serveops / Deployment",
                         "One deployment: load, latency, queueing, replicas and restarts.", (
        PanelSpec("Requests per second", "Requests the deployment's replicas handled.", "reqps",
                  (q(f"sum by (deployment) (rate(ray_serve_deployment_request_counter_total{{{DEP}}}[{RATE}]))",
                     "{{deployment}}"),)),
        PanelSpec("Processing latency", "Time a replica spent on each request.", "ms",
                  quantiles("ray_serve_deployment_processing_latency_ms", "deployment", DEP)),
        PanelSpec("Queued requests", "Requests waiting at handles for a replica.", "short",
                  (q(f"sum by (deployment) (ray_serve_deployment_queued_queries{{{DEP}}})", "{{deployment}}"),),
                  runbook="ServeRequestQueueBuildup"),
        PanelSpec("Replicas: healthy and target", "Healthy replicas against the autoscaler's target.", "short",
                  (q(f"sum by (deployment) (ray_serve_deployment_replica_healthy{{{DEP}}})", "healthy {{deployment}}"),
                   q(f"max by (deployment) (ray_serve_autoscaling_target_replicas{{{DEP}}})",
                     "target {{deployment}}")), runbook="ServeDeploymentBelowTarget"),
        PanelSpec("Replica target changes", "How often the autoscaler changed its target; flapping shows here.",
                  "short",
                  (q(f"max by (deployment) (changes(ray_serve_autoscaling_target_replicas{{{DEP}}}[30m]))",
                     "{{deployment}}"),), runbook="ServeAutoscalerOscillation"),
        PanelSpec("Replicas seen in 15m", "Distinct replicas that ran in the last 15 minutes of this Ray "
                  "session; above the target means replicas were replaced.", "short",
                  (q(f"count by (deployment, SessionName) (max_over_time(ray_serve_deployment_replica_healthy{{{DEP}}}[15m]))",
                     "{{deployment}}"),), runbook="ServeReplicaRestarts"),
        PanelSpec("Health-check latency", "Time replicas take to answer health checks.", "ms",
                  quantiles("ray_serve_health_check_latency_ms", "deployment", DEP)[1:2]),
    ))


def llm(ops: OpsConfig) -> DashboardSpec:
    model = 'model_name=~"$model"'
    return DashboardSpec("serveops-llm", "serveops / LLM",
                         "vLLM behind ray.serve.llm: latency per token, throughput, queueing and KV cache.", (
        PanelSpec("Time to first token (engine)", "vLLM's TTFT, from the engine's own histogram.", "s",
                  quantiles("ray_vllm_time_to_first_token_seconds", "model_name", model),
                  runbook="LLMTimeToFirstTokenHigh"),
        PanelSpec("Time to first token (Serve ingress)", "TTFT as the Serve ingress sees it; the gap to "
                  "the engine's is proxying and queueing.", "ms",
                  quantiles("ray_serveops_llm_ttft_ms", "model", APP)),
        PanelSpec("Inter-token latency", "Time between output tokens of a streamed response.", "s",
                  quantiles("ray_vllm_inter_token_latency_seconds", "model_name", model)),
        PanelSpec("End-to-end request latency", "vLLM's full request latency.", "s",
                  quantiles("ray_vllm_e2e_request_latency_seconds", "model_name", model)),
        PanelSpec("Tokens per second", "Prompt and generated tokens processed per second.", "short",
                  (q(f"sum by (model_name) (rate(ray_vllm_generation_tokens_total{{{model}}}[{RATE}]))",
                     "generated {{model_name}}"),
                   q(f"sum by (model_name) (rate(ray_vllm_prompt_tokens_total{{{model}}}[{RATE}]))",
                     "prompt {{model_name}}"))),
        PanelSpec("Running and waiting requests", "Requests in the engine's batch, and queued for it.", "short",
                  (q(f"sum by (model_name) (ray_vllm_num_requests_running{{{model}}})", "running {{model_name}}"),
                   q(f"sum by (model_name) (ray_vllm_num_requests_waiting{{{model}}})", "waiting {{model_name}}"))),
        PanelSpec("KV cache usage", "Share of the KV cache in use.", "percentunit",
                  (q(f"max by (model_name) (ray_vllm_kv_cache_usage_perc{{{model}}})", "{{model_name}}"),),
                  runbook="LLMKVCacheSaturated"),
        PanelSpec("Preemptions", "Preemptions per second, for lack of KV cache.", "ops",
                  (q(f"sum by (model_name) (rate(ray_vllm_request_num_preemptions_sum{{{model}}}[{RATE}]))",
                     "{{model_name}}"),)),
        PanelSpec("Tokens per request", "Prompt and completion tokens per request, at the ingress.", "short",
                  (q(f"sum by (model) (rate(ray_serveops_llm_prompt_tokens_sum{{{APP}}}[{RATE}])) / "
                     f"sum by (model) (rate(ray_serveops_llm_prompt_tokens_count{{{APP}}}[{RATE}]))", "prompt {{model}}"),
                   q(f"sum by (model) (rate(ray_serveops_llm_completion_tokens_sum{{{APP}}}[{RATE}])) / "
                     f"sum by (model) (rate(ray_serveops_llm_completion_tokens_count{{{APP}}}[{RATE}]))",
                     "completion {{model}}"))),
    ), variables=("application", "model"))


def batching() -> DashboardSpec:
    emb = 'application=~"$application",deployment=~"$deployment"'
    return DashboardSpec("serveops-batching", "serveops / BERT batching",
                         "@serve.batch on the Embedder: batch sizes, waits, execution, and padding.", (
        PanelSpec("Mean batch size", "Texts per executed batch.", "short",
                  (q(f"sum by (deployment) (rate(ray_serve_actual_batch_size_sum{{{emb}}}[{RATE}])) / "
                     f"sum by (deployment) (rate(ray_serve_actual_batch_size_count{{{emb}}}[{RATE}]))",
                     "{{deployment}}"),)),
        PanelSpec("Batch wait time", "Time the first request of a batch waited for the batch to fill.", "ms",
                  quantiles("ray_serve_batch_wait_time_ms", "deployment", emb)[1:]),
        PanelSpec("Batch execution time", "Time to run one batch through the model.", "ms",
                  quantiles("ray_serve_batch_execution_time_ms", "deployment", emb)[1:]),
        PanelSpec("Batch utilization", "Batch size as a share of max_batch_size.", "percent",
                  (q(f"sum by (deployment) (rate(ray_serve_batch_utilization_percent_sum{{{emb}}}[{RATE}])) / "
                     f"sum by (deployment) (rate(ray_serve_batch_utilization_percent_count{{{emb}}}[{RATE}]))",
                     "{{deployment}}"),)),
        PanelSpec("Padding ratio", "Padded tokens / all tokens per batch: compute spent on padding.",
                  "percentunit",
                  (q(f"sum by (deployment) (rate(ray_serveops_batch_padding_ratio_sum{{{emb}}}[{RATE}])) / "
                     f"sum by (deployment) (rate(ray_serveops_batch_padding_ratio_count{{{emb}}}[{RATE}]))",
                     "{{deployment}}"),)),
        PanelSpec("Input tokens per request", "Tokens per request by route.", "short",
                  (q(f"sum by (route) (rate(ray_serveops_input_tokens_sum{{{APP}}}[{RATE}])) / "
                     f"sum by (route) (rate(ray_serveops_input_tokens_count{{{APP}}}[{RATE}]))", "{{route}}"),)),
        PanelSpec("Predicted labels", "Classifier predictions per second by label; a shift is drift.", "reqps",
                  (q(f"sum by (label) (rate(ray_serveops_predictions_total{{{APP}}}[{RATE}]))", "{{label}}"),)),
        PanelSpec("Classifier confidence", "Median confidence of the predicted label.", "percentunit",
                  quantiles("ray_serveops_classifier_confidence", "label", APP)[:1]),
    ))


def multiplexing() -> DashboardSpec:
    return DashboardSpec("serveops-multiplexing", "serveops / Multiplexing",
                         "Per-tenant models through @serve.multiplexed: cache, loads, tiers.", (
        PanelSpec("Models loaded per replica", "Models in each replica's cache.", "short",
                  (q(f"max by (deployment, replica) (ray_serve_num_multiplexed_models{{{DEP}}})",
                     "{{deployment}} {{replica}}"),)),
        PanelSpec("Model loads and evictions", "Loads and LRU unloads per second.", "ops",
                  (q(f"sum by (deployment) (rate(ray_serve_multiplexed_models_load_counter_total{{{DEP}}}[{RATE}]))",
                     "loads {{deployment}}"),
                   q(f"sum by (deployment) (rate(ray_serve_multiplexed_models_unload_counter_total{{{DEP}}}[{RATE}]))",
                     "unloads {{deployment}}"))),
        PanelSpec("Model load latency", "Time to load a model into a replica.", "ms",
                  quantiles("ray_serve_multiplexed_model_load_latency_ms", "deployment", DEP)[1:2]),
        PanelSpec("Requests by tenant tier", "Multiplexed requests per second by tier and outcome.", "reqps",
                  (q(f"sum by (tier, outcome) (rate(ray_serveops_tenant_requests_total{{{APP}}}[{RATE}]))",
                     "{{tier}} {{outcome}}"),)),
        PanelSpec("Latency by tenant tier", "95th percentile latency by tier.", "ms",
                  quantiles("ray_serveops_tenant_latency_ms", "tier", APP)[1:2]),
        PanelSpec("Model load failures", "Model loads that raised.", "short",
                  (q(f"sum by (model_kind) (increase(ray_serveops_model_load_failures_total{{{APP}}}[{RATE}]))",
                     "{{model_kind}}"),), event_only="exists only once a model load has failed"),
    ))


def resources() -> DashboardSpec:
    return DashboardSpec("serveops-resources", "serveops / Resources",
                         "Memory and CPU of every replica, the node, and the GPUs.", (
        PanelSpec("Replica resident memory", "RSS of each Serve replica process.", "decmbytes",
                  (q(f"sum by (Component, pid) (ray_component_rss_mb{{{REPLICAS}}})", "{{Component}} {{pid}}"),),
                  runbook="ServeReplicaMemoryHigh"),
        PanelSpec("Replica memory growth", "RSS change per hour over 30 minutes; a leak stays positive.",
                  "decmbytes",
                  (q(f"deriv(ray_component_rss_mb{{{REPLICAS}}}[30m]) * 3600", "{{Component}} {{pid}}"),),
                  runbook="ServeReplicaMemoryGrowing"),
        PanelSpec("Replica CPU", "CPU of each Serve replica process.", "percent",
                  (q(f"sum by (Component, pid) (ray_component_cpu_percentage{{{REPLICAS}}})", "{{Component}} {{pid}}"),)),
        PanelSpec("Node memory", "Memory used on each Ray node; the memory monitor kills from 95%.",
                  "percentunit",
                  (q("sum by (instance) (ray_node_mem_used) / sum by (instance) (ray_node_mem_total)", "{{instance}}"),),
                  runbook="RayNodeMemoryHigh"),
        PanelSpec("GCS requests per second", "Requests the head's GCS answers; zero means it is stopped or "
                  "cut off.", "reqps",
                  (q('sum(rate(ray_grpc_server_req_finished_total{Component="gcs_server"}[$__rate_interval]))',
                     "GCS"),), runbook="RayGCSUnreachable"),
        PanelSpec("Worker kills for memory", "Workers Ray's memory monitor killed.", "short",
                  (q("sum by (Name) (ray_memory_manager_worker_eviction_total)", "{{Name}}"),),
                  runbook="ServeReplicaOOMKilled", event_only="exists only after Ray's memory monitor has killed"),
        PanelSpec("GPU memory", "GPU memory used, as a share of the card.", "percentunit",
                  (q("serveops_gpu_memory_used_bytes / serveops_gpu_memory_total_bytes", "GPU {{gpu}}"),),
                  runbook="GPUMemoryHigh", event_only=NO_GPU),
        PanelSpec("GPU utilization and power", "Kernel-busy share and power draw.", "percentunit",
                  (q("serveops_gpu_utilization_ratio", "util GPU {{gpu}}"),), event_only=NO_GPU),
    ), variables=("application",))


def slo(ops: OpsConfig) -> DashboardSpec:
    panels = []
    for s in ops.slos:
        sel = f'{{slo="{s.name}"}}'
        panels.append(PanelSpec(
            f"{s.name}: error budget burn", f"Error ratio of {s.route} as a multiple of its budget "
            f"({s.error_budget:.3%}); 1 spends it exactly over the SLO period.", "short",
            (q(f"serveops:slo_errors:ratio_rate1h{sel} / {s.error_budget:g}", "1h"),
             q(f"serveops:slo_errors:ratio_rate6h{sel} / {s.error_budget:g}", "6h")),
            runbook="ServeErrorBudgetBurn"))
        panels.append(PanelSpec(
            f"{s.name}: latency budget burn", f"Share of {s.route} requests slower than "
            f"{s.latency_objective_ms:g} ms, as a multiple of its budget ({s.latency_budget:.1%}).", "short",
            (q(f"serveops:slo_slow:ratio_rate1h{sel} / {s.latency_budget:g}", "1h"),
             q(f"serveops:slo_slow:ratio_rate6h{sel} / {s.latency_budget:g}", "6h")),
            runbook="ServeLatencyBudgetBurn"))
        panels.append(PanelSpec(
            f"{s.name}: error budget left (3d)", "Share of the error budget not spent over the last 3 days.",
            "percentunit", (q(f"1 - serveops:slo_errors:ratio_rate3d{sel} / {s.error_budget:g}", "left"),),
            kind="stat"))
    return DashboardSpec("serveops-slo", "serveops / SLOs and error budgets",
                         "Each route's SLO from stack/ops.yaml: burn rates and budget left.", tuple(panels),
                         variables=())


def all_dashboards(ops: OpsConfig) -> list[DashboardSpec]:
    return [serve_overview(), deployment(), llm(ops), batching(), multiplexing(), resources(), slo(ops)]
