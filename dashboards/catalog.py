"""The serveops dashboards. Metric names are checked against a live Prometheus by the tests."""

from __future__ import annotations

from dashboards.spec import APP, CLUSTER, DEP, HTTP, NO_GPU, RATE, DashboardSpec, PanelSpec, q, quantiles
from stack import queries
from stack.config import OpsConfig

REPLICAS = CLUSTER + ',Component=~"ray::ServeReplica.*"'


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
        # Ray's pipeline drops exemplars: this histogram comes from our own exporter (docs/observability.md).
        PanelSpec("Latency p95 by route, with traces", "Latency at the ingress replica, 95th percentile. "
                  "Each point is a sampled request's trace id: `make traces TRACE_ID=<id>`, or open it in "
                  "your tracing data source.", "ms",
                  (q(f"histogram_quantile(0.95, sum by (le, route) "
                     f"(rate(serveops_request_latency_ms_bucket{{{HTTP}}}[{RATE}])))", "{{route}}", exemplar=True),),
                  runbook="ServeLatencyBudgetBurn"),
        PanelSpec("Requests by outcome", "serveops' count of requests by outcome and error class.", "reqps",
                  (q(f"sum by (route, outcome, error_class) (rate(ray_serveops_requests_total{{{APP}}}[{RATE}]))",
                     "{{route}} {{outcome}} {{error_class}}"),)),
        PanelSpec("Healthy replicas by deployment", "Replicas passing their health check.", "short",
                  (q(f"sum by (application, deployment) (ray_serve_deployment_replica_healthy{{{DEP}}})",
                     "{{application}}/{{deployment}}"),), runbook="ServeReplicaUnhealthy"),
        # Handles count what they sent; under the haproxy_ingress lever no handle sends to an ingress
        # deployment, so only the replicas' own count sees those requests (docs/levers.md).
        PanelSpec("Ongoing requests at replicas", "Requests a deployment's replicas are working on, as the "
                  "replicas count them, and as the DeploymentHandles that sent them count them.", "short",
                  (q(f"sum by (application, deployment) (ray_serve_replica_processing_queries{{{DEP}}})",
                     "{{application}}/{{deployment}}"),
                   q(f"sum by (application, deployment) (ray_serve_num_ongoing_requests_at_replicas{{{DEP}}})",
                     "via handles {{application}}/{{deployment}}"))),
        PanelSpec("HTTP errors by route and code", "Requests Serve answered with an error, by route and "
                  "status code.", "reqps",
                  (q(f"sum by (route, error_code) (rate(ray_serve_num_http_error_requests_total{{{HTTP}}}[{RATE}]))",
                     "{{route}} {{error_code}}"),),
                  event_only="the error counter exists only once a request has failed"),
        # The proxy's gauge has no application label: it counts every route the proxy holds open.
        PanelSpec("Ongoing HTTP requests at the proxies", "Requests each Serve proxy holds open, all "
                  "applications together.", "short",
                  (q(f"sum by (node_ip_address) (ray_serve_num_ongoing_http_requests{{{CLUSTER}}})", "{{{{node_ip_address}}}}"),)),
        PanelSpec("Controller control loop duration", "Time the Serve controller takes per reconciliation "
                  "loop; a slow loop delays scaling, restarts and routing updates.", "s",
                  (q(f"max(ray_serve_controller_control_loop_duration_s{{{CLUSTER}}})", "control loop"),)),
        # num_control_loops is a running count exported as a gauge: rate() still reads it as one.
        PanelSpec("Controller control loops per second", "How often the Serve controller completes a loop; "
                  "near zero means it is stuck or gone.", "ops",
                  (q(f"sum(rate(ray_serve_controller_num_control_loops{{{CLUSTER}}}[{RATE}]))", "loops"),)),
    ))


