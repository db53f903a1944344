"""The one resource model: what each Serve deployment of a profile reserves per replica, and its bounds.

Preflight's headroom item (stack/tools/preflight.py) and the KubeRay worker groups (stack/k8s/sizing.py)
both read it. Every deployment starts from the options stack.serve_config writes into the Serve config,
with the defaults Serve and ray.serve.llm fill in; an LLM's placement group comes from ray.serve.llm's
LLMConfig, not from a re-derivation of its rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ray.serve.config import AutoscalingConfig

from stack import serve_config
from stack.config import DeploymentOptions, LLMModel, Profile

GIB = 1024**3
SERVE_DEFAULT_NUM_CPUS = 1.0  # what Serve reserves for a replica whose ray_actor_options name no num_cpus
# The name stack.serving.llm_app gives the LLM app's ingress deployment.
LLM_INGRESS = "OpenAiIngress"

Bundle = dict[str, float]


@dataclass(frozen=True)
class Demand:
    """Logical resources Ray reserves: CPU, GPU and memory (bytes)."""

    cpus: float
    gpus: float
    memory_bytes: float

    @classmethod
    def of(cls, resources: Mapping[str, Any]) -> Demand:
        return cls(float(resources.get("CPU", 0)), float(resources.get("GPU", 0)),
                   float(resources.get("memory", 0)))

    def resources(self) -> dict[str, float]:
        """Keyed as Ray keys a node's or a bundle's resources."""
        return {"CPU": self.cpus, "GPU": self.gpus, "memory": self.memory_bytes}

    def __add__(self, other: Demand) -> Demand:
        return Demand(self.cpus + other.cpus, self.gpus + other.gpus, self.memory_bytes + other.memory_bytes)

    def __mul__(self, n: int) -> Demand:
        return Demand(self.cpus * n, self.gpus * n, self.memory_bytes * n)


NONE = Demand(0, 0, 0)


@dataclass(frozen=True)
class Deployment:
    app: str
    deployment: str  # as Serve names it
    options: DeploymentOptions  # what the ops config sets
    replica: Demand  # what one replica reserves
    min_replicas: int
    max_replicas: int
    autoscaling: AutoscalingConfig | None = None  # Serve's view, defaults filled; None: fixed num_replicas
    # LLM: the placement group each replica reserves (the replica actor sits in the first bundle) ...
    bundles: tuple[Bundle, ...] = ()
    # ... and the engine's own bundles in it, as LLMConfig gives them.
    engine_bundles: tuple[Bundle, ...] = ()
    llm: LLMModel | None = None
    ingress: bool = False

    @property
    def name(self) -> str:
        """application/deployment, as Serve's metrics label it."""
        return f"{self.app}/{self.deployment}"


def _bounds(opts: Mapping[str, Any]) -> tuple[int, int, AutoscalingConfig | None]:
    """(min, max) replicas of Serve deployment options, and Serve's autoscaling config."""
    if opts.get("num_replicas") is not None:
        return int(opts["num_replicas"]), int(opts["num_replicas"]), None
    if opts.get("autoscaling_config") is not None:
        cfg = AutoscalingConfig(**opts["autoscaling_config"])
        return cfg.min_replicas, cfg.max_replicas, cfg
    return 1, 1, None


def _actor(opts: Mapping[str, Any]) -> Bundle:
    """What the replica actor asks for, as LLMServer.get_deployment_options counts it."""
    actor = opts.get("ray_actor_options") or {}
    out = {"CPU": float(actor.get("num_cpus", SERVE_DEFAULT_NUM_CPUS)),
           "GPU": float(actor.get("num_gpus", 0)),
           **{k: float(v) for k, v in (actor.get("resources") or {}).items()}}
    if "memory" in actor:
        out["memory"] = float(actor["memory"])
    return out


def _plain(app: str, name: str, options: DeploymentOptions, serve: Mapping[str, Any],
           ingress: bool = False) -> Deployment:
    return Deployment(app, name, options, Demand.of(_actor(serve)), *_bounds(serve), ingress=ingress)


