"""Typed loader for stack/ops.yaml, the one ops config. Everything else imports these objects."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stack import ROOT, levers, targets
from stack.serving.settings import ApiLimits, Goodput, Tenants  # what the Serve config passes replicas

OPS_PATH = ROOT / "stack" / "ops.yaml"
# Points load() at another ops config, e.g. a copy with a tighter SLO.
OPS_PATH_ENV = "SERVEOPS_CONFIG"


class _Strict(BaseModel):
    # A typo in the ops config must fail loudly, not be ignored.
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class Listen(_Strict):
    host: str
    serve_port: int
    dashboard_port: int
    metrics_port: int
    gcs_port: int
    prometheus_port: int
    alertmanager_port: int
    gpu_exporter_port: int
    alert_receiver_port: int
    redis_port: int
    # serveops_request_latency_ms with exemplars (stack/serving/observability/exemplars.py), on the head.
    exemplars_port: int
    # HAProxy's stats page and Prometheus exporter, where the haproxy_ingress lever is on (stack/levers.py).
    haproxy_stats_port: int = 8404
    haproxy_metrics_port: int = 9101

    def url(self, port: int) -> str:
        return f"http://{self.host}:{port}"

    @property
    def serve_url(self) -> str:
        return self.url(self.serve_port)

    @property
    def dashboard_url(self) -> str:
        return self.url(self.dashboard_port)

    @property
    def metrics_url(self) -> str:
        return self.url(self.metrics_port)

    @property
    def gcs_address(self) -> str:
        return f"{self.host}:{self.gcs_port}"


class Targets(_Strict):
    """What the read-only tools read (stack/targets.py): the local stack unless set; each entry is
    overridden by its environment variable (SERVEOPS_SERVE_URL, ..., K8S_CONTEXT, K8S_NAMESPACE)."""

    serve_url: str
    prometheus_url: str
    alertmanager_url: str
    ray_dashboard_url: str
    kube_context: str | None = None  # Kubernetes steps of the runbooks run only against this context
    kube_namespace: str = "serveops"

    @field_validator("serve_url", "prometheus_url", "alertmanager_url", "ray_dashboard_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        # Every client joins paths onto these; a scheme-less or path-carrying URL would be misread.
        if not url.startswith(("http://", "https://")) or "?" in url or "#" in url:
            raise ValueError(f"{url!r}: a target is an http(s):// URL with no query, e.g. http://prometheus:9090")
        return url.rstrip("/")


class Cluster(_Strict):
    """Resources and environment of the local Ray head. None lets Ray detect."""

    num_cpus: int | None = None
    num_gpus: int | None = None
    object_store_memory_mb: int | None = None
    gcs_fault_tolerance: bool = False  # GCS state in the local Redis (listen.redis_port)
    second_node_num_cpus: int = 4  # logical CPUs of the second node of `make up NODES=2`
    env: dict[str, str] = {}
    # Ray's request-path levers this profile runs with (stack/levers.py; measured in docs/levers.md).
    levers: list[str] = []

    @field_validator("levers")
    @classmethod
    def _known_levers(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(levers.LEVERS))
        if unknown:  # a misspelt lever would silently run the stack without it
            raise ValueError(f"unknown levers {unknown}; have {', '.join(levers.LEVERS)}")
        return value


class Batching(_Strict):
    """@serve.batch settings; reach the replica as user_config, so `serve deploy` retunes them live."""

    max_batch_size: int = Field(gt=0)
    batch_wait_timeout_s: float = Field(ge=0)


class DeploymentOptions(_Strict):
    """The subset of @serve.deployment options the ops config sets; passed to Serve as-is."""

    num_replicas: int | None = None
    autoscaling_config: dict[str, Any] | None = None
    max_ongoing_requests: int | None = None
    health_check_period_s: float | None = None
    health_check_timeout_s: float | None = None
    graceful_shutdown_timeout_s: float | None = None
    ray_actor_options: dict[str, Any] | None = None
    # Extra replicas during a rolling update, % of the target. Serve's default 0 stops the old replicas
    # before starting new ones: a release whose replicas never start leaves nothing serving.
    max_surge_percent: int | None = Field(default=None, ge=0, le=100)
    batching: Batching | None = None
    # Threads for torch inside the replica; sized to the cores the profile gives it.
    torch_threads: int | None = None
    # @serve.multiplexed cache size; an LRU model is evicted past it.
    max_num_models_per_replica: int | None = None
    # Handler watchdog (stack/serving/watchdog.py): the age of the oldest in-flight request past which the
    # replica's health check fails. Reaches the replica as user_config, so a rollout changes it live.
    watchdog_s: float | None = None

    @field_validator("watchdog_s")
    @classmethod
    def _watchdog_positive(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError(
                f"watchdog_s must be > 0 (got {value:g}): it is how long one request may run before the "
                "replica's health check fails and Serve replaces it; leave it out to turn the watchdog off")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DeploymentOptions:
        if self.num_replicas is not None and self.autoscaling_config is not None:
            raise ValueError("set num_replicas or autoscaling_config, not both")
        if self.batching and self.max_ongoing_requests is not None:
            # The guide: a replica must admit more requests than one batch holds, or batches never fill.
            if self.max_ongoing_requests <= self.batching.max_batch_size:
                raise ValueError(
                    f"max_ongoing_requests ({self.max_ongoing_requests}) must exceed "
                    f"batching.max_batch_size ({self.batching.max_batch_size})"
                )
        return self

    @property
    def min_replicas(self) -> int:
        if self.autoscaling_config is not None:
            return int(self.autoscaling_config.get("min_replicas", 1))
        return self.num_replicas if self.num_replicas is not None else 1

    def user_config(self) -> dict[str, Any] | None:
        cfg: dict[str, Any] = {}
        if self.batching:
            cfg.update(self.batching.model_dump())
        if self.torch_threads:
            cfg["torch_threads"] = self.torch_threads
        if self.watchdog_s is not None:
            cfg["watchdog_s"] = self.watchdog_s
        return cfg or None

    def to_serve(self) -> dict[str, Any]:
        """Options for Serve: a deployment_config, or an entry of a Serve config's deployments list."""
        # What reaches the replica as user_config or app args, not as a Serve option.
        own = {"batching", "torch_threads", "max_num_models_per_replica", "watchdog_s"}
        out = self.model_dump(exclude_none=True, exclude=own)
        user_config = self.user_config()
        if user_config:
            out["user_config"] = user_config
        return out


