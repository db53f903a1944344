"""`make preflight` with no stack: the default config passes; a config that breaks an item fails it."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from alerts.generate import RULES_FILE
from stack import ROOT, serve_config
from stack.config import OPS_PATH, OpsConfig, load
from stack.tools import preflight
from stack.tools.preflight import Context, Live

GIB = 1024**3
LLM = "llm/LLMServer:tiny-llama"


def _raw() -> dict[str, Any]:
    # Through JSON: the YAML's anchors would otherwise share one dict between deployments.
    return json.loads(json.dumps(yaml.safe_load(OPS_PATH.read_text())))


@pytest.fixture
def last_good(tmp_path: Path) -> Path:
    path = tmp_path / "last-good.yaml"
    path.write_text(serve_config.render(serve_config.build(load(), "cpu")))
    return path


def _results(raw: dict[str, Any], profile: str, last_good: Path, live: Live | None = None,
             rules: Path = RULES_FILE) -> dict[str, preflight.Result]:
    ctx = Context(OpsConfig.model_validate(raw), profile, live or Live(), rules, last_good)
    return {r.item.split(".")[0]: r for r in preflight.evaluate(ctx)}


# Items that cannot be judged from the config alone, per profile, and why (their reasons say so).
OFFLINE_NA = {"cpu": {"2": "num_gpus 0", "6": "not measured"},
              "gpu": {"3": "cluster's unknown", "6": "not measured"}}


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_default_config_passes_what_config_alone_decides(profile: str, last_good: Path) -> None:
    results = _results(_raw(), profile, last_good)
    assert [n for n, r in results.items() if r.status == "FAIL"] == [], results
    na = {n: r.reason for n, r in results.items() if r.status == "N/A"}
    assert set(na) == set(OFFLINE_NA[profile]), na
    for n, why in OFFLINE_NA[profile].items():
        assert why in na[n]


def _dep(raw: dict[str, Any], profile: str, app: str, name: str) -> dict[str, Any]:
    return raw["profiles"][profile]["apps"][app][name]


def _llm(raw: dict[str, Any], profile: str) -> dict[str, Any]:
    return raw["profiles"][profile]["llm"]["models"][0]


# (item, profile, break the raw config, what the reason must name)
BREAKS: dict[str, tuple[str, str, Callable[[dict[str, Any]], Any], list[str]]] = {
    "no-memory": ("1", "cpu",
                  lambda r: _dep(r, "cpu", "embed", "Embedder")["ray_actor_options"].pop("memory"),
                  ["embed/Embedder (memory)"]),
    "llm-no-memory": ("1", "cpu", lambda r: _llm(r, "cpu")["deployment"].pop("ray_actor_options"),
                      [f"{LLM} (memory)"]),
    "no-num-gpus": ("1", "gpu",
                    lambda r: _dep(r, "gpu", "predict", "TenantModels")["ray_actor_options"].pop("num_gpus"),
                    ["predict/TenantModels (num_gpus)"]),
    "gpu-util": ("2", "gpu", lambda r: _llm(r, "gpu")["engine_kwargs"].update(gpu_memory_utilization=0.95),
                 ["tiny-llama: 0.95"]),
    "max-replicas": ("3", "cpu",
                     lambda r: _dep(r, "cpu", "embed", "Embedder")["autoscaling_config"].update(
                         max_replicas=10),
                     ["CPU 13.75 > 80% of 12 = 9.6", "Embedder 10x(CPU 1"]),
    "downscale": ("4", "cpu",
                  lambda r: _dep(r, "cpu", "predict", "TenantModels")["autoscaling_config"].update(
                      downscale_delay_s=60),
                  ["predict/TenantModels 0..1: downscale_delay_s 60 s"]),
    "health": ("5", "cpu", lambda r: _dep(r, "cpu", "classify", "Classifier").pop("health_check_timeout_s"),
               ["classify/Classifier (health_check_timeout_s)"]),
    "graceful": ("6", "cpu", lambda r: _llm(r, "cpu")["deployment"].pop("graceful_shutdown_timeout_s"),
                 [LLM]),
}


@pytest.mark.parametrize("case", BREAKS)
def test_broken_config_fails_its_item(case: str, last_good: Path) -> None:
    item, profile, mutate, names = BREAKS[case]
    raw = _raw()
    mutate(raw)
    results = _results(raw, profile, last_good)
    assert results[item].status == "FAIL", results[item]
    for name in names:
        assert name in results[item].reason
    assert [n for n, r in results.items() if r.status == "FAIL"] == [item]


def test_live_cluster_wins_over_profile_settings(last_good: Path) -> None:
    small = Live(cluster={"CPU": 4.0, "GPU": 0.0, "memory": 8 * GIB})
    result = _results(_raw(), "cpu", last_good, small)["3"]
    assert result.status == "FAIL"
    assert "live Ray cluster" in result.reason and "CPU 4.75 > 80% of 4 = 3.2" in result.reason


def test_unload_time_measured_live(last_good: Path) -> None:
    metric = "ray_serve_replica_shutdown_duration_ms"
    slow = Live(unload_s={LLM: (30.0, metric), "embed/Embedder": (5.0, metric)})
    result = _results(_raw(), "cpu", last_good, slow)["6"]
    assert result.status == "FAIL"
    assert f"{LLM} took a median 30.0 s ({metric}), timeout 20 s" in result.reason
    fast = Live(unload_s={LLM: (5.0, metric)})
    result = _results(_raw(), "cpu", last_good, fast)["6"]
    assert result.status == "PASS"
    assert f"median 5.0 s vs timeout 20 s ({metric}): {LLM}" in result.reason
    assert "not measured: embed/Embedder" in result.reason


def _rules_without(tmp_path: Path, name: str) -> Path:
    doc = yaml.safe_load(RULES_FILE.read_text())
    for group in doc["groups"]:
        group["rules"] = [r for r in group["rules"] if r.get("alert") != name]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_missing_alert_fails(tmp_path: Path, last_good: Path) -> None:
    result = _results(_raw(), "cpu", last_good, rules=_rules_without(tmp_path, "ServeLatencyBudgetBurn"))["7"]
    assert result.status == "FAIL" and "ServeLatencyBudgetBurn" in result.reason
    loaded = preflight._rule_alerts(RULES_FILE) - {"RayNodeMemoryHigh"}
    result = _results(_raw(), "cpu", last_good, Live(alert_rules=loaded))["7"]
    assert result.status == "FAIL" and "not loaded by Prometheus: RayNodeMemoryHigh" in result.reason
    down = Live(cluster={"CPU": 12.0, "GPU": 0.0, "memory": 22 * GIB})
    assert _results(_raw(), "cpu", last_good, down)["7"].status == "FAIL"


def test_rollback_config_must_exist_and_validate(tmp_path: Path) -> None:
    result = _results(_raw(), "cpu", tmp_path / "absent.yaml")["8"]
    assert result.status == "FAIL" and "absent.yaml" in result.reason
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"applications": [{"name": "llm", "import_path": 7}]}))
    result = _results(_raw(), "cpu", bad)["8"]
    assert result.status == "FAIL" and "not a valid Serve config" in result.reason


# The CLI, as `make preflight` runs it, with no stack: the config copy listens on a closed port. One
# run goes through `python -m`; the others call main() in-process, since each new process spends
# seconds importing ray.serve.llm for the resource model.


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config_copy(tmp_path: Path, raw: dict[str, Any]) -> Path:
    port = _closed_port()
    raw["listen"].update(dashboard_port=port, prometheus_port=port)
    path = tmp_path / "ops.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _cli(tmp_path: Path, raw: dict[str, Any], profile: str, *args: str) -> subprocess.CompletedProcess[str]:
    path = _config_copy(tmp_path, raw)
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(io.StringIO()) as out:
        mp.setenv("SERVEOPS_CONFIG", str(path))
        mp.setenv("PROFILE", profile)
        load.cache_clear()
        try:
            code = preflight.main(list(args))
        finally:
            load.cache_clear()
    return subprocess.CompletedProcess(["preflight", *args], code, out.getvalue(), "")


def test_make_preflight_entry_point(tmp_path: Path, last_good: Path) -> None:
    env = {**os.environ, "SERVEOPS_CONFIG": str(_config_copy(tmp_path, _raw())), "PROFILE": "cpu"}
    out = subprocess.run([sys.executable, "-m", "stack.tools.preflight", "--last-good", str(last_good)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "preflight: 6 PASS, 0 FAIL, 2 N/A" in out.stdout


def _line(stdout: str, item: str) -> tuple[str, str]:
    lines = stdout.splitlines()
    i = next(i for i, line in enumerate(lines) if line[6:].startswith(f"{item}. "))
    return lines[i].split()[0], lines[i + 1]


def test_cli_passes_with_no_stack(tmp_path: Path, last_good: Path) -> None:
    out = _cli(tmp_path, _raw(), "cpu", "--last-good", str(last_good))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Ray cluster at" in out.stdout and "not reachable" in out.stdout
    assert [_line(out.stdout, str(i))[0] for i in range(1, 9)] == \
        ["PASS", "N/A", "PASS", "PASS", "PASS", "N/A", "PASS", "PASS"]


@pytest.mark.parametrize("case", BREAKS)
def test_cli_exits_1_on_a_broken_config(case: str, tmp_path: Path, last_good: Path) -> None:
    item, profile, mutate, names = BREAKS[case]
    raw = _raw()
    mutate(raw)
    out = _cli(tmp_path, raw, profile, "--last-good", str(last_good))
    assert out.returncode == 1, out.stdout + out.stderr
    status, reason = _line(out.stdout, item)
    assert status == "FAIL" and names[0] in reason, out.stdout


def test_cli_exits_1_on_missing_alert_or_rollback_config(tmp_path: Path, last_good: Path) -> None:
    rules = _rules_without(tmp_path, "ServeErrorBudgetBurn")
    out = _cli(tmp_path, _raw(), "cpu", "--last-good", str(last_good), "--rules", str(rules))
    assert out.returncode == 1 and _line(out.stdout, "7")[0] == "FAIL", out.stdout
    out = _cli(tmp_path, _raw(), "cpu", "--last-good", str(tmp_path / "absent.yaml"))
    assert out.returncode == 1 and _line(out.stdout, "8")[0] == "FAIL", out.stdout