def _llm_servers(profile: Profile, configs: list[Any]) -> list[Deployment]:
    """One LLMServer deployment per model, as ray.serve.llm's build_llm_deployment makes it (with the
    one_hop_llm lever, the one model's deployment serves the routes too, with the same options)."""
    from ray.llm._internal.common.dict_utils import maybe_apply_llm_deployment_config_defaults
    from ray.llm._internal.serve.core.server.builder import DEFAULT_DEPLOYMENT_OPTIONS, _get_deployment_name
    from ray.llm._internal.serve.core.server.llm_server import (
        LLMServer,
        _merge_replica_actor_and_child_actor_bundles,
    )

    found = []
    for model, cfg in zip(profile.llm.models, configs, strict=True):
        serve = maybe_apply_llm_deployment_config_defaults(DEFAULT_DEPLOYMENT_OPTIONS, cfg.deployment_config)
        engine = [dict(b) for b in cfg.get_engine_config().placement_bundles]
        # LLMServer.get_deployment_options puts the replica actor into the engine's first bundle; it is not
        # called here because it reads ray.get_runtime_context(), which starts a local Ray.
        bundles = _merge_replica_actor_and_child_actor_bundles(engine, _actor(serve))
        # Serve reserves the whole placement group per replica: its demand is the bundles' sum.
        demand = sum((Demand.of(b) for b in bundles), NONE)
        name = f"{(cfg.server_cls or LLMServer).__name__}:{_get_deployment_name(cfg)}"
        found.append(Deployment(serve_config.LLM_APP, name, model.deployment, demand, *_bounds(serve),
                                bundles=tuple(bundles), engine_bundles=tuple(engine), llm=model))
    return found


def _ingress(profile: Profile, configs: list[Any], ingress_config: dict[str, Any]) -> Deployment:
    """The OpenAI ingress as stack.serving.llm_app.build_app deploys it: ray.serve.llm's defaults (an
    autoscaling config with Serve's bounds, 1..1, min 0 only when every model scales to zero) under the
    ops config's ingress options; with no ray_actor_options, each replica takes Serve's default 1 CPU."""
    from ray.llm._internal.common.dict_utils import maybe_apply_llm_deployment_config_defaults
    from ray.llm._internal.serve.core.ingress.ingress import OpenAiIngress

    # ValidatingIngress inherits get_deployment_options from OpenAiIngress.
    serve = maybe_apply_llm_deployment_config_defaults(OpenAiIngress.get_deployment_options(configs),
                                                       ingress_config)
    return _plain(serve_config.LLM_APP, serve.get("name", LLM_INGRESS), profile.llm.ingress, serve,
                  ingress=True)


def deployments(profile: Profile) -> list[Deployment]:
    """Every deployment Serve runs for the profile: the LLM ingress, each LLMServer, the model apps'."""
    from ray.serve.llm import LLMConfig  # heavy (vLLM): imported when the model is built

    from stack.serving.settings import one_hop

    # The LLM app's args as stack.serve_config writes them, which stack.serving.llm_app.build_app reads.
    args = serve_config.llm_application(profile)["args"]
    configs = [LLMConfig.model_validate(c) for c in args["llm_configs"]]
    # The ingress counts. It is a deployment like the others: Serve schedules its replicas as actors that
    # reserve CPU (1 each by default) on a worker, since the head runs no replicas on Kubernetes (num-cpus
    # 0). The HTTP proxy on the head (proxy_location HeadOnly) is another actor, outside this model.
    if one_hop([c.experimental_configs for c in configs]):  # one deployment, ingress and model's server
        found = _llm_servers(profile, configs)
    else:
        found = [_ingress(profile, configs, args["ingress_deployment_config"]),
                 *_llm_servers(profile, configs)]
    for app in serve_config.MODEL_APPS:
        for entry in serve_config.model_application(app, profile)["deployments"]:
            name = entry["name"]
            found.append(_plain(app, name, profile.apps[app][name], entry))
    return found