def deployment(ops: OpsConfig) -> DashboardSpec:
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
                  (q(f"max by (deployment) ({queries.target_changes('30m', ops.observability.scrape_interval_s, DEP)})",
                     "{{deployment}}"),), runbook="ServeAutoscalerOscillation"),
        PanelSpec("Replicas seen in 15m", "Distinct replicas that ran in the last 15 minutes of this Ray "
                  "session; above the target means replicas were replaced.", "short",
                  (q(f"count by (deployment, SessionName) (max_over_time(ray_serve_deployment_replica_healthy{{{DEP}}}[15m]))",
                     "{{deployment}}"),), runbook="ServeReplicaRestarts"),
        PanelSpec("Health-check latency", "Time replicas take to answer health checks.", "ms",
                  quantiles("ray_serve_health_check_latency_ms", "deployment", DEP)[1:2]),
        PanelSpec("Requests processing per replica", "Requests each replica is executing now; uneven "
                  "replicas point at routing or a slow replica.", "short",
                  (q(f"sum by (deployment, replica) (ray_serve_replica_processing_queries{{{DEP}}})",
                     "{{deployment}} {{replica}}"),)),
        PanelSpec("Replica errors by exception", "Requests that raised in a replica, by exception type.",
                  "reqps",
                  (q(f"sum by (deployment, exception_type) "
                     f"(rate(ray_serve_deployment_error_counter_total{{{DEP}}}[{RATE}]))",
                     "{{deployment}} {{exception_type}}"),),
                  event_only="the error counter exists only once a replica has raised"),
        # Ray's backoff gauge (serve_num_scheduling_tasks_in_backoff) is exported only once a router
        # has backed off, so it is left out (dashboards/spec.py); this one says the same when it grows.
        PanelSpec("Requests being routed at handles", "Requests a DeploymentHandle is still choosing a "
                  "replica for; growing when every replica is full.", "short",
                  (q(f"sum by (deployment) (ray_serve_num_scheduling_tasks{{{DEP}}})", "routing {{deployment}}"),)),
    ))


