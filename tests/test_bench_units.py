"""make bench without the stack: wrk's script and summary (against a local HTTP server), CPU grouping,
vLLM flags, goals and the report, section selection, and the instrumentation switch."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import ValidationError

from loadtests.bench import cpu, llm, results, run, wrk
from stack import prom
from stack.config import Goal, load
from stack.local import ray_head
from stack.serving.observability import metrics as serveops_metrics
from stack.serving.observability import switch


class _Batches(BaseHTTPRequestHandler):
    """Answers every POST with batch_size 1, 4, 1, 4, ...; every fifth request with a 503."""

    count = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            type(self).count += 1
            n = type(self).count
        answer = {"batch_size": 1 if n % 2 else 4}
        status, body = (503, b"{}") if n % 5 == 0 else (200, json.dumps(answer).encode())
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def batches_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Batches)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/embed"
    server.shutdown()


def test_wrk_counts_failures_and_the_harmonic_mean_of_a_field(batches_url: str) -> None:
    result = wrk.run(batches_url, json.dumps({"text": "it's [[quoted]]"}), 2, 1, field="batch_size")
    assert result.requests > 20
    assert 0.1 < result.failed / result.requests < 0.3  # every fifth answer is a 503
    # 1 and 4 alternate: the harmonic mean is 2 / (1 + 1/4) = 1.6, the arithmetic one 2.5.
    assert result.field_harmonic_mean == pytest.approx(1.6, abs=0.1)
    assert result.ok_per_s == pytest.approx((result.requests - result.failed) / result.duration_s)
    assert 0 < result.p50_ms <= result.p99_ms
    plain = wrk.run(batches_url, "{}", 1, 1)
    assert plain.field_harmonic_mean is None and plain.requests > 0


def test_wrk_script_and_parse() -> None:
    script = wrk.lua_script('{"a": "]]"}', {"serve_multiplexed_model_id": "acme"}, field="batch_size")
    assert 'wrk.body = [==[{"a": "]]"}]==]' in script
    assert 'wrk.headers["serve_multiplexed_model_id"] = "acme"' in script
    assert '"batch_size"%s*:' in script and "FIELD" not in script
    line = ('{"requests": 10, "duration_us": 2000000, "non_2xx": 1, "socket_errors": 1, "p50_us": 1500, '
            '"p90_us": 2000, "p99_us": 3000, "mean_us": 1600.0, "field_seen": 0, "field_inverse_sum": 0.0}')
    parsed = wrk.parse("Running 2s test\n" + line + "\n", connections=4)
    assert (parsed.requests, parsed.failed, parsed.p50_ms, parsed.ok_per_s) == (10, 2, 1.5, 4.0)
    assert parsed.field_harmonic_mean is None
    with pytest.raises(RuntimeError, match="no summary"):
        wrk.parse("unable to connect", connections=1)


def test_cpu_groups_and_per_request_figures() -> None:
    assert cpu.group("ray::ServeReplica:embed:Embedder.handle_request_with_rejection") == \
        "ray::ServeReplica:embed:Embedder"
    assert cpu.group("ray::ProxyActor") == "ray::ProxyActor"
    assert cpu.group("VLLM::Worker") == "vllm"
    assert cpu.group("/usr/bin/prometheus --config.file=x") == "other"
    before = {1: ("ray::ProxyActor", 1.0), 2: ("other", 5.0)}
    after = {1: ("ray::ProxyActor", 1.5), 2: ("other", 5.1), 3: ("vllm", 0.2)}  # pid 3 started meanwhile
    figures = cpu.per_request_ms(before, after, requests=100)
    assert figures == {"ray::ProxyActor": 5.0, "vllm": 2.0, "other": 1.0, "all": 8.0}
    snap = cpu.snapshot()
    assert snap and all(cpu_s >= 0 for _, cpu_s in snap.values())


def test_engine_kwargs_become_vllm_flags() -> None:
    flags = llm.engine_flags({"dtype": "float32", "max_model_len": 512, "enforce_eager": True,
                              "tensor_parallel_size": 1, "trust_remote_code": False})
    assert flags == ["--dtype", "float32", "--max-model-len", "512", "--enforce-eager",
                     "--tensor-parallel-size", "1"]
    model = load().profile("cpu").llm.models[0]
    assert "--max-model-len" in llm.engine_flags(model.engine_kwargs)


def test_goals_judge_and_report() -> None:
    with pytest.raises(ValidationError):
        Goal(min=1, max=2)
    goals = {"batching_gain": Goal(min=1.5), "ttft_overhead_ms": Goal(max=15),
             "bert_serve_efficiency": Goal(min=0.7), "gpu_texts_efficiency": Goal(min=0.5)}
    doc = {"batching_gain": {"value": 2.0}, "ttft_overhead_ms": {"value": 40.0},
           "bert_serve_efficiency": {"value": math.nan},
           "gpu_texts_efficiency": {"value": None, "skipped": "no GPU"},
           "detection_latency_s": {"alerts": {"ServeDeploymentFailed": {
               "experiment": "bad-rollout", "detect_s": 12.0, "condition_s": 11.5, "alerting_s": 0.5,
               "bound_s": 10.0, "within_bound": True}}}}
    results.judge(doc, goals)
    assert (doc["batching_gain"]["met"], doc["ttft_overhead_ms"]["met"]) == (True, False)
    assert doc["ttft_overhead_ms"]["goal"] == "<= 15"
    assert doc["bert_serve_efficiency"]["met"] is False  # NaN never meets a goal
    assert "met" not in doc["gpu_texts_efficiency"]
    table = results.markdown(doc)
    assert "| batching_gain | 2.0 | >= 1.5 | yes |" in table
    assert "| ttft_overhead_ms | 40.0 | <= 15 | **no** |" in table
    assert "not measured: no GPU" in table
    assert "| ServeDeploymentFailed (bad-rollout) | 12.0 | 11.5 | 0.5 | 10 | True |" in table


def test_every_goal_names_a_figure_the_bench_fills() -> None:
    owed = {name for names in run.OWES.values() for name in names} | {"gpu_texts_efficiency"}
    assert set(load().bench.goals) <= owed
    assert set(results.FIGURES) - {"texts_efficiency"} <= set(load().bench.goals)


def test_bench_settings_from_env() -> None:
    assert run.settings({}) == ("full", list(run.SECTIONS))
    assert run.settings({"BENCH": "smoke", "ONLY": "llm, embed"}) == ("smoke", ["embed", "llm"])
    with pytest.raises(SystemExit, match="BENCH"):
        run.settings({"BENCH": "fast"})
    with pytest.raises(SystemExit, match="unknown sections"):
        run.settings({"ONLY": "embed,gpu"})


def test_gpu_figure_only_on_a_gpu() -> None:
    figures = {"texts_efficiency": {"value": 0.8, "inputs": {"concurrency": 4}}}
    assert run.gpu_figure(figures, "cpu", None)["value"] is None
    on_gpu = run.gpu_figure(figures, "cuda", "NVIDIA H100 80GB HBM3")
    assert (on_gpu["value"], on_gpu["card"]) == (0.8, "NVIDIA H100 80GB HBM3")


def test_machine_record() -> None:
    machine = results.machine("cpu")
    assert machine["cores"] >= 1 and machine["memory_gb"] > 0 and machine["cpu"]
    assert "ray" in machine["versions"] and "torch" in machine["versions"]


def test_instrumentation_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    ops = load()
    cluster = ops.profile("cpu").cluster
    assert switch.mode({}) == "full"
    with pytest.raises(ValueError, match="SERVEOPS_INSTRUMENTATION"):
        switch.mode({switch.ENV: "partial"})
    inherited = {switch.ENV: "off", "RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH": "x"}
    off = ray_head.head_env(ops, cluster, base=inherited)
    assert off[switch.ENV] == "off" and "RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH" not in off
    full = ray_head.head_env(ops, cluster, base={})
    assert full[switch.ENV] == "full" and full["RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH"]
    monkeypatch.setenv(switch.ENV, "off")
    serveops_metrics.metrics.cache_clear()
    try:
        m = serveops_metrics.metrics()
        m.requests.inc(tags={"route": "/embed", "outcome": "ok", "error_class": "none"})
        m.input_chars.observe(3, tags={"route": "/embed"})
        assert type(m.requests).__name__ == "_Off"
    finally:
        serveops_metrics.metrics.cache_clear()


def test_prometheus_times_with_nanoseconds() -> None:
    assert prom.parse_time("2026-11-27T21:00:00.123456789Z") == pytest.approx(1795813200.123456789)
    assert prom.parse_time("2026-11-27T21:00:00Z") == 1795813200.0
