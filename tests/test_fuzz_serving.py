"""Bad input, found by a machine: a property-based fuzz of every app's OpenAPI spec, in-process.

The apps are built from stack/serve/cpu.yaml as Serve builds them and served by instances of their
ingress classes (tests/isolated_replica.py), on one event loop: MiniLM, the sentiment head and the
tenant store are the real models; the LLM ingress runs over a stand-in LLM (FakeLLM), as the cpu profile
builds it (one hop, the one_hop_llm lever) and with a hop to the model's deployment. Every generated
request (loadtests/bench/openapi_fuzz.py: bodies from the spec and near it, malformed JSON, other
content types, any bytes in headers) must get no 5xx, and a 4xx only with the contract's JSON error.
Also, per app: 413 for a body over the limit, with Content-Length and chunked, and a 400 naming a
non-ASCII header. The live stack gets the same fuzz in tests/live/test_bad_input.py and `make bench`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, given, settings

from loadtests.bench.openapi_fuzz import FuzzRequest, spec_requests, violations
from stack.serving.settings import ONE_HOP
from tests.isolated_replica import (
    Answer,
    Replica,
    build,
    entry_of,
    llm_replica,
    no_ray,
    pipeline_replica,
    predict_replica,
    real_classifier,
)
from tests.test_serving_isolation import SERVE_CONFIG

CONFIG = yaml.safe_load(SERVE_CONFIG.read_text())
APPS = ("embed", "classify", "predict", "llm")
FUZZED = (*APPS, "llm-two-hop")  # the body limits and headers are the same middleware for both LLM builds


def two_hop(config: dict[str, Any]) -> dict[str, Any]:
    """The LLM app's entry without the one_hop_llm lever (as the gpu profile runs it)."""
    entry = json.loads(json.dumps(entry_of(config, "llm")))
    for model in entry["args"]["llm_configs"]:
        model.get("experimental_configs", {}).pop(ONE_HOP, None)
    return entry
# Per app; the unit suite's share of the fuzz. The live test and `make bench` run more.
EXAMPLES = {"embed": 50, "classify": 80, "predict": 80, "llm": 100, "llm-two-hop": 50}
TENANT = "serve_multiplexed_model_id"
GOOD = {
    "embed": ("/", {"text": ["first text", "second text"]}, {}),
    "classify": ("/", {"text": "The rollout went smoothly."}, {}),
    "predict": ("/", {"features": [0.5, -1, 2, 0, 1.5, -0.25, 3, 1]}, {TENANT: "acme"}),
    "llm": ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}, {}),
}
GOOD["llm-two-hop"] = GOOD["llm"]


@pytest.fixture(scope="module")
def replicas() -> Iterator[dict[str, Replica]]:
    from ray import serve

    with pytest.MonkeyPatch.context() as patch, start_blocking_portal() as portal:
        patch.setattr(serve, "get_replica_context", lambda: Replica.current)
        with no_ray():
            built = build(CONFIG, APPS)
            hop = two_hop(CONFIG)
            built["llm-two-hop"] = build({"applications": [hop]}, ("llm",))["llm"]
        embed = Replica(built["embed"], entry_of(CONFIG, "embed"), portal=portal)
        classifier = real_classifier(built["classify"]._bound_deployment.init_args[1], embed)
        yield {
            "embed": embed,
            "classify": pipeline_replica(built["classify"], entry_of(CONFIG, "classify"), classifier, portal),
            "predict": predict_replica(built["predict"], entry_of(CONFIG, "predict"), portal),
            "llm": llm_replica(built["llm"], entry_of(CONFIG, "llm"), portal),
            "llm-two-hop": llm_replica(built["llm-two-hop"], hop, portal),
        }


def send(replica: Replica, request: FuzzRequest) -> Answer:
    """As raw ASGI, so header bytes arrive as generated (a TestClient would re-encode them). Names are
    lowercased as every ASGI server does (the spec requires it): an upper-case name cannot reach an app."""
    headers = [(name.lower(), value) for name, value in request.headers]
    if request.body is not None:
        headers.append((b"content-length", str(len(request.body)).encode()))
    return replica.asgi(request.method, request.path, headers, [request.body] if request.body else [])


