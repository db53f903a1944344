"""Each app publishes an OpenAPI spec of exactly the routes it serves, with the real limits."""

from __future__ import annotations

import httpx
import pytest

from stack.config import load

pytestmark = pytest.mark.live
LIMITS = load().api


def spec(http: httpx.Client, prefix: str) -> dict:
    r = http.get(f"{prefix}/openapi.json")
    assert r.status_code == 200
    return r.json()


def test_llm_spec_lists_only_served_routes(http: httpx.Client) -> None:
    doc = spec(http, "")
    served = {"/v1/models", "/v1/models/{model}", "/v1/completions", "/v1/chat/completions"}
    assert set(doc["paths"]) == served
    chat = doc["components"]["schemas"]["ChatRequest"]
    assert chat["additionalProperties"] is False
    assert chat["properties"]["messages"]["maxItems"] == LIMITS.max_messages
    responses = doc["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert {"400", "413", "415", "422"} <= set(responses)


@pytest.mark.parametrize(("prefix", "schema", "field", "key", "value"), [
    ("/embed", "EmbedRequest", "text", "maxLength", LIMITS.max_text_chars),
    ("/classify", "ClassifyRequest", "text", "maxLength", LIMITS.max_text_chars),
    ("/predict", "PredictRequest", "features", "maxItems", LIMITS.max_features),
])
def test_model_route_specs(http: httpx.Client, prefix: str, schema: str, field: str, key: str, value) -> None:
    doc = spec(http, prefix)
    assert doc["servers"] == [{"url": prefix}]
    assert list(doc["paths"]) == ["/"] and list(doc["paths"]["/"]) == ["post"]
    body = doc["components"]["schemas"][schema]
    assert body["additionalProperties"] is False
    assert str(value) in str(body["properties"][field])
    assert key in str(body["properties"][field])


def test_predict_spec_requires_tenant_header(http: httpx.Client) -> None:
    params = spec(http, "/predict")["paths"]["/"]["post"]["parameters"]
    header = next(p for p in params if p["name"] == "serve_multiplexed_model_id")
    assert header["in"] == "header" and header["required"] is True
    assert header["schema"]["maxLength"] == LIMITS.max_tenant_id_chars