class LLMModel(_Strict):
    model_id: str
    model_source: str
    accelerator_type: str | None = None
    placement_group_config: dict[str, Any] | None = None
    engine_kwargs: dict[str, Any] = {}
    deployment: DeploymentOptions
    # ray.serve.llm sends a stream's chunks in batches on this tick (None: Ray's 50 ms).
    stream_batching_interval_ms: float | None = Field(default=None, ge=0)

    def to_llm_config(self) -> dict[str, Any]:
        """A dict that ray.serve.llm.LLMConfig validates."""
        cfg: dict[str, Any] = {
            "model_loading_config": {"model_id": self.model_id, "model_source": self.model_source},
            "engine_kwargs": dict(self.engine_kwargs),
            "deployment_config": self.deployment.to_serve(),
            "log_engine_metrics": True,
        }
        if self.accelerator_type:
            cfg["accelerator_type"] = self.accelerator_type
        if self.placement_group_config:
            cfg["placement_group_config"] = self.placement_group_config
        experimental: dict[str, Any] = {}
        if self.stream_batching_interval_ms is not None:
            experimental["stream_batching_interval_ms"] = self.stream_batching_interval_ms
        if experimental:
            cfg["experimental_configs"] = experimental
        return cfg


class LLMApp(_Strict):
    ingress: DeploymentOptions
    models: list[LLMModel]

    @model_validator(mode="after")
    def _unique_ids(self) -> LLMApp:
        ids = [m.model_id for m in self.models]
        if not ids or len(set(ids)) != len(ids):
            raise ValueError(f"llm.models needs at least one model and unique model_ids, got {ids}")
        return self

    @model_validator(mode="after")
    def _no_watchdog(self) -> LLMApp:
        # ray.serve.llm's deployments have no watchdog: user_config {"watchdog_s"} would reach code that
        # does not know it.
        watched = [name for name, opts in [("ingress", self.ingress),
                                           *((m.model_id, m.deployment) for m in self.models)]
                   if opts.watchdog_s is not None]
        if watched:
            raise ValueError(f"watchdog_s is for the model apps' deployments only; ray.serve.llm's have no "
                             f"watchdog (set on llm {watched})")
        return self


