"""The fault hook, in-process: the control file, the injector's matching and caching, each fault kind
through a hardened app, and nothing installed when the args leave faults out. No Ray cluster."""

from __future__ import annotations

import asyncio
import pickle
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from ray import serve

from stack import serve_config
from stack.config import load
from stack.serving import faults as faults_mod
from stack.serving.faults import (
    DEFAULT_CONTROL_FILE,
    FaultInjected,
    FaultInjector,
    FaultSpec,
    ReplicaIdentity,
    clear_faults,
    control_path,
    read_faults,
    write_faults,
)
from stack.serving.http_api import FaultGate, new_api
from stack.serving.models import PROJECT_ROOT
from stack.serving.observability import request_observer
from stack.serving.observability.request_observer import RequestObserver
from stack.serving.settings import ApiLimits, FaultSettings

LIMITS = ApiLimits(max_body_bytes=1000, max_text_chars=100, max_texts=4, max_features=4,
                   max_tenant_id_chars=16, max_messages=4, max_prompt_chars=100)
HERE = ReplicaIdentity("classify", "Preprocessor", "r1")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def injector(path: Path, where: ReplicaIdentity | None = HERE, **kwargs: Any) -> FaultInjector:
    return FaultInjector(path, identity=lambda: where, **{"poll_s": 0.0, **kwargs})


def spec(**kwargs: Any) -> FaultSpec:
    return FaultSpec(**{"id": "exp", "kind": "error", "app": "classify", **kwargs})


# --- the control file -------------------------------------------------------------------------------

def test_write_then_read_round_trips_atomically(tmp_path: Path) -> None:
    path = tmp_path / "run" / "faults.json"
    assert read_faults(path) == []  # missing: no faults
    specs = [spec(), spec(id="slow", kind="delay", delay_ms=20, deployment="Pipeline", share=0.5)]
    write_faults(path, specs)
    assert read_faults(path) == specs
    assert [p.name for p in path.parent.iterdir()] == ["faults.json"]  # no temporary file left
    write_faults(path, [])
    assert read_faults(path) == []
    clear_faults(path)
    clear_faults(path)  # twice is fine
    assert not path.exists()


def test_a_bad_control_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    path.write_text('{"faults": [{"id": "x", "kind": "explode", "app": "embed"}]}')
    with pytest.raises(ValueError, match=f"fault control file {path} is invalid"):
        read_faults(path)


