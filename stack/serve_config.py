"""Generate the Serve config files (stack/serve/<profile>.yaml) from the ops config.

The files are what `serve deploy` and `serve run` read; they are committed, and `make check` fails
when they drift from this generator. `make up` deploys the same document, with run-time
overrides (LLM_MODEL) applied, and keeps the deployed copy in .run/.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from stack import artifacts, levers
from stack.artifacts import SERVE_DIR
from stack.config import OpsConfig, Profile, load
from stack.profile import PROFILES
from stack.serving import proxy_guard
from stack.serving.faults import DEFAULT_CONTROL_FILE
from stack.serving.observability import exemplars
from stack.serving.observability.tracing import OTLP_ENDPOINT_ENV

LLM_APP = "llm"
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
# The non-LLM applications: name -> (route prefix, builder). Routes are a contract, not a setting.
MODEL_APPS = {
    "embed": ("/embed", "stack.serving.apps:embed_app"),
    "classify": ("/classify", "stack.serving.apps:classify_app"),
    "predict": ("/predict", "stack.serving.apps:predict_app"),
}


def serve_config_path(profile: str) -> Path:
    return SERVE_DIR / f"{profile}.yaml"


def llm_application(profile: Profile) -> dict[str, Any]:
    chosen = levers.chosen(profile.cluster.levers, {})
    return {
        "name": LLM_APP,
        "route_prefix": "/",
        "import_path": "stack.serving.llm_app:build_app",
        "runtime_env": {"env_vars": dict(profile.cluster.env)},
        "args": {
            # With the profile's LLM levers, so every reader of the app (resources too) sees how it is built.
            "llm_configs": [with_llm_experimental(m.to_llm_config(), chosen) for m in profile.llm.models],
            "ingress_deployment_config": profile.llm.ingress.to_serve(),
        },
    }


def model_application(name: str, profile: Profile) -> dict[str, Any]:
    route_prefix, import_path = MODEL_APPS[name]
    deployments = profile.apps[name]
    args: dict[str, Any] = {}
    for opts in deployments.values():
        if opts.max_num_models_per_replica:
            args["max_num_models_per_replica"] = opts.max_num_models_per_replica
    if profile.fault_injection:
        # Only where the profile asks: without the arg the app installs no hook at all.
        args["faults"] = {"control_file": DEFAULT_CONTROL_FILE}
    return {
        "name": name,
        "route_prefix": route_prefix,
        "import_path": import_path,
        "args": args,
        "deployments": [{"name": dep_name, **opts.to_serve()} for dep_name, opts in deployments.items()],
    }


def replica_args(ops: OpsConfig, profile: Profile, app: str) -> dict[str, Any]:
    """What the app's replicas need from the ops config besides their deployment options.

    Args, not user_config: the limits shape the FastAPI app and its OpenAPI spec, built with the app,
    the tiers label metrics, and the goodput objectives judge LLM requests; a change rolls the replicas,
    which is rare enough. stack.serving.settings validates them when Serve builds the app.
    """
    args: dict[str, Any] = {"api": ops.api.model_dump()}
    if app == LLM_APP:
        args["goodput"] = {m.model_id: ops.llm_goodput[m.model_id].model_dump() for m in profile.llm.models}
    if app == "predict":
        args["tenants"] = ops.tenants.model_dump()
    return args


def tracing_env(ops: OpsConfig) -> dict[str, str]:
    """Tracing settings and the proxy's header guard for every Serve process, as
    controller_options.runtime_env.env_vars.

    Ray calls the exporter (RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH) with no arguments in every Serve
    process, the proxy included, so it can read only its environment; app args and user_config never reach
    the proxy. The controller's env_vars do: Ray merges a parent's env_vars into each actor it creates, and
    the controller creates the proxies and replicas. Serve applies them when it starts the controller, so
    a change takes a fresh Serve instance (`serve shutdown`). Whether to trace at all stays with the cluster
    (stack.local.ray_head sets the exporter, or not, with SERVEOPS_INSTRUMENTATION).
    """
    env = {"RAY_SERVE_TRACING_SAMPLING_RATIO": str(ops.observability.tracing_sampling_ratio),
           # The proxy decodes some headers before any replica sees them: guard them there too.
           PROXY_CALLBACK_ENV: proxy_guard.IMPORT_PATH,
           # Where the ingress replicas' latency histogram with exemplars is served (on the head node).
           exemplars.LISTEN_ENV: f"{ops.listen.host}:{ops.listen.exemplars_port}"}
    if ops.observability.otlp_endpoint:
        env[OTLP_ENDPOINT_ENV] = ops.observability.otlp_endpoint
    return env


def build(ops: OpsConfig, profile_name: str) -> dict[str, Any]:
    profile = ops.profile(profile_name)
    missing = set(MODEL_APPS) - set(profile.apps)
    if missing:
        raise ValueError(f"profile {profile_name} has no settings for apps {sorted(missing)}")
    apps = [llm_application(profile), *(model_application(n, profile) for n in MODEL_APPS)]
    for app in apps:  # the Serve config is the replicas' only channel: no replica reads the ops config
        app["args"] = {**app["args"], **replica_args(ops, profile, app["name"])}
    config = {
        "proxy_location": "HeadOnly",
        "http_options": {"host": ops.listen.host, "port": ops.listen.serve_port},
        "controller_options": {"runtime_env": {"env_vars": tracing_env(ops)}},
        # JSON lines, each with Serve's request_id; stack.serving.observability.logs adds the trace id.
        "logging_config": {"encoding": "JSON", "log_level": "INFO", "enable_access_log": True},
        "applications": apps,
    }
    return config


def with_llm_experimental(model: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """One LLM model's config, its experimental_configs with each LLM lever (stack/levers.py) on or off."""
    experimental = model.setdefault("experimental_configs", {})
    for key, on in levers.llm_experimental(names).items():
        if on:
            experimental[key] = True
        else:
            experimental.pop(key, None)
    if not experimental:
        del model["experimental_configs"]
    return model


