"""Units of the instrumentation that need no live stack."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stack import ROOT
from stack.config import load
from stack.local import daemons, instrumentation, ray_head
from stack.serving.observability import tracing
from stack.serving.observability.metrics import outcome, route_label
from stack.tools.traces import as_tree, render


def span(span_id: str, parent: str | None, name: str, start: int) -> dict:
    return {"trace_id": "t" * 32, "span_id": span_id, "parent_span_id": parent, "name": name,
            "start_unix_ns": start, "duration_ms": 1.0, "attributes": {"k": "v"}}


def test_tree_orders_by_parent_then_start() -> None:
    spans = [span("c", "a", "second-child", 3), span("a", "client", "root", 1),
             span("b", "a", "first-child", 2), span("d", "b", "grandchild", 4)]
    order = [(depth, s["name"]) for depth, s in as_tree(spans)]
    assert order == [(0, "root"), (1, "first-child"), (2, "grandchild"), (1, "second-child")]
    line = render(2, spans[3])
    assert line.startswith("t" * 32 + "     grandchild") and "parent=b" in line


def test_route_labels_are_bounded() -> None:
    assert route_label("/embed/") == "/embed"
    assert route_label("/v1/chat/completions") == "/v1/chat/completions"
    assert route_label("/../../etc/passwd") == "other"
    assert (outcome(200), outcome(422), outcome(503)) == ("ok", "client_error", "server_error")


def test_head_env_wires_tracing_and_memory_profiling() -> None:
    ops = load()
    cluster = ops.profile("cpu").cluster
    env = ray_head.head_env(ops, cluster, base={"PATH": "/bin"})
    exporter = env["RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH"]
    assert exporter == "stack.serving.observability.tracing:span_processors"
    assert float(env["RAY_SERVE_TRACING_SAMPLING_RATIO"]) == ops.observability.tracing_sampling_ratio
    assert "RAY_SERVE_ENABLE_MEMORY_PROFILING" not in env
    profiled = ray_head.head_env(ops, cluster, base={"PROFILE_MEMORY": "1"})
    assert profiled["RAY_SERVE_ENABLE_MEMORY_PROFILING"] == "1"


def test_local_head_sets_its_auth_mode(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ~/.ray/auth_token left by any ray.init() must not turn token auth on under our clients."""
    seen: dict[str, str] = {}

    def fake_run(cmd, env, **_):
        seen.update(env)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(ray_head.subprocess, "run", fake_run)
    monkeypatch.setattr(ray_head.instrumentation, "record", lambda _: None)
    ops = load()
    ray_head.start(ops, ops.profile("cpu").cluster, tmp_path / "ray-start.log")
    assert seen["RAY_AUTH_MODE"] == "disabled"
    pods = ray_head.head_env(ops, ops.profile("gpu").cluster, base={})
    assert "RAY_AUTH_MODE" not in pods  # on Kubernetes, KubeRay decides


def test_span_processors_read_only_the_environment(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The exporter Ray calls with no args: the JSON-lines sink always, OTLP when the env names it."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    monkeypatch.delenv(tracing.TRACE_DIR_ENV, raising=False)
    assert tracing.trace_dir() == tracing.DEFAULT_TRACE_DIR
    assert ray_head.trace_dir() == ROOT / ".run" / "traces"  # the local head sets it, make traces reads it
    monkeypatch.setenv(tracing.TRACE_DIR_ENV, str(tmp_path))
    monkeypatch.delenv(tracing.OTLP_ENDPOINT_ENV, raising=False)
    plain = tracing.span_processors()
    monkeypatch.setenv(tracing.OTLP_ENDPOINT_ENV, "http://127.0.0.1:1/v1/traces")
    with_otlp = tracing.span_processors()
    try:
        assert len(plain) == 1 and list(tmp_path.glob("spans-*.jsonl"))
        assert isinstance(with_otlp[1].span_exporter, OTLPSpanExporter)
    finally:
        for processor in [*plain, *with_otlp]:
            processor.shutdown()


def test_running_mode_is_recorded_by_the_operating_side(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(daemons, "RUN_DIR", tmp_path)
    assert instrumentation.running_mode() == "full"
    instrumentation.record("off")
    assert instrumentation.running_mode() == "off" and (tmp_path / "instrumentation").exists()


def test_daemon_lifecycle(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(daemons, "RUN_DIR", tmp_path)
    pid = daemons.start("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
    assert daemons.pid_of("sleeper") == pid
    assert daemons.start("sleeper", ["unused"]) == pid  # already running: not started twice
    assert daemons.all_names() == ["sleeper"]
    assert daemons.stop("sleeper")
    assert daemons.pid_of("sleeper") is None and daemons.all_names() == []
