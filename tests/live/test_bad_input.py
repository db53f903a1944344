"""Every class of bad input, on every route, is a 4xx with a JSON error naming the field.

Never a 5xx, and no replica restarts: the replicas serving before are the ones serving after. Hand-written
cases first, then a short property-based fuzz of every served OpenAPI spec (loadtests/bench/fuzz.py; the
longer one runs in `make bench`). Header bytes that are not UTF-8 reach Serve's proxy first, which decodes
some headers itself: they get the contract only with stack.serving.proxy_guard installed on the proxy.
"""

from __future__ import annotations

import json
import random

import httpx
import pytest

from loadtests.bench import fuzz
from stack.config import load
from stack.local import serve_deploy
from stack.profile import select

pytestmark = pytest.mark.live
OPS = load()
LIMITS = OPS.api
FUZZ_EXAMPLES = 40  # per spec; `make bench` sends bench.modes.*.fuzz_examples
J = {"Content-Type": "application/json"}
TENANT = "serve_multiplexed_model_id"
OK_TENANT = {TENANT: "acme"}
MSG = [{"role": "user", "content": "hi"}]
FEATURES = [1.0] * 8
GOOD = json.dumps({"features": FEATURES})


def chat(**fields) -> str:
    return json.dumps({"model": "tiny-llama", "messages": MSG, **fields})


def completion(**fields) -> str:
    return json.dumps({"model": "tiny-llama", "prompt": "hi", **fields})


# (id, path, extra headers, raw body, status, param)
CASES = [
    # malformed JSON
    ("embed-malformed", "/embed", {}, '{"text": "a"', 400, None),
    ("classify-malformed", "/classify", {}, '{"text": ', 400, None),
    ("predict-malformed", "/predict", OK_TENANT, '{"features": [1,', 400, None),
    ("chat-malformed", "/v1/chat/completions", {}, '{"messages": [', 400, None),
    ("completions-malformed", "/v1/completions", {}, "not json", 400, None),
    # missing, extra and wrongly typed fields
    ("embed-missing", "/embed", {}, "{}", 422, "text"),
    ("embed-extra", "/embed", {}, '{"text": "a", "mode": "fast"}', 422, "mode"),
    ("embed-type", "/embed", {}, '{"text": 42}', 422, "text"),
    ("embed-list-item-type", "/embed", {}, '{"text": ["a", 2]}', 422, "text"),
    ("embed-not-object", "/embed", {}, "[1, 2]", 422, None),
    ("classify-missing", "/classify", {}, '{"txt": "a"}', 422, "text"),
    ("classify-list", "/classify", {}, '{"text": ["a"]}', 422, "text"),
    ("classify-null", "/classify", {}, '{"text": null}', 422, "text"),
    ("predict-missing", "/predict", OK_TENANT, "{}", 422, "features"),
    ("predict-extra", "/predict", OK_TENANT, json.dumps({"features": FEATURES, "x": 1}), 422, "x"),
    ("predict-string-feature", "/predict", OK_TENANT, '{"features": ["1", 2]}', 422, "features[0]"),
    ("predict-nan", "/predict", OK_TENANT, '{"features": [NaN, 1, 1, 1, 1, 1, 1, 1]}', 422, "features[0]"),
    ("predict-huge", "/predict", OK_TENANT, '{"features": [1e400, 1, 1, 1, 1, 1, 1, 1]}', 422, "features[0]"),
    ("predict-wrong-width", "/predict", OK_TENANT, '{"features": [1, 2]}', 422, "features"),
    ("chat-messages-null", "/v1/chat/completions", {}, chat(messages=None), 422, "messages"),
    ("chat-messages-empty", "/v1/chat/completions", {}, chat(messages=[]), 422, "messages"),
    ("chat-bad-role", "/v1/chat/completions", {}, chat(messages=[{"role": "root", "content": "x"}]), 422,
     "messages[0].role"),
    ("chat-extra", "/v1/chat/completions", {}, chat(bogus=1), 422, "bogus"),
    ("chat-temperature-type", "/v1/chat/completions", {}, chat(temperature="hot"), 422, "temperature"),
    ("completions-prompt-null", "/v1/completions", {}, completion(prompt=None), 422, "prompt"),
    ("completions-extra", "/v1/completions", {}, completion(foo="bar"), 422, "foo"),
    # empty text
    ("embed-empty", "/embed", {}, '{"text": ""}', 422, "text"),
    ("embed-blank", "/embed", {}, '{"text": "  \\n "}', 422, "text"),
    ("embed-empty-list", "/embed", {}, '{"text": []}', 422, "text"),
    ("classify-empty", "/classify", {}, '{"text": ""}', 422, "text"),
    ("completions-empty", "/v1/completions", {}, completion(prompt=""), 422, "prompt"),
    # over the configured limits
    ("embed-long", "/embed", {}, json.dumps({"text": "x" * (LIMITS.max_text_chars + 1)}), 422, "text"),
    ("embed-many", "/embed", {}, json.dumps({"text": ["x"] * (LIMITS.max_texts + 1)}), 422, "text"),
    ("classify-long", "/classify", {}, json.dumps({"text": "x" * (LIMITS.max_text_chars + 1)}), 422, "text"),
    ("predict-many", "/predict", OK_TENANT, json.dumps({"features": [1] * (LIMITS.max_features + 1)}), 422,
     "features"),
    ("chat-many-messages", "/v1/chat/completions", {}, chat(messages=MSG * (LIMITS.max_messages + 1)), 422,
     "messages"),
    ("chat-long-prompt", "/v1/chat/completions", {},
     chat(messages=[{"role": "user", "content": "x" * (LIMITS.max_prompt_chars + 1)}]), 422, "messages"),
    ("body-too-large", "/embed", {}, json.dumps({"text": "x" * (LIMITS.max_body_bytes + 1)}), 413, None),
    # hostile tenant ids
    ("tenant-missing", "/predict", {}, GOOD, 422, TENANT),
    ("tenant-path", "/predict", {TENANT: "../../etc/passwd"}, GOOD, 422, TENANT),
    ("tenant-encoded", "/predict", {TENANT: "..%2Fetc"}, GOOD, 422, TENANT),
    ("tenant-long", "/predict", {TENANT: "a" * 5000}, GOOD, 422, TENANT),
    ("tenant-upper", "/predict", {TENANT: "ACME"}, GOOD, 422, TENANT),
    ("tenant-unknown", "/predict", {TENANT: "nobody"}, GOOD, 404, TENANT),
    # header values that are not ASCII: a 400 naming the header. Not UTF-8 at all, they would stop in
    # Serve's proxy (a plain-text 500) but for stack.serving.proxy_guard.
    ("tenant-utf8", "/predict", {TENANT: "caf\u00e9".encode()}, GOOD, 400, TENANT),
    ("tenant-not-utf8", "/predict", {TENANT: b"\xff\xfe"}, GOOD, 400, TENANT),
    ("tenant-dash-not-utf8", "/predict", {"serve-multiplexed-model-id": b"\xe9"}, GOOD, 400, TENANT),
    ("request-id-not-utf8", "/v1/chat/completions", {"x-request-id": b"\xff"}, chat(), 400, "x-request-id"),
    ("traceparent-not-utf8", "/embed", {"traceparent": b"00-\xff"}, '{"text": "a"}', 400, "traceparent"),
    # max_tokens out of range
    ("max-tokens-zero", "/v1/chat/completions", {}, chat(max_tokens=0), 422, "max_tokens"),
    ("max-tokens-negative", "/v1/completions", {}, completion(max_tokens=-5), 422, "max_tokens"),
    ("max-tokens-huge", "/v1/chat/completions", {}, chat(max_tokens=10**6), 422, "max_tokens"),
    ("max-tokens-string", "/v1/completions", {}, completion(max_tokens="10"), 422, "max_tokens"),
    ("max-completion-tokens-huge", "/v1/chat/completions", {}, chat(max_completion_tokens=10**6), 422,
     "max_completion_tokens"),
]

