"""stack.resources, the one resource model: LLM bundles from LLMConfig, the ingress counted, and preflight and
the k8s sizing reading it rather than a copy of their own."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from ray.llm._internal.serve.core.server.llm_server import _merge_replica_actor_and_child_actor_bundles
from ray.serve.llm import LLMConfig

from stack import resources
from stack.config import OPS_PATH, DeploymentOptions, OpsConfig, load
from stack.k8s import sizing
from stack.resources import GIB, Demand, Deployment
from stack.tools import preflight

INGRESS = "llm/OpenAiIngress"
LLM = "llm/LLMServer:tiny-llama"


def _raw() -> dict[str, Any]:
    return json.loads(json.dumps(yaml.safe_load(OPS_PATH.read_text())))


def _by_name(profile: str, raw: dict[str, Any] | None = None) -> dict[str, Deployment]:
    ops = OpsConfig.model_validate(raw) if raw is not None else load()
    return {d.name: d for d in resources.deployments(ops.profile(profile))}


def _headroom(raw: dict[str, Any], profile: str) -> preflight.Result:
    return preflight.max_replicas_headroom(preflight.Context(OpsConfig.model_validate(raw), profile))


CLASSIFY = ("Pipeline", "Preprocessor", "Classifier", "Postprocessor")
# name -> (CPU, GPU, GiB per replica, min, max): the committed ops config as Serve runs it.
EXPECTED = {
    # cpu: no ingress, the one_hop_llm lever (the model's deployment serves the routes)
    "cpu": {LLM: (2, 0, 4, 1, 1), "embed/Embedder": (1, 0, 1.5, 1, 1),
            **{f"classify/{n}": (0.25, 0, 0.375, 1, 1) for n in CLASSIFY},
            "classify/Preprocessor": (0.25, 0, 0.375, 2, 2),  # two: the hung-replica lever
            "predict/TenantModels": (0.5, 0, 0.5, 0, 1)},
    "gpu": {INGRESS: (1, 0, 0, 1, 1), LLM: (1, 1, 8, 1, 4), "embed/Embedder": (2, 0.25, 3, 1, 4),
            **{f"classify/{n}": (1, 0, 0.5, 1, 4) for n in CLASSIFY},
            "predict/TenantModels": (1, 0, 2, 0, 4)},
}


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_every_deployment_as_serve_runs_it(profile: str) -> None:
    found = {name: (r.cpus, r.gpus, r.memory_bytes / GIB, d.min_replicas, d.max_replicas)
             for name, d in _by_name(profile).items() for r in [d.replica]}
    assert found == EXPECTED[profile]


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_llm_bundles_are_llm_configs(profile: str) -> None:
    """The engine's bundles are LLMConfig's; the replica actor joins the first, as LLMServer does it."""
    model = load().profile(profile).llm.models[0]
    cfg = LLMConfig.model_validate(model.to_llm_config())
    engine = cfg.get_engine_config().placement_bundles
    actor = model.deployment.ray_actor_options or {}
    replica = {"CPU": actor["num_cpus"], "GPU": actor.get("num_gpus", 0), "memory": actor["memory"]}
    d = _by_name(profile)[LLM]
    assert list(d.engine_bundles) == engine
    assert list(d.bundles) == _merge_replica_actor_and_child_actor_bundles(engine, replica)
    assert d.replica == sum((Demand.of(b) for b in d.bundles), resources.NONE)


def test_llm_bundles_are_asked_not_derived(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever LLMConfig answers is the LLM's demand: no rule of ours stands in for it."""
    odd = SimpleNamespace(placement_bundles=[{"CPU": 3, "GPU": 2}, {"GPU": 2, "memory": GIB}])
    monkeypatch.setattr(LLMConfig, "get_engine_config", lambda self: odd)
    d = _by_name("gpu")[LLM]
    assert d.replica == Demand(cpus=3 + 1, gpus=4, memory_bytes=GIB + 8 * GIB)  # + the replica actor's
    assert len(d.bundles) == 2


def test_llm_default_bundles_follow_tensor_parallelism_and_serve_names() -> None:
    raw = _raw()
    model = raw["profiles"]["gpu"]["llm"]["models"][0]
    model["engine_kwargs"]["tensor_parallel_size"] = 2
    model["model_id"] = "Qwen/Qwen2.5-0.5B"
    raw["llm_goodput"]["Qwen/Qwen2.5-0.5B"] = raw["llm_goodput"]["tiny-llama"]
    # Serve's own deployment name (build_llm_deployment), the one its metrics carry.
    d = _by_name("gpu", raw)["llm/LLMServer:Qwen--Qwen2_5-0_5B"]
    assert d.engine_bundles == ({"GPU": 1}, {"GPU": 1})
    assert d.replica == Demand(cpus=1, gpus=2, memory_bytes=8 * GIB)


