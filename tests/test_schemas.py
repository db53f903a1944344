"""Request models carry the limits they are built with (the ops config's, through the app's args), and
tenant ids are checked."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from stack.config import load
from stack.serving.schemas import request_models
from stack.serving.settings import ApiLimits

LIMITS = ApiLimits.model_validate(load().api.model_dump())
MODELS = request_models(LIMITS)
EmbedRequest, ClassifyRequest = MODELS.EmbedRequest, MODELS.ClassifyRequest
PredictRequest, ChatRequest, TenantId = MODELS.PredictRequest, MODELS.ChatRequest, MODELS.TenantId


def test_embed_limits_come_from_config() -> None:
    EmbedRequest(text="x" * LIMITS.max_text_chars)
    with pytest.raises(ValidationError):
        EmbedRequest(text="x" * (LIMITS.max_text_chars + 1))
    EmbedRequest(text=["a"] * LIMITS.max_texts)
    with pytest.raises(ValidationError):
        EmbedRequest(text=["a"] * (LIMITS.max_texts + 1))


@pytest.mark.parametrize("text", ["", "   \n\t", 3, None, ["ok", ""]])
def test_empty_or_wrong_text_rejected(text) -> None:
    with pytest.raises(ValidationError):
        EmbedRequest(text=text)


def test_classify_takes_one_string_only() -> None:
    with pytest.raises(ValidationError):
        ClassifyRequest(text=["a"])


@pytest.mark.parametrize("features", [[], ["1"], [True], [float("nan")], [float("inf")], [10**20]])
def test_bad_features(features) -> None:
    with pytest.raises(ValidationError):
        PredictRequest(features=features)


@pytest.mark.parametrize("tenant", [None, "", "../etc/passwd", "a/b", "ACME", "x" * 65, "tenant%2F", " acme"])
def test_hostile_tenant_ids(tenant) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(TenantId).validate_python(tenant)


def test_good_tenant_id() -> None:
    assert TypeAdapter(TenantId).validate_python("acme-2_b") == "acme-2_b"


def test_chat_rejects_null_messages_and_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        ChatRequest.model_validate({"model": "m", "messages": None})
    with pytest.raises(ValidationError):
        ChatRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "x"}], "bogus": 1})
    with pytest.raises(ValidationError):
        ChatRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "x"}],
                                    "max_tokens": 0})


def test_other_limits_build_other_models() -> None:
    tight = request_models(LIMITS.model_copy(update={"max_text_chars": 5, "max_tenant_id_chars": 3}))
    tight.EmbedRequest(text="x" * 5)
    with pytest.raises(ValidationError):
        tight.EmbedRequest(text="x" * 6)
    with pytest.raises(ValidationError):
        TypeAdapter(tight.TenantId).validate_python("acme")
    assert MODELS.EmbedRequest(text="x" * 6).texts == ["x" * 6]  # the first models keep their limits
    assert request_models(LIMITS) is MODELS
    assert tight.EmbedRequest.__name__ == "EmbedRequest"  # the OpenAPI component name
