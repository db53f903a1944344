"""The ops config loads, is strict, and carries the guide's production values in the GPU profile."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from stack.config import OPS_PATH, OpsConfig, load, parse


def test_both_profiles_load() -> None:
    ops = load()
    assert set(ops.profiles) == {"cpu", "gpu"}
    for profile in ops.profiles.values():
        assert profile.llm.models


def test_listeners_are_loopback() -> None:
    assert load().listen.host == "127.0.0.1"


def test_cpu_profile_fits_two_cores() -> None:
    cpu = load().profile("cpu")
    model = cpu.llm.models[0]
    assert cpu.cluster.num_gpus == 0
    assert model.placement_group_config == {"bundles": [{"CPU": 1}]}
    assert model.engine_kwargs["dtype"] == "float32"
    assert "VLLM_CPU_KVCACHE_SPACE" in cpu.cluster.env


def test_gpu_profile_has_guide_values() -> None:
    model = load().profile("gpu").llm.models[0]
    assert model.engine_kwargs["gpu_memory_utilization"] == 0.85
    assert model.engine_kwargs["max_model_len"] == 4096
    scaling = model.deployment.autoscaling_config
    assert (scaling["min_replicas"], scaling["max_replicas"], scaling["target_ongoing_requests"]) == (1, 4, 5)
    assert model.deployment.health_check_period_s and model.deployment.graceful_shutdown_timeout_s


def _raw() -> dict:
    return yaml.safe_load(OPS_PATH.read_text())


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "ops.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_unknown_key_is_rejected(tmp_path: Path) -> None:
    raw = _raw()
    raw["profiles"]["cpu"]["llm"]["models"][0]["deployment"]["max_ongoing_request"] = 5  # typo
    with pytest.raises(ValidationError, match="max_ongoing_request"):
        parse(_write(tmp_path, raw))


def test_replicas_and_autoscaling_conflict(tmp_path: Path) -> None:
    raw = _raw()
    raw["profiles"]["cpu"]["llm"]["models"][0]["deployment"]["num_replicas"] = 2
    with pytest.raises(ValidationError, match="not both"):
        parse(_write(tmp_path, raw))


def test_duplicate_model_ids_rejected(tmp_path: Path) -> None:
    raw = _raw()
    models = raw["profiles"]["cpu"]["llm"]["models"]
    models.append(dict(models[0]))
    with pytest.raises(ValidationError, match="unique"):
        parse(_write(tmp_path, raw))


def test_unknown_profile_named() -> None:
    with pytest.raises(ValueError, match="tpu"):
        load().profile("tpu")


def test_parse_round_trips() -> None:
    assert isinstance(parse(OPS_PATH), OpsConfig)


def test_batching_needs_headroom(tmp_path: Path) -> None:
    raw = _raw()
    raw["profiles"]["cpu"]["apps"]["embed"]["Embedder"]["max_ongoing_requests"] = 32  # == max_batch_size
    with pytest.raises(ValidationError, match="must exceed"):
        parse(_write(tmp_path, raw))


def test_every_profile_has_a_deployment_that_scales_to_zero() -> None:
    for name, profile in load().profiles.items():
        mins = [opts.min_replicas for app in profile.apps.values() for opts in app.values()]
        assert 0 in mins, name


def test_gpu_profile_uses_fractional_gpus_and_guide_scaling() -> None:
    embedder = load().profile("gpu").deployment("embed", "Embedder")
    assert 0 < embedder.ray_actor_options["num_gpus"] < 1
    scaling = embedder.autoscaling_config
    assert scaling["downscale_delay_s"] >= 300 and scaling["downscaling_factor"] == 0.5
    assert embedder.max_ongoing_requests > embedder.batching.max_batch_size


def test_cpu_profile_batching_and_multiplexing() -> None:
    cpu = load().profile("cpu")
    assert cpu.deployment("embed", "Embedder").batching.max_batch_size == 32
    assert cpu.deployment("predict", "TenantModels").max_num_models_per_replica == 3