def known_values(replicas: dict[str, Replica]) -> dict[str, list[str]]:
    """Values the schemas alone would almost never hit: the real tenants and model ids."""
    tenants = sorted(p.stem for p in replicas["predict"].instance.store.glob("*.joblib"))
    models = [c["model_loading_config"]["model_id"] for c in entry_of(CONFIG, "llm")["args"]["llm_configs"]]
    return {TENANT: tenants, "model": models}


def assert_contract(response: Any, request: Any = None) -> None:
    if isinstance(response, Answer):
        problems = violations(response.status, response.content_type, response.body)
    else:
        content_type = response.headers.get("content-type", "")
        problems = violations(response.status_code, content_type, response.content)
    assert not problems, f"{problems} <- {request!r}"


def assert_serving(replica: Replica, app: str) -> None:
    path, body, headers = GOOD[app]
    response = replica.request("POST", path, json=body, headers=headers)
    assert response.status_code == 200, response.text


def test_the_llm_app_is_fuzzed_as_both_builds(replicas: dict[str, Replica]) -> None:
    from stack.serving.llm_app import OneHopIngress

    assert isinstance(replicas["llm"].instance, OneHopIngress)  # the cpu profile's one_hop_llm
    assert not isinstance(replicas["llm-two-hop"].instance, OneHopIngress)


@pytest.mark.parametrize("app", FUZZED)
def test_fuzz_the_spec(replicas: dict[str, Replica], app: str) -> None:
    replica = replicas[app]
    strategy = spec_requests(replica.openapi(), known_values(replicas))

    @settings(max_examples=EXAMPLES[app], database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                     HealthCheck.data_too_large])
    @given(strategy)
    def fuzz(request: FuzzRequest) -> None:
        assert_contract(send(replica, request), request)

    fuzz()
    assert_serving(replica, app)  # and the replica still answers


def oversized(app: str) -> tuple[str, bytes, dict[str, str]]:
    limit = entry_of(CONFIG, app)["args"]["api"]["max_body_bytes"]
    path, body, headers = GOOD[app]
    padded = {**body, "pad": "x" * limit}  # over the byte limit before any field check
    return path, json.dumps(padded).encode(), {"Content-Type": "application/json", **headers}


@pytest.mark.parametrize("app", APPS)
@pytest.mark.parametrize("how", ["content-length", "chunked"])
def test_a_body_over_the_limit_is_413(replicas: dict[str, Replica], app: str, how: str) -> None:
    path, body, headers = oversized(app)
    content = body if how == "content-length" else (body[i:i + 65536] for i in range(0, len(body), 65536))
    response = replicas[app].request("POST", path, content=content, headers=headers)
    assert response.status_code == 413, response.text[:300]
    assert_contract(response)
    assert response.json()["error"]["type"] == "request_too_large"


@pytest.mark.parametrize("app", APPS)
def test_a_streamed_body_over_the_limit_is_413_and_read_no_further(replicas: dict[str, Replica],
                                                                    app: str) -> None:
    path, body, headers = oversized(app)
    chunks = [body[i:i + 65536] for i in range(0, len(body), 65536)] + [b" " * 65536] * 8
    raw = tuple((k.lower().encode(), v.encode()) for k, v in headers.items())
    answer = replicas[app].asgi("POST", path, [*raw, (b"transfer-encoding", b"chunked")], chunks)
    assert answer.status == 413
    assert_contract(answer)
    assert answer.chunks_read == len(body) // 65536 + 1  # the chunk that passed the limit was the last read


@pytest.mark.parametrize("app", APPS)
@pytest.mark.parametrize("header", [TENANT, "x-request-id"])
@pytest.mark.parametrize("value", [b"\xff", "caf\u00e9".encode("latin-1"), "cafe\u0301".encode()])
def test_a_non_ascii_header_is_400_naming_it(replicas: dict[str, Replica], app: str, header: str,
                                             value: bytes) -> None:
    path, body, headers = GOOD[app]
    raw = [(b"content-type", b"application/json"), *((k.encode(), v.encode()) for k, v in headers.items()),
           (header.encode(), value)]
    answer = replicas[app].asgi("POST", path, raw, [json.dumps(body).encode()])
    assert answer.status == 400, answer.body
    assert_contract(answer)
    assert json.loads(answer.body)["error"]["param"] == header