@pytest.mark.parametrize(("fields", "problem"), [
    ({"kind": "delay"}, "delay_ms > 0"),
    ({"status": 404}, "greater than or equal to 500"),
    ({"share": 0}, "greater than 0"),
    ({"share": 1.5}, "less than or equal to 1"),
    ({"id": ""}, "at least 1"),
    ({"replicas": "r1"}, "Extra inputs"),
    ({"status": "503"}, "valid integer"),
])
def test_fault_spec_is_strict(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        spec(**fields)


def test_control_file_resolves_against_the_project_root(tmp_path: Path) -> None:
    assert control_path() == PROJECT_ROOT / ".run" / "faults.json" == control_path(DEFAULT_CONTROL_FILE)
    assert control_path(tmp_path / "f.json") == tmp_path / "f.json"
    built = FaultInjector.from_settings(FaultSettings(control_file=DEFAULT_CONTROL_FILE))
    assert built.path == PROJECT_ROOT / DEFAULT_CONTROL_FILE


# --- matching, share, caching ----------------------------------------------------------------------

@pytest.mark.parametrize(("fields", "hits"), [
    ({}, True),
    ({"app": "embed"}, False),
    ({"deployment": "Preprocessor"}, True),
    ({"deployment": "Pipeline"}, False),
    ({"deployment": "Preprocessor", "replica": "r1"}, True),
    ({"replica": "r2"}, False),
])
def test_injector_matches_app_deployment_and_replica(tmp_path: Path, fields: dict[str, Any],
                                                     hits: bool) -> None:
    path = tmp_path / "faults.json"
    write_faults(path, [spec(**fields)])
    assert injector(path).active() == ((spec(**fields),) if hits else ())


def test_nothing_matches_outside_a_replica(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    write_faults(path, [spec()])
    assert injector(path, where=None).active() == ()


def test_serve_identity_reads_the_replica_context(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = SimpleNamespace(app_name="embed", deployment="Embedder",
                          replica_id=SimpleNamespace(unique_id="abc"))
    monkeypatch.setattr(serve, "get_replica_context", lambda: ctx)
    assert faults_mod.serve_identity() == ReplicaIdentity("embed", "Embedder", "abc")
    # A harness's stand-in context (no replica id) is no replica: a live control file cannot reach it.
    monkeypatch.setattr(serve, "get_replica_context", lambda: SimpleNamespace(app_name="embed",
                                                                              deployment="Embedder"))
    assert faults_mod.serve_identity() is None


def test_serve_identity_is_none_outside_a_replica() -> None:
    assert faults_mod.serve_identity() is None


def test_share_draws_per_request(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    write_faults(path, [spec(share=0.25)])
    draws = iter([0.1, 0.9, 0.24, 0.25])
    hook = injector(path, rng=lambda: next(draws))
    outcomes = []
    for _ in range(4):
        try:
            asyncio.run(hook.apply())
            outcomes.append("ok")
        except FaultInjected:
            outcomes.append("fault")
    assert outcomes == ["fault", "ok", "fault", "ok"]


def test_reads_at_most_every_poll_and_only_a_changed_file(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path, clock = tmp_path / "faults.json", Clock()
    reads: list[Path] = []
    real_read = faults_mod.read_faults
    monkeypatch.setattr(faults_mod, "read_faults", lambda p: reads.append(p) or real_read(p))
    hook = FaultInjector(path, identity=lambda: HERE, clock=clock)
    assert hook.active() == ()  # missing file: no faults, nothing parsed
    write_faults(path, [spec()])
    clock.now = 0.4
    assert hook.active() == ()  # within 0.5 s the last view stands
    clock.now = 0.5
    assert hook.active() == (spec(),) and len(reads) == 1
    clock.now = 1.0
    assert hook.active() == (spec(),) and len(reads) == 1  # unchanged file: not parsed again
    write_faults(path, [spec(id="other")])
    clock.now = 1.5
    assert hook.active() == (spec(id="other"),) and len(reads) == 2
    clear_faults(path)
    clock.now = 2.0
    assert hook.active() == ()


def test_a_bad_file_means_no_faults_on_a_replica(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    path.write_text("{not json")
    assert injector(path).active() == ()


# --- effects ---------------------------------------------------------------------------------------

def test_hang_holds_until_the_fault_is_removed_with_the_loop_free(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    write_faults(path, [spec(kind="hang")])
    hook = injector(path, poll_s=0.01)

    async def scenario() -> tuple[bool, int, bool]:
        hung = asyncio.create_task(hook.apply())
        ticks = 0
        for _ in range(10):  # the loop keeps running other work (Serve's health check, in a replica)
            await asyncio.sleep(0.005)
            ticks += 1
        held = not hung.done()
        clear_faults(path)
        await asyncio.wait_for(hung, timeout=1)
        return held, ticks, hung.done()

    assert asyncio.run(scenario()) == (True, 10, True)


def test_delay_sleeps(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    write_faults(path, [spec(kind="delay", delay_ms=60)])
    started = time.perf_counter()
    asyncio.run(injector(path).apply())
    assert time.perf_counter() - started >= 0.06


def test_fault_injected_crosses_a_handle() -> None:
    """Picklable with its fields; Ray re-raises it in the caller as a subclass reading them."""
    from ray.exceptions import RayTaskError

    fault = pickle.loads(pickle.dumps(FaultInjected("exp", 502)))
    assert (fault.fault_id, fault.status, fault.message) == ("exp", 502, "fault injected: exp (502)")
    remote = RayTaskError("preprocess", "Traceback ...", fault).as_instanceof_cause()
    assert isinstance(remote, FaultInjected) and remote.status == 502 and remote.fault_id == "exp"


# --- through a hardened app ------------------------------------------------------------------------

@pytest.fixture
def observed(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    """The tags of each serveops_requests_total sample the request observer records."""
    seen: list[dict[str, str]] = []
    fake = SimpleNamespace(requests=SimpleNamespace(inc=lambda tags=None: seen.append(tags)))
    monkeypatch.setattr(request_observer, "metrics", lambda: fake)
    return seen


def faulty_app(path: Path, monkeypatch: pytest.MonkeyPatch, where: ReplicaIdentity = HERE) -> Any:
    """A hardened app with faults on, as this replica; POST /below raises a fault as a handle's call
    into a faulty Preprocessor would (Ray's RayTaskError subclass of it)."""
    from ray.exceptions import RayTaskError

    ctx = SimpleNamespace(app_name=where.app, deployment=where.deployment,
                          replica_id=SimpleNamespace(unique_id=where.replica))
    monkeypatch.setattr(serve, "get_replica_context", lambda: ctx)
    api = new_api("test", LIMITS, FaultSettings(control_file=str(path)))

    @api.post("/")
    async def echo(body: dict) -> dict:
        return body

    @api.post("/below")
    async def below() -> dict:
        raise RayTaskError("preprocess", "Traceback ...", FaultInjected("deep", 502)).as_instanceof_cause()

    return api


def gate_of(api: Any) -> FaultInjector:
    return next(m.kwargs["injector"] for m in api.user_middleware if m.cls is FaultGate)


def test_error_answers_the_contract_and_is_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   observed: list[dict[str, str]]) -> None:
    path = tmp_path / "faults.json"
    write_faults(path, [spec(id="slo-burn", status=503)])
    client = TestClient(faulty_app(path, monkeypatch))
    resp = client.post("/", json={"a": 1})
    assert resp.status_code == 503 and resp.headers["content-type"] == "application/json"
    assert resp.json() == {"error": {"message": "fault injected: slo-burn (503)", "type": "fault_injected",
                                     "param": None, "code": 503}}
    # Inside the request observer: our metrics count the injected 5xx.
    assert observed[-1] == {"route": "other", "outcome": "server_error", "error_class": "fault_injected"}
    clear_faults(path)
    gate_of(client.app).poll_s = 0
    assert client.post("/", json={"a": 1}).json() == {"a": 1}
    assert observed[-1]["outcome"] == "ok"


def test_a_fault_raised_below_the_ingress_answers_the_same(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    client = TestClient(faulty_app(tmp_path / "none.json", monkeypatch))
    resp = client.post("/below", json={})
    assert resp.status_code == 502
    assert resp.json()["error"] == {"message": "fault injected: deep (502)", "type": "fault_injected",
                                    "param": None, "code": 502}


def test_other_apps_and_replicas_are_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "faults.json"
    write_faults(path, [spec(app="embed"), spec(replica="r2")])
    client = TestClient(faulty_app(path, monkeypatch))
    assert client.post("/", json={"a": 1}).status_code == 200


def test_delay_through_the_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "faults.json"
    write_faults(path, [spec(kind="delay", delay_ms=80, deployment="Preprocessor")])
    client = TestClient(faulty_app(path, monkeypatch))
    started = time.perf_counter()
    assert client.post("/", json={"a": 1}).status_code == 200
    assert time.perf_counter() - started >= 0.08


def test_the_gate_sits_inside_the_observer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    order = [m.cls for m in faulty_app(tmp_path / "f.json", monkeypatch).user_middleware]  # outermost first
    assert order.index(RequestObserver) < order.index(FaultGate)


def test_no_hook_when_faults_are_off() -> None:
    api = new_api("test", LIMITS)
    assert FaultGate not in [m.cls for m in api.user_middleware]
    assert FaultInjected not in api.exception_handlers


# --- the builders and the Serve config -------------------------------------------------------------

@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_serve_config_renders_faults_only_where_the_profile_enables_them(profile: str) -> None:
    ops = load()
    config = serve_config.build(ops, profile)
    enabled = ops.profile(profile).fault_injection
    assert enabled == (profile == "cpu")
    for app in config["applications"]:
        expected = {"control_file": DEFAULT_CONTROL_FILE} if enabled and app["name"] != "llm" else None
        assert app["args"].get("faults") == expected, app["name"]


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_classify_builder_passes_faults_to_the_preprocessor(profile: str) -> None:
    from stack.serving import apps

    args = next(a for a in serve_config.build(load(), profile)["applications"]
                if a["name"] == "classify")["args"]
    built = apps.classify_app(args)
    preprocessor = built._bound_deployment.init_args[0]._bound_deployment
    settings = preprocessor.init_args[0]
    assert (settings is not None) == (profile == "cpu")
    if settings is not None:
        assert settings.control_file == DEFAULT_CONTROL_FILE
