"""After traffic on every route, each serveops_* family is in Ray's live /metrics with its labels."""

from __future__ import annotations

import httpx
import pytest

from stack import prom
from stack.serving.models import TENANT_STORE

pytestmark = pytest.mark.live
MSG = [{"role": "user", "content": "hello"}]
BROKEN = "broken-tenant"

# family -> labels every sample must carry (beyond Serve's application/deployment/replica)
FAMILIES = {
    "ray_serveops_requests_total": {"route", "outcome", "error_class"},
    "ray_serveops_input_chars_count": {"route"},
    "ray_serveops_input_tokens_count": {"route"},
    "ray_serveops_batch_padding_ratio_count": set(),
    "ray_serveops_predictions_total": {"label"},
    "ray_serveops_classifier_confidence_count": {"label"},
    "ray_serveops_tenant_requests_total": {"tier", "outcome"},
    "ray_serveops_tenant_latency_ms_count": {"tier"},
    "ray_serveops_model_load_failures_total": {"model_kind"},
    "ray_serveops_llm_prompt_tokens_count": {"model"},
    "ray_serveops_llm_completion_tokens_count": {"model"},
    "ray_serveops_llm_ttft_ms_count": {"model"},
    "ray_serveops_llm_goodput_total": {"model", "verdict", "reason"},
}


@pytest.fixture(scope="module")
def after_traffic(http: httpx.Client, metrics_url: str) -> prom.Samples:
    def ok(path: str, body: dict, **headers: str) -> None:
        r = http.post(path, json=body, headers=headers)
        assert r.status_code == 200, r.text

    ok("/embed", {"text": ["short", "a somewhat longer text to pad the batch"]})
    ok("/classify", {"text": "Everything is fast and stable."})
    ok("/predict", {"features": [1.0] * 8}, serve_multiplexed_model_id="acme")
    ok("/predict", {"features": [1.0] * 8}, serve_multiplexed_model_id="hooli")
    ok("/v1/completions", {"model": "tiny-llama", "prompt": "hi", "max_tokens": 4})
    with http.stream("POST", "/v1/chat/completions",
                     json={"model": "tiny-llama", "messages": MSG, "max_tokens": 4, "stream": True}) as r:
        assert r.status_code == 200
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    # We ask vLLM for a usage chunk to count tokens; a client that did not ask must not see it.
    assert not any('"usage":{' in e and '"choices":[]' in e for e in events)
    assert http.post("/embed", json={"text": ""}).status_code == 422
    # A model file that cannot be loaded: 503 naming the tenant, and a load failure counted.
    broken = TENANT_STORE / f"{BROKEN}.joblib"
    broken.write_bytes(b"not a model")
    try:
        r = http.post("/predict", json={"features": [1.0] * 8},
                      headers={"serve_multiplexed_model_id": BROKEN})
        assert r.status_code == 503 and r.json()["error"]["type"] == "model_load_failed"
    finally:
        broken.unlink()
    return prom.wait_for(metrics_url, lambda s: all(any(n == f for n, _, _ in s) for f in FAMILIES))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_present_with_labels(after_traffic: prom.Samples, family: str) -> None:
    samples = [labels for name, labels, _ in after_traffic if name == family]
    assert samples, f"{family} not exported"
    for labels in samples:
        assert FAMILIES[family] | {"application", "deployment", "replica"} <= set(labels), labels


def test_validation_error_is_classified(after_traffic: prom.Samples) -> None:
    assert prom.total(after_traffic, "ray_serveops_requests_total", route="/embed",
                             outcome="client_error", error_class="string_too_short") >= 1


def test_tenants_become_tiers(after_traffic: prom.Samples) -> None:
    tiers = {lab["tier"] for n, lab, _ in after_traffic if n == "ray_serveops_tenant_requests_total"}
    assert {"enterprise", "free"} <= tiers
    ours = [lab for n, lab, _ in after_traffic if n.startswith("ray_serveops_")]
    assert not any({"acme", "hooli"} & set(lab.values()) for lab in ours)


def test_vllm_engine_metrics_exported(after_traffic: prom.Samples) -> None:
    names = {n for n, _, _ in after_traffic}
    # Counters and histograms; vLLM's gauges (running, waiting, KV cache) are refreshed only while the
    # engine works, so the clean-load test checks those under load.
    for family in ("ray_vllm_time_to_first_token_seconds_count", "ray_vllm_generation_tokens_total"):
        assert family in names, sorted(n for n in names if n.startswith("ray_vllm"))[:20]


def test_llm_requests_are_judged_for_goodput(after_traffic: prom.Samples) -> None:
    # The streamed chat and the completion above, at least: each well within tiny-llama's objectives.
    assert prom.total(after_traffic, "ray_serveops_llm_goodput_total", model="tiny-llama", verdict="good",
                      reason="ok") >= 2
    reasons = {lab["reason"] for n, lab, _ in after_traffic if n == "ray_serveops_llm_goodput_total"}
    assert reasons <= {"ok", "ttft", "tpot", "e2e", "error"}, reasons