def llm(ops: OpsConfig) -> DashboardSpec:
    model = CLUSTER + ',model_name=~"$model"'
    goodput = "ray_serveops_llm_goodput_total"
    return DashboardSpec("serveops-llm", "serveops / LLM",
                         "vLLM behind ray.serve.llm: goodput, latency per token, throughput, queueing and KV "
                         "cache.", (
        PanelSpec("Goodput", "Share of requests that succeeded with their first token and their stream "
                  "within the model's objectives (llm_goodput in stack/ops.yaml), judged at the ingress.",
                  "percentunit",
                  (q(f'sum by (model) (rate({goodput}{{{APP},verdict="good"}}[{RATE}])) / '
                     f"sum by (model) (rate({goodput}{{{APP}}}[{RATE}]))", "{{model}}"),),
                  runbook="LLMGoodputBudgetBurn"),
        PanelSpec("Requests not good, by reason", "ttft: first token late; tpot: slow stream; e2e: a "
                  "non-streamed answer late; error: failed.", "reqps",
                  (q(f'sum by (model, reason) (rate({goodput}{{{APP},verdict="bad"}}[{RATE}]))',
                     "{{model}} {{reason}}"),),
                  runbook="LLMGoodputBudgetBurn",
                  event_only="no request misses its goodput objectives on a clean run"),
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
        PanelSpec("Time per output token (TPOT)", "Mean time per generated token of each finished request, "
                  "from the engine.", "s",
                  quantiles("ray_vllm_request_time_per_output_token_seconds", "model_name", model)),
        # Queue + prefill is the engine's TTFT; decode is the rest of the request.
        PanelSpec("TTFT split: queue, prefill, decode (p95)", "Where a request's time goes in the engine: "
                  "waiting for the scheduler, the prefill, then decoding.", "s",
                  tuple(q(f"histogram_quantile(0.95, sum by (le, model_name) "
                          f"(rate(ray_vllm_request_{phase}_time_seconds_bucket{{{model}}}[{RATE}])))",
                          f"{phase} {{{{model_name}}}}")
                        for phase in ("queue", "prefill", "decode"))),
        PanelSpec("Prefix cache hit rate", "Share of prompt tokens served from vLLM's prefix cache.",
                  "percentunit",
                  (q(f"sum by (model_name) (rate(ray_vllm_prefix_cache_hits_total{{{model}}}[{RATE}])) / "
                     f"sum by (model_name) (rate(ray_vllm_prefix_cache_queries_total{{{model}}}[{RATE}]))",
                     "{{model_name}}"),),
                  event_only="the hit counter exists only after a first prefix-cache hit"),
        PanelSpec("Prefix cache queries and hits", "Prompt tokens looked up in the prefix cache, and those "
                  "found, per second.", "short",
                  (q(f"sum by (model_name) (rate(ray_vllm_prefix_cache_queries_total{{{model}}}[{RATE}]))",
                     "queried {{model_name}}"),
                   q(f"sum by (model_name) (rate(ray_vllm_prefix_cache_hits_total{{{model}}}[{RATE}]))",
                     "hit {{model_name}}"))),
        PanelSpec("Finished requests by reason", "Requests the engine finished per second: stop (EOS or a "
                  "stop string), length (max_tokens), abort (client gone), error.", "reqps",
                  (q(f"sum by (model_name, finished_reason) "
                     f"(rate(ray_vllm_request_success_total{{{model}}}[{RATE}]))",
                     "{{model_name}} {{finished_reason}}"),)),
        PanelSpec("Prompt and generation length", "Tokens per request in the prompt and in the answer, "
                  "p50 and p95, from the engine.", "short",
                  tuple(q(f"histogram_quantile({p}, sum by (le, model_name) "
                          f"(rate(ray_vllm_request_{kind}_tokens_bucket{{{model}}}[{RATE}])))",
                          f"{kind} p{int(p * 100)} {{{{model_name}}}}")
                        for kind in ("prompt", "generation") for p in (0.5, 0.95))),
        # A total over a stated period, not a rate: the window is 24h whatever the time range.
        PanelSpec("Tokens in the last 24 hours", "Prompt and generated tokens per model over the last 24 "
                  "hours.", "short",
                  (q(f"sum by (model_name) (increase(ray_vllm_prompt_tokens_total{{{model}}}[24h]))",
                     "prompt {{model_name}}"),
                   q(f"sum by (model_name) (increase(ray_vllm_generation_tokens_total{{{model}}}[24h]))",
                     "generated {{model_name}}")),
                  kind="stat"),
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
    emb = DEP
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
        PanelSpec("Model unload latency", "Time to unload (evict) a model from a replica.", "ms",
                  quantiles("ray_serve_multiplexed_model_unload_latency_ms", "deployment", DEP)[1:2]),
        # Every get_model call that did not load was served from the replica's cache.
        PanelSpec("Model cache hit rate", "Share of model lookups a replica served without loading.",
                  "percentunit",
                  (q(f"1 - sum by (deployment) (rate(ray_serve_multiplexed_models_load_counter_total{{{DEP}}}[{RATE}]))"
                     f" / sum by (deployment) "
                     f"(rate(ray_serve_multiplexed_get_model_requests_counter_total{{{DEP}}}[{RATE}]))",
                     "{{deployment}}"),)),
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
                  (q(f"sum by (instance) (ray_node_mem_used{{{CLUSTER}}}) / sum by (instance) (ray_node_mem_total{{{CLUSTER}}})", "{{instance}}"),),
                  runbook="RayNodeMemoryHigh"),
        PanelSpec("GCS requests per second", "Requests the head's GCS answers; zero means it is stopped or "
                  "cut off.", "reqps",
                  (q(f'sum(rate(ray_grpc_server_req_finished_total{{{CLUSTER},Component="gcs_server"}}[{RATE}]))',
                     "GCS"),), runbook="RayGCSUnreachable"),
        PanelSpec("Worker kills for memory", "Workers Ray's memory monitor killed.", "short",
                  (q(f"sum by (Name) (ray_memory_manager_worker_eviction_total{{{CLUSTER}}})", "{{Name}}"),),
                  runbook="ServeReplicaOOMKilled", event_only="exists only after Ray's memory monitor has killed"),
        PanelSpec("GPU memory", "GPU memory used, as a share of the card.", "percentunit",
                  (q(f"serveops_gpu_memory_used_bytes{{{CLUSTER}}} / serveops_gpu_memory_total_bytes{{{CLUSTER}}}", "GPU {{gpu}}"),),
                  runbook="GPUMemoryHigh", event_only=NO_GPU),
        PanelSpec("GPU utilization and power", "Kernel-busy share and power draw.", "percentunit",
                  (q(f"serveops_gpu_utilization_ratio{{{CLUSTER}}}", "util GPU {{gpu}}"),), event_only=NO_GPU),
        PanelSpec("GPU power", "Power each GPU draws.", "watt",
                  (q(f"serveops_gpu_power_watts{{{CLUSTER}}}", "GPU {{gpu}}"),), event_only=NO_GPU),
        PanelSpec("GPU temperature", "Each GPU's temperature; clocks throttle near the card's limit.",
                  "celsius",
                  (q(f"serveops_gpu_temperature_celsius{{{CLUSTER}}}", "GPU {{gpu}}"),), event_only=NO_GPU),
    ), variables=("application",))


