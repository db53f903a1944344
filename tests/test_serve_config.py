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
from stack.serving.llm_app import resolve_source, with_resolved_sources


@pytest.mark.parametrize("profile", PROFILES)
def test_committed_file_has_no_drift(profile: str) -> None:
    path = serve_config.serve_config_path(profile)
    assert path.read_text() == serve_config.render(serve_config.build(load(), profile)), (
        f"{path} drifted from stack/ops.yaml; run `make serve-config`"
    )


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