class Profile(_Strict):
    cluster: Cluster
    # The fault hook (stack/serving/faults.py) in the model apps, for chaos. Off: not installed at all.
    fault_injection: bool = False
    llm: LLMApp
    # Application name -> deployment name -> options, for the non-LLM apps.
    apps: dict[str, dict[str, DeploymentOptions]]

    def deployment(self, app: str, name: str) -> DeploymentOptions:
        return self.apps[app][name]


class Observability(_Strict):
    scrape_interval_s: int = Field(gt=0)
    # How long Prometheus waits for one scrape; RayScrapeSlow fires near it.
    scrape_timeout_s: float = Field(gt=0)
    evaluation_interval_s: int = Field(gt=0)
    # The root ratio of Serve's ParentBasedTraceIdRatio: the share of requests the proxy traces. A
    # client's sampled traceparent is kept at any ratio, 0 included.
    tracing_sampling_ratio: float = Field(ge=0, le=1)
    otlp_endpoint: str | None = None
    runbook_url_base: str

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> Observability:
        # Prometheus refuses a scrape_timeout longer than the scrape_interval.
        if self.scrape_timeout_s > self.scrape_interval_s:
            raise ValueError(f"scrape_timeout_s ({self.scrape_timeout_s:g}) must not exceed "
                             f"scrape_interval_s ({self.scrape_interval_s})")
        return self


class Alerting(_Strict):
    queue_depth: float = Field(gt=0)
    oscillation_changes_30m: int = Field(gt=0)
    replica_rss_high_mb: float = Field(gt=0)
    node_memory_ratio: float = Field(gt=0, lt=1)
    replica_rss_growth_mb_per_h: float = Field(gt=0)
    llm_ttft_objective_s: float = Field(gt=0)
    llm_ttft_slow_ratio: float = Field(gt=0, lt=1)
    kv_cache_usage_ratio: float = Field(gt=0, le=1)
    gpu_memory_ratio: float = Field(gt=0, le=1)
    # ServeReplicaStalled: requests in flight and none completed for this long.
    stall_window_s: int = Field(gt=0)
    stale_replicas_max: int = Field(ge=0)
    # RayScrapeSlow: a Ray scrape takes more than this share of observability.scrape_timeout_s.
    scrape_slow_ratio: float = Field(gt=0, lt=1)
    # RayTargetSeriesGrowth: samples per scrape above factor x and floor + the target's baseline.
    series_growth_factor: float = Field(gt=1)
    series_growth_floor: int = Field(gt=0)


class Slo(_Strict):
    name: str
    route: str
    availability: float = Field(gt=0, lt=1)
    latency_objective_ms: float = Field(gt=0)
    latency_target: float = Field(gt=0, lt=1)

    @property
    def error_budget(self) -> float:
        return 1 - self.availability

    @property
    def latency_budget(self) -> float:
        return 1 - self.latency_target


# Load-test tasks, one per route (embed twice: one text and a list).
LoadTask = Literal["chat", "completions", "embed", "embed_batch", "classify", "predict"]
Shape = Literal["steady", "step", "spike", "oscillation", "rate", "sweep"]
SweepFamilyName = Literal["llm", "embed", "classify"]


class SweepFamily(_Strict):
    """One route family's rates: start_rate_per_s x growth^k, k below max_steps."""

    start_rate_per_s: float = Field(gt=0)
    growth: float = Field(gt=1)
    max_steps: int = Field(ge=1)
    peak_rate_per_s: float = Field(gt=0)  # the rate max_replicas is sized for; PEAK_RATE overrides
    deployment: str  # regex of the deployment label whose autoscaling the advice sets