def cluster() -> DashboardSpec:
    # Node and cluster series carry no application label: these panels take the cluster variables only.
    used = 'State="USED"'
    logical = CLUSTER + ',Name=~"CPU|GPU|memory"'
    return DashboardSpec("serveops-cluster", "serveops / Cluster nodes",
                         "The Ray nodes under Serve: CPU, memory, disk, network, object store, and Ray's "
                         "tasks, actors and placement groups.", (
        PanelSpec("Active nodes by type", "Ray nodes alive, by node type.", "short",
                  (q(f"sum by (node_type) (ray_cluster_active_nodes{{{CLUSTER}}})", "{{node_type}}"),)),
        PanelSpec("Node CPU usage", "CPU busy on each node, all cores together.", "percent",
                  (q(f"max by (instance) (ray_node_cpu_utilization{{{CLUSTER}}})", "{{instance}}"),)),
        PanelSpec("Node CPU cores: used and available", "Cores busy on each node against its cores.",
                  "short",
                  (q(f"sum by (instance) (ray_node_cpu_utilization{{{CLUSTER}}} * ray_node_cpu_count{{{CLUSTER}}}) / 100", "used {{instance}}"),
                   q(f"sum by (instance) (ray_node_cpu_count{{{CLUSTER}}})", "available {{instance}}"))),
        # In a container the cgroup limit, not the host, is what the OOM killer enforces.
        PanelSpec("Node memory: host and cgroup", "Memory used on each node's host and in its cgroup, "
                  "against their totals.", "bytes",
                  (q(f"sum by (instance) (ray_node_mem_used_host{{{CLUSTER}}})", "host used {{instance}}"),
                   q(f"sum by (instance) (ray_node_mem_total_host{{{CLUSTER}}})", "host total {{instance}}"),
                   q(f"sum by (instance) (ray_node_cgroup_mem_used{{{CLUSTER}}})", "cgroup used {{instance}}"),
                   q(f"sum by (instance) (ray_node_cgroup_mem_total{{{CLUSTER}}})", "cgroup total {{instance}}"))),
        PanelSpec("Memory by component", "Private memory (RSS less shared) of each Ray component and "
                  "replica, and the node's shared memory (the object store's /dev/shm).", "bytes",
                  (q(f"sum by (Component) (ray_component_rss_bytes{{{CLUSTER}}}) - sum by (Component) (ray_component_shared_bytes{{{CLUSTER}}})",
                     "{{Component}}"),
                   q(f"sum(ray_node_mem_shared_bytes{{{CLUSTER}}})", "shared (node)"))),
        PanelSpec("Node disk usage", "Share of each node's disk in use; Ray spills objects and writes "
                  "logs there.", "percentunit",
                  (q(f"sum by (instance) (ray_node_disk_usage{{{CLUSTER}}}) / (sum by (instance) (ray_node_disk_usage{{{CLUSTER}}}) + "
                     f"sum by (instance) (ray_node_disk_free{{{CLUSTER}}}))", "{{instance}}"),)),
        PanelSpec("Node disk IO", "Bytes read and written per second on each node.", "Bps",
                  (q(f"sum by (instance) (ray_node_disk_io_read_speed{{{CLUSTER}}})", "read {{instance}}"),
                   q(f"sum by (instance) (ray_node_disk_io_write_speed{{{CLUSTER}}})", "write {{instance}}"))),
        PanelSpec("Node network", "Bytes received and sent per second on each node.", "Bps",
                  (q(f"sum by (instance) (ray_node_network_receive_speed{{{CLUSTER}}})", "received {{instance}}"),
                   q(f"sum by (instance) (ray_node_network_send_speed{{{CLUSTER}}})", "sent {{instance}}"))),
        PanelSpec("Object store memory", "Object store bytes by location (in memory, spilled to disk) "
                  "against its capacity.", "bytes",
                  (q(f"sum by (Location) (ray_object_store_memory{{{CLUSTER}}})", "{{Location}}"),
                   q(f'sum(ray_resources{{{CLUSTER},Name="object_store_memory"}})', "capacity"))),
        PanelSpec("Logical resources in use", "Share of the cluster's logical CPU, GPU and memory that "
                  "actors and tasks hold; at 100% new replicas wait.", "percentunit",
                  (q(f"sum by (Name) (ray_resources{{{logical},{used}}}) / sum by (Name) (ray_resources{{{logical}}})",
                     "{{Name}}"),)),
        PanelSpec("Tasks by state", "Ray tasks (Serve's actor calls included) by state; FINISHED and "
                  "FAILED count since the session started.", "short",
                  (q(f"sum by (State) (ray_tasks{{{CLUSTER}}})", "{{State}}"),)),
        PanelSpec("Actors by state", "Ray actors (controller, proxies, replicas) by state, as each source "
                  "reports them.", "short",
                  (q(f"sum by (Source, State) (ray_actors{{{CLUSTER}}})", "{{State}} ({{Source}})"),)),
        PanelSpec("Placement groups by state", "Placement groups (LLM replicas reserve theirs) by state; "
                  "PENDING means a replica cannot be placed.", "short",
                  (q(f"sum by (State) (ray_placement_groups{{{CLUSTER}}})", "{{State}}"),)),
    ), variables=())