MEDIA_ROUTES = ["/embed", "/classify", "/predict", "/v1/chat/completions", "/v1/completions"]
REMOVED_ROUTES = ["/tokenize", "/detokenize", "/v1/embeddings", "/v1/score"]


@pytest.fixture(scope="module")
def replicas_before(live_stack) -> dict[str, set[str]]:
    return replica_ids(live_stack.listen.dashboard_url)


def replica_ids(dashboard_url: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for app_name, app in serve_deploy.details(dashboard_url)["applications"].items():
        for dep_name, dep in app["deployments"].items():
            running = {r["replica_id"] for r in dep["replicas"] if r["state"] == "RUNNING"}
            out[f"{app_name}/{dep_name}"] = running
    return out


def assert_error(r: httpx.Response, status: int, param: str | None) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["code"] == status and err["message"]
    assert err["param"] == param, err


@pytest.mark.parametrize(("path", "headers", "body", "status", "param"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(http: httpx.Client, replicas_before, path, headers, body, status, param) -> None:
    assert_error(http.post(path, content=body, headers={**J, **headers}), status, param)


@pytest.mark.parametrize("path", MEDIA_ROUTES)
def test_text_plain_is_415(http: httpx.Client, replicas_before, path: str) -> None:
    r = http.post(path, content=b'{"text": "a"}', headers={"Content-Type": "text/plain", **OK_TENANT})
    assert_error(r, 415, "Content-Type")


@pytest.mark.parametrize("path", MEDIA_ROUTES)
def test_chunked_body_over_the_limit_is_413(http: httpx.Client, replicas_before, path: str) -> None:
    body = json.dumps({"text": "x" * (LIMITS.max_body_bytes + 1)}).encode()
    chunks = (body[i:i + 65536] for i in range(0, len(body), 65536))  # a generator: sent chunked
    r = http.post(path, content=chunks, headers={**J, **OK_TENANT})
    sent = r.request.headers
    assert sent.get("transfer-encoding") == "chunked" and "content-length" not in sent
    assert_error(r, 413, None)


@pytest.mark.parametrize("spec_path", OPS.bench.fuzz_specs)
def test_fuzz_the_served_spec(http: httpx.Client, replicas_before, spec_path: str) -> None:
    seed = random.randrange(2**32)
    report = fuzz.fuzz_spec(http, spec_path, FUZZ_EXAMPLES, seed, fuzz.known_values(OPS, select()))
    assert report.examples == FUZZ_EXAMPLES
    assert (report.server_errors, report.contract_violations, report.transport_errors) == (0, 0, 0), (
        f"seed {seed}: {report.as_dict()}")


@pytest.mark.parametrize("path", REMOVED_ROUTES)
def test_unneeded_llm_routes_are_gone(http: httpx.Client, replicas_before, path: str) -> None:
    assert_error(http.post(path, json={"model": "tiny-llama", "prompt": "hi"}), 404, None)


def test_no_replica_restarted(live_stack, replicas_before) -> None:
    # Runs after the cases above (pytest keeps file order).
    assert replica_ids(live_stack.listen.dashboard_url) == replicas_before
