"""The committed Serve configs match their generator and are valid for Serve and ray.serve.llm."""

from __future__ import annotations

import copy

import pytest
import yaml
from ray.serve.llm import LLMConfig
from ray.serve.schema import ServeDeploySchema

from stack import ROOT, serve_config
from stack.config import load
from stack.profile import PROFILES
from stack.serving.llm_app import build_app, resolve_source, with_resolved_sources
from stack.serving.observability import tracing


@pytest.mark.parametrize("profile", PROFILES)
def test_serve_accepts_the_file(profile: str) -> None:
    raw = yaml.safe_load(serve_config.serve_config_path(profile).read_text())
    schema = ServeDeploySchema.model_validate(raw)
    assert schema.http_options.host == "127.0.0.1"
    assert schema.http_options.port == 8000
    apps = {app["name"]: app for app in raw["applications"]}
    assert {a: apps[a]["route_prefix"] for a in apps} == {
        "llm": "/", "embed": "/embed", "classify": "/classify", "predict": "/predict"}
    for llm in apps["llm"]["args"]["llm_configs"]:
        LLMConfig.model_validate(llm)


@pytest.mark.parametrize("profile", PROFILES)
def test_deployment_names_match_the_code(profile: str) -> None:
    from stack.serving import apps

    builders = {"embed": apps.embed_app, "classify": apps.classify_app, "predict": apps.predict_app}
    config = serve_config.build(load(), profile)
    for app in config["applications"][1:]:
        built = builders[app["name"]](app["args"])
        names = {d.name for d in _deployments(built)}
        assert {d["name"] for d in app["deployments"]} == names


@pytest.mark.parametrize("profile", PROFILES)
def test_replica_settings_travel_as_args(profile: str) -> None:
    ops = load()
    raw = yaml.safe_load(serve_config.serve_config_path(profile).read_text())
    for app in raw["applications"]:
        assert app["args"]["api"] == ops.api.model_dump(), app["name"]
    predict = next(a for a in raw["applications"] if a["name"] == "predict")
    assert predict["args"]["tenants"] == ops.tenants.model_dump()
    env = raw["controller_options"]["runtime_env"]["env_vars"]
    assert float(env["RAY_SERVE_TRACING_SAMPLING_RATIO"]) == ops.observability.tracing_sampling_ratio
    assert (serve_config.OTLP_ENDPOINT_ENV in env) == bool(ops.observability.otlp_endpoint)


def test_otlp_endpoint_reaches_every_serve_process_through_the_controller() -> None:
    ops = load()
    endpoint = "http://tempo.example:4318/v1/traces"
    traced = ops.model_copy(update={"observability": ops.observability.model_copy(
        update={"otlp_endpoint": endpoint})})
    config = serve_config.build(traced, "gpu")
    env = ServeDeploySchema.model_validate(config).controller_options.runtime_env["env_vars"]
    assert env[serve_config.OTLP_ENDPOINT_ENV] == endpoint
    # The exporter in stack.serving reads the same variable.
    assert tracing.otlp_endpoint(env) == endpoint


@pytest.mark.parametrize(("app", "drop", "named"), [
    ("embed", "api", "api: Field required"),
    ("classify", "api", "api: Field required"),
    ("predict", "tenants", "tenants: Field required"),
    ("predict", "max_num_models_per_replica", "max_num_models_per_replica: Field required"),
])
def test_builders_name_a_missing_arg(app: str, drop: str, named: str) -> None:
    from stack.serving import apps

    args = next(a for a in serve_config.build(load(), "cpu")["applications"] if a["name"] == app)["args"]
    builder = getattr(apps, f"{app}_app")
    with pytest.raises(ValueError, match=f"the {app} app's args in the Serve config are invalid: .*{named}"):
        builder({k: v for k, v in args.items() if k != drop})


def test_builders_name_a_bad_arg() -> None:
    from stack.serving import apps

    args = copy.deepcopy(next(a for a in serve_config.build(load(), "cpu")["applications"]
                              if a["name"] == "embed")["args"])
    args["api"]["max_text_chars"] = 0
    with pytest.raises(ValueError, match=r"api\.max_text_chars: Input should be greater than 0"):
        apps.embed_app(args)
    args["api"]["max_text_chars"], args["api"]["max_txt_chars"] = 10, 10
    with pytest.raises(ValueError, match=r"api\.max_txt_chars: Extra inputs are not permitted"):
        apps.embed_app(args)


def test_llm_builder_names_a_missing_arg() -> None:
    args = serve_config.build(load(), "cpu")["applications"][0]["args"]
    expected = "the llm app's args in the Serve config are invalid: api: Field required"
    with pytest.raises(ValueError, match=expected):
        build_app({k: v for k, v in args.items() if k != "api"})


def _deployments(app):
    """Every deployment an Application binds, ingress first."""
    from ray.serve.deployment import Application

    found, stack_ = [], [app]
    while stack_:
        node = stack_.pop()
        deployment = node._bound_deployment
        found.append(deployment)
        bound = [*deployment.init_args, *deployment.init_kwargs.values()]
        stack_.extend(a for a in bound if isinstance(a, Application))
    return found


def test_llm_model_override() -> None:
    base = serve_config.build(load(), "cpu")
    out = serve_config.apply_overrides(copy.deepcopy(base), {"LLM_MODEL": "/srv/models/qwen-0.5b/"})
    loading = out["applications"][0]["args"]["llm_configs"][0]["model_loading_config"]
    assert loading == {"model_id": "qwen-0.5b", "model_source": "/srv/models/qwen-0.5b/"}
    named = serve_config.apply_overrides(copy.deepcopy(base),
                                         {"LLM_MODEL": "Qwen/Qwen2.5-0.5B-Instruct", "LLM_MODEL_ID": "qwen"})
    assert named["applications"][0]["args"]["llm_configs"][0]["model_loading_config"]["model_id"] == "qwen"
    assert serve_config.apply_overrides(copy.deepcopy(base), {}) == base


def test_model_sources_resolve_against_project_root(tmp_path) -> None:
    assert resolve_source("stack") == str(ROOT / "stack")
    assert resolve_source("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    assert resolve_source(str(tmp_path)) == str(tmp_path)
    args = serve_config.build(load(), "cpu")["applications"][0]["args"]
    resolved = with_resolved_sources(args)
    source = resolved["llm_configs"][0]["model_loading_config"]["model_source"]
    assert source == str(ROOT / ".models" / "tiny-llama")
    assert args["llm_configs"][0]["model_loading_config"]["model_source"] == ".models/tiny-llama"