def slo(ops: OpsConfig) -> DashboardSpec:
    panels = []
    for s in ops.slos:
        sel = f'{{{CLUSTER},slo="{s.name}"}}'
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
    for model, g in ops.llm_goodput.items():
        sel = f'{{{CLUSTER},model="{model}"}}'
        panels.append(PanelSpec(
            f"{model}: goodput budget burn", f"Share of {model}'s requests not good (TTFT over {g.ttft_ms:g} "
            f"ms, TPOT over {g.tpot_ms:g} ms, or failed), as a multiple of its budget ({g.budget:.1%}).",
            "short",
            (q(f"serveops:llm_goodput_bad:ratio_rate1h{sel} / {g.budget:g}", "1h"),
             q(f"serveops:llm_goodput_bad:ratio_rate6h{sel} / {g.budget:g}", "6h")),
            runbook="LLMGoodputBudgetBurn"))
    return DashboardSpec("serveops-slo", "serveops / SLOs and error budgets",
                         "Each route's SLO from stack/ops.yaml: burn rates and budget left.", tuple(panels),
                         variables=())


def all_dashboards(ops: OpsConfig) -> list[DashboardSpec]:
    return [serve_overview(), deployment(ops), llm(ops), batching(), multiplexing(), resources(), cluster(),
            slo(ops)]
