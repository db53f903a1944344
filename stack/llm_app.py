"""Serve application builder for the LLM app: ray.serve.llm's OpenAI app, hardened.

Same pieces as `ray.serve.llm.build_openai_app` (LLMServer deployments behind an OpenAI ingress),
with three changes:
- only the routes a chat model needs (/v1/models, /v1/chat/completions, /v1/completions);
- strict request models (stack.schemas), so bad input is a 4xx naming the field, and the OpenAPI
  spec describes what is really accepted;
- relative model paths resolve against the project root.

`serve deploy stack/serve/cpu.yaml` imports `stack.llm_app:build_app` with the file's args.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import ValidationError
from ray import serve
from ray.llm._internal.common.dict_utils import maybe_apply_llm_deployment_config_defaults
from ray.llm._internal.serve.core.configs import openai_api_models as vllm_models
from ray.llm._internal.serve.core.configs.openai_api_models import to_model_metadata
from ray.llm._internal.serve.core.ingress.builder import LLMServingArgs
from ray.llm._internal.serve.core.ingress.ingress import (
    DEFAULT_ENDPOINTS,
    OpenAiIngress,
    init,
    make_fastapi_ingress,
)
from ray.llm._internal.serve.core.server.builder import build_llm_deployment
from starlette.responses import Response

from stack import ROOT, api_errors
from stack.schemas import LIMITS, ChatRequest, CompletionRequest

# Only the routes a chat model needs; the stock app's /tokenize, /detokenize, /v1/embeddings and
# /v1/score 500 on a chat model.
ENDPOINTS = {
    "models": DEFAULT_ENDPOINTS["models"],
    "model_data": DEFAULT_ENDPOINTS["model_data"],
    "completions": lambda app: app.post("/v1/completions", responses=api_errors.ERROR_RESPONSES),
    "chat": lambda app: app.post("/v1/chat/completions", responses=api_errors.ERROR_RESPONSES),
}
DEFAULT_MAX_MODEL_LEN = 2048


def resolve_source(source: str) -> str:
    """A relative model_source names a directory under the project root (e.g. .models/tiny-llama).

    Anything else, an absolute path or a hub id, passes through unchanged.
    """
    candidate = ROOT / source
    if not source.startswith("/") and candidate.is_dir():
        return str(candidate)
    return source


def with_resolved_sources(args: dict[str, Any]) -> dict[str, Any]:
    configs = []
    for cfg in args["llm_configs"]:
        loading = dict(cfg["model_loading_config"])
        loading["model_source"] = resolve_source(loading["model_source"])
        configs.append({**cfg, "model_loading_config": loading})
    return {**args, "llm_configs": configs}


class ValidatingIngress(OpenAiIngress):
    """OpenAiIngress whose chat and completions routes take our strict request models."""

    def __init__(self, llm_deployments, model_cards, *, max_model_lens: dict[str, int], **kwargs) -> None:
        super().__init__(llm_deployments, model_cards, **kwargs)
        self._max_model_lens = max_model_lens

    def _check(self, body: ChatRequest | CompletionRequest, prompt_field: str) -> None:
        chars = body.prompt_chars()
        if chars > LIMITS.max_prompt_chars:
            raise api_errors.ApiError(
                422, f"{prompt_field}: {chars} characters of prompt, more than {LIMITS.max_prompt_chars}",
                prompt_field)
        limit = self._max_model_lens.get(body.model or "", DEFAULT_MAX_MODEL_LEN)
        for field in ("max_tokens", "max_completion_tokens"):
            value = getattr(body, field, None)
            if value is not None and value > limit:
                raise api_errors.ApiError(
                    422, f"{field}: {value} is above this model's context length {limit}", field)

    @staticmethod
    def _to_vllm(model: type, body: ChatRequest | CompletionRequest):
        try:
            return model.model_validate(body.model_dump(exclude_unset=True))
        except ValidationError as err:
            raise api_errors.ApiError(422, *api_errors.pydantic_error_message(err.errors())) from None

    async def chat(self, body: ChatRequest, request: Request) -> Response:
        self._check(body, "messages")
        return await super().chat(self._to_vllm(vllm_models.ChatCompletionRequest, body), request)

    async def completions(self, body: CompletionRequest, request: Request) -> Response:
        self._check(body, "prompt")
        return await super().completions(self._to_vllm(vllm_models.CompletionRequest, body), request)


def build_app(args: dict[str, Any]):
    serving = LLMServingArgs.model_validate(with_resolved_sources(args))
    configs = serving.llm_configs
    options = maybe_apply_llm_deployment_config_defaults(
        ValidatingIngress.get_deployment_options(configs), serving.ingress_deployment_config
    )
    options.setdefault("name", "OpenAiIngress")
    fastapi_app = api_errors.install(init(), LIMITS.max_body_bytes)
    fastapi_app.title = "serveops OpenAI API"
    ingress = make_fastapi_ingress(
        ValidatingIngress, endpoint_map=ENDPOINTS, app=fastapi_app
    )
    return serve.deployment(ingress, **options).bind(
        llm_deployments={c.model_id: build_llm_deployment(c) for c in configs},
        model_cards={c.model_id: to_model_metadata(c.model_id, c) for c in configs},
        max_model_lens={c.model_id: int(c.engine_kwargs.get("max_model_len", DEFAULT_MAX_MODEL_LEN))
                        for c in configs},
    )
