"""Request and response models for every route; request_models() builds those that carry the limits.

The limits arrive as the app's args (stack.serving.settings.ApiLimits), so the models that enforce them
are built when the app is, from those args. FastAPI validates bodies against them and publishes them in
each app's OpenAPI spec, so the spec and the checks cannot disagree. Unknown fields are rejected, and
types are strict: "1" is not a number, 1 is not a string.
"""

# No `from __future__ import annotations`: request_models() defines models in a function, and pydantic
# must see their annotations as objects, not as names of its locals.

import functools
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    WithJsonSchema,
)

from stack.serving.settings import ApiLimits

TENANT_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or whitespace")
    return value


Number = StrictInt | Annotated[StrictFloat, Field(allow_inf_nan=False)]
_JSON_SCHEMA_BOUNDS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}


def bounded(**bounds: float) -> Any:
    """A Number within bounds. Checked on the union, so a miss is one error ("less than or equal to 2"),
    and published as one JSON Schema number: beside a union pydantic would publish its own ge/le keys,
    which no client or JSON Schema tool reads."""
    schema = {"type": "number", **{_JSON_SCHEMA_BOUNDS[k]: v for k, v in bounds.items()}}
    return Annotated[Number, Field(**bounds), WithJsonSchema(schema)]


# Bounded so that no value overflows a float64 model input.
Feature = bounded(ge=-1e12, le=1e12)


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


def examples(*bodies: dict[str, Any]) -> ConfigDict:
    """A request model's config with example bodies, published in its JSON Schema (docs and fuzzing)."""
    return ConfigDict(extra="forbid", json_schema_extra={"examples": list(bodies)})


class EmbedRequestBase(Request):
    """/embed without its limits; request_models() gives the bounded one."""

    text: str | list[str]

    @property
    def texts(self) -> list[str]:
        return [self.text] if isinstance(self.text, str) else list(self.text)


class EmbedResponse(BaseModel):
    embeddings: list[list[float]] = Field(description="L2-normalised, one per input text, in order.")
    dim: int
    batch_size: int = Field(description="Size of the largest @serve.batch batch the texts ran in.")


class ClassifyResponse(BaseModel):
    label: str
    confidence: float
    scores: dict[str, float]


class PredictResponse(BaseModel):
    tenant: str
    prediction: float | int | str
    model: str


# --- OpenAI routes: the fields we accept; anything else is a 422 naming it. ---

Probability = bounded(ge=0, le=1)
Penalty = bounded(ge=-2, le=2)
Stop = StrictStr | Annotated[list[StrictStr], Field(max_length=4)]
MaxTokens = Annotated[StrictInt, Field(ge=1)]


class StreamOptions(Request):
    include_usage: StrictBool | None = None
    continuous_usage_stats: StrictBool | None = None


class TextPart(Request):
    type: Literal["text"]
    text: StrictStr


class ChatMessage(Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | Annotated[list[TextPart], Field(min_length=1)] | None = None
    name: StrictStr | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: StrictStr | None = None


class Sampling(Request):
    """Sampling fields shared by chat and completions, vLLM's extensions included."""

    model: StrictStr | None = None
    max_tokens: MaxTokens | None = None
    temperature: bounded(ge=0, le=2) | None = None
    top_p: Probability | None = None
    top_k: StrictInt | None = None
    min_p: Probability | None = None
    n: Annotated[StrictInt, Field(ge=1, le=8)] | None = None
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    stop: Stop | None = None
    seed: StrictInt | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    repetition_penalty: bounded(gt=0, le=2) | None = None
    logit_bias: dict[StrictStr, bounded(ge=-100, le=100)] | None = None
    user: StrictStr | None = None
    ignore_eos: StrictBool | None = None
    min_tokens: Annotated[StrictInt, Field(ge=0)] | None = None
    skip_special_tokens: StrictBool | None = None


class ChatRequestBase(Sampling):
    """Chat without its limits; request_models() gives the bounded one."""

    messages: list[ChatMessage]
    max_completion_tokens: MaxTokens | None = None
    logprobs: StrictBool | None = None
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: StrictStr | dict[str, Any] | None = None

    def prompt_chars(self) -> int:
        total = 0
        for m in self.messages:
            if isinstance(m.content, str):
                total += len(m.content)
            elif m.content:
                total += sum(len(p.text) for p in m.content)
        return total


Prompt = Annotated[StrictStr, Field(min_length=1)]


class CompletionRequestBase(Sampling):
    """Completions without their limits; request_models() gives the bounded one."""

    prompt: Prompt | list[Prompt]
    echo: StrictBool | None = None
    logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    suffix: StrictStr | None = None

    def prompt_chars(self) -> int:
        return len(self.prompt) if isinstance(self.prompt, str) else sum(map(len, self.prompt))


@dataclass(frozen=True)
class RequestModels:
    """The request models of every route, bounded by one set of limits."""

    limits: ApiLimits
    EmbedRequest: type[EmbedRequestBase]
    ClassifyRequest: type[Request]
    PredictRequest: type[Request]
    # The multiplexed model id (header serve_multiplexed_model_id): short, lower-case, no path characters.
    TenantId: Any
    ChatRequest: type[ChatRequestBase]
    CompletionRequest: type[CompletionRequestBase]


@functools.cache
def request_models(limits: ApiLimits) -> RequestModels:
    """Models named as before (EmbedRequest, ...), so each OpenAPI spec keeps its component names."""
    Text = Annotated[StrictStr, Field(min_length=1, max_length=limits.max_text_chars),
                     AfterValidator(_not_blank)]

    class EmbedRequest(EmbedRequestBase):
        model_config = examples({"text": ["first text", "second text"]})
        text: Text | Annotated[list[Text], Field(min_length=1, max_length=limits.max_texts)] = Field(
            description="One text, or a list of texts."
        )

    class ClassifyRequest(Request):
        model_config = examples({"text": "The rollout went smoothly."})
        text: Text

    class PredictRequest(Request):
        model_config = examples({"features": [0.5, -1, 2, 0, 1.5, -0.25, 3, 1]})
        features: Annotated[list[Feature], Field(min_length=1, max_length=limits.max_features)]

    class ChatRequest(ChatRequestBase):
        model_config = examples({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 16})
        messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=limits.max_messages)]

    class CompletionRequest(CompletionRequestBase):
        model_config = examples({"prompt": "Ray Serve is", "max_tokens": 16})
        prompt: Prompt | Annotated[list[Prompt], Field(min_length=1, max_length=limits.max_texts)]

    tenant_id = Annotated[StrictStr, Field(min_length=1, max_length=limits.max_tenant_id_chars,
                                           pattern=TENANT_ID_PATTERN)]
    return RequestModels(limits=limits, EmbedRequest=EmbedRequest, ClassifyRequest=ClassifyRequest,
                         PredictRequest=PredictRequest, TenantId=tenant_id, ChatRequest=ChatRequest,
                         CompletionRequest=CompletionRequest)