def test_cpu_profile_without_bundles_asks_for_a_gpu() -> None:
    """LLMConfig defaults to a GPU bundle, also on the cpu profile: preflight now says so (it used to count a
    CPU), and the k8s sizing, which already asked LLMConfig, agrees."""
    raw = _raw()
    raw["profiles"]["cpu"]["llm"]["models"][0].pop("placement_group_config")
    assert _by_name("cpu", raw)[LLM].replica == Demand(cpus=1, gpus=1, memory_bytes=4 * GIB)
    result = _headroom(raw, "cpu")
    assert result.status == "FAIL" and "GPU 1 > 80% of 0 = 0" in result.reason


def test_the_ingress_counts() -> None:
    """One ingress, at Serve's default 1 CPU; in preflight's sum and in the CPU workers' bounds; and not in
    the checks of options the ops config sets (items 1, 4, 5, 6). None with the one_hop_llm lever (cpu):
    the model's deployment is the ingress, and its options are the ops config's."""
    ops = load()
    assert "one_hop_llm" in ops.profile("cpu").cluster.levers
    assert not [d for d in resources.deployments(ops.profile("cpu")) if d.ingress]
    assert LLM in {d.name for d in preflight.Context(ops, "cpu").configured}
    ingress = [d for d in resources.deployments(ops.profile("gpu")) if d.ingress]
    assert [d.name for d in ingress] == [INGRESS]
    ctx = preflight.Context(ops, "gpu")
    assert f"{INGRESS} 1x(CPU 1)" in preflight.max_replicas_headroom(ctx).reason
    assert INGRESS not in {d.name for d in ctx.configured}
    groups = {g.name: g for g in sizing.worker_groups(ops.profile("gpu"))}
    assert INGRESS in [d.name for d in groups["cpu-workers"].deployments]


def test_ingress_follows_ray_serve_llm_to_zero() -> None:
    """When every model scales to zero, ray.serve.llm lets the ingress go to zero too."""
    raw = _raw()
    raw["profiles"]["gpu"]["llm"]["models"][0]["deployment"]["autoscaling_config"]["min_replicas"] = 0
    ingress = _by_name("gpu", raw)[INGRESS]
    assert (ingress.min_replicas, ingress.max_replicas) == (0, 1)
    groups = {g.name: g for g in sizing.worker_groups(OpsConfig.model_validate(raw).profile("gpu"))}
    assert groups["cpu-workers"].demand("min").cpus == 4  # the classify app's 4; TenantModels is at 0 too


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_preflight_and_sizing_add_up_the_same(profile: str) -> None:
    ops = load()
    at_max = sum((g.demand("max") for g in sizing.worker_groups(ops.profile(profile))), resources.NONE)
    reason = preflight.max_replicas_headroom(preflight.Context(ops, profile)).reason
    for key, value in at_max.resources().items():
        assert not value or f"{key} {preflight._amount(key, value)} " in reason, (key, reason)
    # cpu: two Preprocessor replicas (0.25 CPU, 384 MiB each) since the hung-replica lever
    expected = {"cpu": Demand(4.75, 0, 7.875 * GIB), "gpu": Demand(33, 5, 60 * GIB)}
    assert at_max == expected[profile]


def test_both_users_read_the_one_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Swap the model for a made-up one: preflight and the sizing must both follow it. A copy of their own
    would not see the swap."""
    opts = DeploymentOptions()
    made_up = [Deployment("a", "Cpu", opts, Demand(3, 0, 2 * GIB), 1, 2),
               Deployment("b", "Gpu", opts, Demand(1, 0.5, 1 * GIB), 0, 3)]
    monkeypatch.setattr(resources, "deployments", lambda profile: made_up)
    ops = load()
    reason = preflight.max_replicas_headroom(preflight.Context(ops, "gpu")).reason
    assert "CPU 9 " in reason and "GPU 1.5 " in reason and "memory 7 GiB " in reason, reason
    assert "a/Cpu 2x(CPU 3, memory 2 GiB); b/Gpu 3x(CPU 1, GPU 0.5, memory 1 GiB)" in reason
    assert [d.name for d in preflight.Context(ops, "gpu").configured] == ["a/Cpu", "b/Gpu"]
    groups = {g.name: g for g in sizing.worker_groups(ops.profile("gpu"))}
    assert groups["gpu-workers"].deployments == (made_up[1],)
    assert groups["cpu-workers"].deployments == (made_up[0],)
    assert (groups["gpu-workers"].min_pods, groups["gpu-workers"].max_pods) == (0, 2)
    assert (groups["cpu-workers"].min_pods, groups["cpu-workers"].max_pods) == (1, 1)