class SweepMode(_Strict):
    step_s: float = Field(gt=0)  # each rate's arrivals
    settle_s: float = Field(ge=0)  # the start of each step, left out of its figures
    drain_timeout_s: float = Field(gt=0)  # after a step's arrivals; requests still open then failed
    steps: int | None = Field(default=None, ge=1)  # rates per family; None: each family's max_steps

    @model_validator(mode="after")
    def _settles_inside(self) -> SweepMode:
        if self.settle_s >= self.step_s:
            raise ValueError("settle_s must be shorter than step_s")
        return self


class Sweep(_Strict):
    """SHAPE=sweep: open-loop Poisson arrivals at rising rates per route family, until over-saturation."""

    max_in_flight: int = Field(ge=1)  # an arrival finding this many open is dropped
    throughput_ratio: float = Field(gt=0, le=1)  # served under this share of arrivals: the queue grows
    backlog_floor: int = Field(ge=0)  # requests: smaller shortfalls and backlogs are noise
    seed: int
    modes: dict[Literal["full", "short"], SweepMode]
    families: dict[SweepFamilyName, SweepFamily]

    @model_validator(mode="after")
    def _both_modes(self) -> Sweep:
        if set(self.modes) != {"full", "short"}:
            raise ValueError("sweep.modes needs full and short")
        return self


class LoadTest(_Strict):
    """Defaults of `make loadtest`; SHAPE, USERS, DURATION, RATE and WEIGHTS override them."""

    shape: Shape
    users: int = Field(ge=1)
    spawn_rate: float = Field(gt=0)
    duration_s: float = Field(gt=0)
    think_time_s: tuple[float, float]
    rate_per_s: float = Field(gt=0)
    oscillation_period_s: float = Field(gt=0)
    weights: dict[LoadTask, int]
    max_tokens: int = Field(ge=2)
    embed_batch_texts: int = Field(ge=2)
    tenant_zipf_exponent: float = Field(ge=0)
    locust_cpu_warn_percent: float = Field(gt=0, le=100)
    plot_window_s: float = Field(gt=0)
    sweep: Sweep

    @model_validator(mode="after")
    def _sane(self) -> LoadTest:
        low, high = self.think_time_s
        if not 0 <= low <= high:
            raise ValueError("think_time_s must be [low, high] with 0 <= low <= high")
        if any(w < 0 for w in self.weights.values()) or not any(self.weights.values()):
            raise ValueError("weights must be >= 0 and at least one > 0")
        return self


class Goal(_Strict):
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> Goal:
        if (self.min is None) == (self.max is None):
            raise ValueError("a goal has exactly one of min and max")
        return self

    def met(self, value: float) -> bool:
        return value >= self.min if self.min is not None else value <= self.max  # type: ignore[operator]

    def __str__(self) -> str:
        return f">= {self.min:g}" if self.min is not None else f"<= {self.max:g}"


class BenchMode(_Strict):
    duration_s: float = Field(gt=0)  # each measured load run
    warmup_s: float = Field(ge=0)
    llm_prompts: int = Field(ge=1)  # vllm bench serve --num-prompts, per server
    llm_ttft_prompts: int = Field(ge=1)  # TTFT runs at concurrency 1 (no queueing), per server and repeat
    repeats: int = Field(ge=1)  # load runs per figure, alternating sides where the setup allows
    chaos: Literal["all"] | list[str]  # experiments whose detection latency is measured
    fuzz_examples: int = Field(ge=1)  # generated requests per OpenAPI spec (loadtests/bench/fuzz.py)


class BenchLlm(_Strict):
    input_tokens: int = Field(ge=1)
    output_tokens: int = Field(ge=2)
    concurrency: int = Field(ge=1)


class Bench(_Strict):
    goals: dict[str, Goal]
    embed_text: str
    latency_concurrency: int = Field(ge=1)
    throughput_concurrency: int = Field(ge=1)
    lists_concurrency: int = Field(ge=1)
    llm: BenchLlm
    instrumentation_routes: list[str]
    fuzz_specs: list[str]  # paths of the served OpenAPI specs
    modes: dict[Literal["full", "smoke"], BenchMode]


