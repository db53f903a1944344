"""serveops' custom metrics, through ray.serve.metrics; Ray exports them as ray_serveops_*.

Only what Ray lacks: batch sizes, per-deployment latency, request counts and process memory are
Ray's own (ray_serve_*, ray_component_*). Serve adds the deployment, replica and application tags.

Label cardinality is bounded by construction; no raw user value becomes a label value:
- route: one of ROUTES, else "other";
- outcome: ok | client_error | server_error;
- error_class: an error kind of ours or a pydantic error type (a fixed set), else "other";
- label: the classifier's labels; tier: the tenant tiers in the predict app's args plus the default tier;
- model: model ids from the LLM app's args;
- verdict: good | bad; reason: ok | ttft | tpot | e2e | error (stack.serving.settings.Goodput.judge).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from typing import Any

from ray.serve.metrics import Counter, Histogram

from stack.serving.observability import switch

ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/embed", "/classify", "/predict")
LATENCY_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000]
SIZES = [1, 4, 16, 64, 256, 1024, 4096, 16384]
RATIOS = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
CONFIDENCE = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99]


@dataclass(frozen=True)
class Metrics:
    requests: Counter
    input_chars: Histogram
    input_tokens: Histogram
    batch_padding_ratio: Histogram
    predictions: Counter
    classifier_confidence: Histogram
    tenant_requests: Counter
    tenant_latency_ms: Histogram
    model_load_failures: Counter
    llm_prompt_tokens: Histogram
    llm_completion_tokens: Histogram
    llm_ttft_ms: Histogram
    llm_goodput: Counter


class _Off:
    """Stands in for every metric when instrumentation is off."""

    def inc(self, *args: Any, **kwargs: Any) -> None:
        pass

    observe = inc


@functools.cache
def metrics() -> Metrics:
    """Created on first use inside the replica, where Ray can register them."""
    if not switch.enabled():
        return Metrics(**{f.name: _Off() for f in fields(Metrics)})  # type: ignore[arg-type]
    return Metrics(
        requests=Counter("serveops_requests", "Requests by route, outcome and error class.",
                         tag_keys=("route", "outcome", "error_class")),
        input_chars=Histogram("serveops_input_chars", "Characters of input text per request.",
                              boundaries=SIZES, tag_keys=("route",)),
        input_tokens=Histogram("serveops_input_tokens", "Tokens of input per request.",
                               boundaries=SIZES, tag_keys=("route",)),
        batch_padding_ratio=Histogram("serveops_batch_padding_ratio",
                                      "Padded tokens / all tokens in each BERT batch.", boundaries=RATIOS),
        predictions=Counter("serveops_predictions", "Classifier predictions by label.", tag_keys=("label",)),
        classifier_confidence=Histogram("serveops_classifier_confidence",
                                        "Confidence of the predicted label.", boundaries=CONFIDENCE,
                                        tag_keys=("label",)),
        tenant_requests=Counter("serveops_tenant_requests", "Multiplexed requests by tenant tier.",
                                tag_keys=("tier", "outcome")),
        tenant_latency_ms=Histogram("serveops_tenant_latency_ms", "Multiplexed request latency by tier.",
                                    boundaries=LATENCY_MS, tag_keys=("tier",)),
        model_load_failures=Counter("serveops_model_load_failures", "Model loads that raised.",
                                    tag_keys=("model_kind",)),
        llm_prompt_tokens=Histogram("serveops_llm_prompt_tokens", "Prompt tokens per LLM request.",
                                    boundaries=SIZES, tag_keys=("model",)),
        llm_completion_tokens=Histogram("serveops_llm_completion_tokens",
                                        "Completion tokens per LLM request.", boundaries=SIZES,
                                        tag_keys=("model",)),
        llm_ttft_ms=Histogram("serveops_llm_ttft_ms",
                              "Time to first token as the Serve ingress sees it (streaming requests).",
                              boundaries=LATENCY_MS, tag_keys=("model",)),
        llm_goodput=Counter("serveops_llm_goodput",
                            "LLM requests judged against their model's goodput objectives (TTFT and TPOT): "
                            "verdict good or bad, and the reason (ok, ttft, tpot, e2e, error).",
                            tag_keys=("model", "verdict", "reason")),
    )


def route_label(path: str) -> str:
    path = path.rstrip("/") or "/"
    return path if path in ROUTES else "other"


def outcome(status: int) -> str:
    return "ok" if status < 400 else ("client_error" if status < 500 else "server_error")