def with_llm_levers(config: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Every LLM model's experimental_configs with each LLM lever on or off."""
    app = next(a for a in config["applications"] if a["name"] == LLM_APP)
    for model in app["args"]["llm_configs"]:
        with_llm_experimental(model, names)
    return config


def apply_overrides(config: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """LLM_MODEL=<local dir or hub id> replaces the first model, keeping its goodput objectives;
    LLM_MODEL_ID names it."""
    source = env.get("LLM_MODEL", "").strip()
    if not source:
        return config
    app = next(a for a in config["applications"] if a["name"] == LLM_APP)
    loading = app["args"]["llm_configs"][0]["model_loading_config"]
    loading["model_source"] = source
    replaced = loading["model_id"]
    loading["model_id"] = env.get("LLM_MODEL_ID") or Path(source.rstrip("/")).name
    # The new model is judged by the goodput objectives of the one it replaces.
    app["args"]["goodput"][loading["model_id"]] = app["args"]["goodput"].pop(replaced)
    return config


def effective(profile_name: str, env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The Serve config `make up` deploys: SERVEOPS_LEVERS, where set, names its LLM levers too."""
    ops = load()
    chosen = levers.chosen(ops.profile(profile_name).cluster.levers, env)
    return apply_overrides(with_llm_levers(build(ops, profile_name), chosen), env)


def render(config: dict[str, Any]) -> str:
    return artifacts.header("stack/serve_config.py") + yaml.safe_dump(config, sort_keys=False)


def main(argv: list[str] | None = None) -> int:
    ops = load()
    configs = {serve_config_path(p): render(build(ops, p)) for p in PROFILES}
    return artifacts.emit("serve-config", lambda: configs, owned=(SERVE_DIR,), argv=argv)


if __name__ == "__main__":
    sys.exit(main())