class OpsConfig(_Strict):
    listen: Listen
    targets: Targets
    api: ApiLimits
    tenants: Tenants
    observability: Observability
    slos: list[Slo]
    llm_goodput: dict[str, Goodput]
    alerting: Alerting
    latency_buckets_ms: list[float]
    loadtest: LoadTest
    bench: Bench
    profiles: dict[str, Profile]

    @model_validator(mode="before")
    @classmethod
    def _local_targets(cls, data: Any) -> Any:
        # "local" is the listener this file's stack opens, so a port changed in listen: moves both.
        if not isinstance(data, dict) or not isinstance(data.get("targets"), dict):
            return data
        listen = Listen.model_validate(data["listen"])
        local = {f"{kind}_url": url for kind, url in targets.local_urls(listen).items()}
        resolved = {k: local[k] if v == targets.LOCAL and k in local else v
                    for k, v in data["targets"].items()}
        return {**data, "targets": resolved}

    @model_validator(mode="after")
    def _haproxy_on_loopback(self) -> OpsConfig:
        # Ray's HAProxy dials replicas on its own node at 127.0.0.1 (serve/_private/haproxy.py), and our
        # replicas listen on listen.host: elsewhere every request through it is a 500.
        if targets.loopback(self.listen.host):
            return self
        on = sorted(name for name, p in self.profiles.items() if "haproxy_ingress" in p.cluster.levers)
        if on:
            raise ValueError(f"profiles {on} run the haproxy_ingress lever, which needs listen.host on "
                             f"loopback (it is {self.listen.host}); take the lever out of their levers")
        return self

    @model_validator(mode="after")
    def _objectives_are_buckets(self) -> OpsConfig:
        # Between two boundaries, histogram_quantile interpolates and burn rates count the wrong requests.
        off = [s.name for s in self.slos if s.latency_objective_ms not in self.latency_buckets_ms]
        if off:
            raise ValueError(f"latency objectives of {off} are not in latency_buckets_ms")
        if sorted(self.latency_buckets_ms) != self.latency_buckets_ms:
            raise ValueError("latency_buckets_ms must be ascending")
        return self

    @model_validator(mode="after")
    def _every_model_has_goodput(self) -> OpsConfig:
        # A model without objectives would serve with no goodput SLO, no alert and no gate entry.
        models = {m.model_id for p in self.profiles.values() for m in p.llm.models}
        missing = sorted(models - set(self.llm_goodput))
        if missing:
            raise ValueError(f"llm_goodput has no objectives for the profiles' models {missing}")
        return self

    def goodput_for(self, model: str) -> Goodput:
        """The model's goodput objectives; a model swapped in with LLM_MODEL keeps those of the first."""
        return self.llm_goodput.get(model) or next(iter(self.llm_goodput.values()))

    def slo_for(self, route: str) -> Slo | None:
        return next((s for s in self.slos if s.route == route), None)

    def profile(self, name: str) -> Profile:
        try:
            return self.profiles[name]
        except KeyError:
            raise ValueError(f"profile {name!r} not in ops config; have {sorted(self.profiles)}") from None


def parse(path: Path, env: Mapping[str, str] | None = None) -> OpsConfig:
    """The ops config at path, with the targets the environment overrides (os.environ by default)."""
    return _parse(path, tuple(sorted(targets.overrides(os.environ if env is None else env).items())))


def _parse(path: Path, set_by_env: tuple[tuple[str, str], ...]) -> OpsConfig:
    data = yaml.safe_load(path.read_text())
    if set_by_env:
        data["targets"] = {**data.get("targets", {}), **dict(set_by_env)}
    return OpsConfig.model_validate(data)


def load() -> OpsConfig:
    """The project's ops config ($SERVEOPS_CONFIG when set), parsed once per process and per set of
    target overrides in the environment (a changed SERVEOPS_*_URL is never served a stale config)."""
    overrides = tuple(sorted(targets.overrides(os.environ).items()))
    return _cached(Path(os.environ.get(OPS_PATH_ENV) or OPS_PATH), overrides)


_cached = functools.cache(_parse)
load.cache_clear = _cached.cache_clear  # type: ignore[attr-defined]
