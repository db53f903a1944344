"""Serve application builder for the LLM app: ray.serve.llm's OpenAI app, hardened.

Same pieces as `ray.serve.llm.build_openai_app` (LLMServer deployments behind an OpenAI ingress),
with these changes:
- only the routes a chat model needs (/v1/models, /v1/chat/completions, /v1/completions);
- strict request models (stack.serving.schemas) bounded by the limits in the app's args (`api`), so bad
  input is a 4xx naming the field, and the OpenAPI spec describes what is really accepted;
- relative model paths resolve against the project root;
and it records what the Serve layer sees of each LLM request: an `llm.request` span, prompt and
completion tokens, the time to first token of streamed responses, and whether the request was good by
its model's goodput objectives (serveops_llm_goodput).

With the one_hop_llm lever and one model, the app is one deployment: the validating ingress and the
model's LLMServer in the same replica (OneHopIngress), so no Serve hop lies between them.

`serve deploy stack/serve/cpu.yaml` imports `stack.serving.llm_app:build_app` with the file's args.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' body types from the annotations,
# and the types are built in build_app() from the app's limits.

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import Request
from opentelemetry import trace
from pydantic import ValidationError
from ray import serve
from ray.llm._internal.common.dict_utils import maybe_apply_llm_deployment_config_defaults
from ray.llm._internal.serve.core.configs import openai_api_models as vllm_models
from ray.llm._internal.serve.core.configs.llm_config import LLMConfig
from ray.llm._internal.serve.core.configs.openai_api_models import to_model_metadata
from ray.llm._internal.serve.core.ingress.builder import LLMServingArgs
from ray.llm._internal.serve.core.ingress.ingress import (
    DEFAULT_ENDPOINTS,
    OpenAiIngress,
    init,
    make_fastapi_ingress,
)
from ray.llm._internal.serve.core.server.builder import build_llm_deployment
from ray.serve import context as serve_context
from starlette.responses import Response, StreamingResponse
from vllm.exceptions import VLLMValidationError

from stack.serving import api_errors
from stack.serving.http_api import harden
from stack.serving.llm_server import LLMServer
from stack.serving.models import PROJECT_ROOT
from stack.serving.observability import switch
from stack.serving.observability.logs import install_trace_log_filter
from stack.serving.observability.metrics import metrics
from stack.serving.observability.tracing import tracer
from stack.serving.schemas import ChatRequestBase, CompletionRequestBase, RequestModels, request_models
from stack.serving.settings import Goodput, LLMArgs, one_hop, parse_args

# Only the routes a chat model needs; the stock app's /tokenize, /detokenize, /v1/embeddings and
# /v1/score 500 on a chat model.
ENDPOINTS = {
    "models": DEFAULT_ENDPOINTS["models"],
    "model_data": DEFAULT_ENDPOINTS["model_data"],
    "completions": lambda app: app.post("/v1/completions", responses=api_errors.ERROR_RESPONSES),
    "chat": lambda app: app.post("/v1/chat/completions", responses=api_errors.ERROR_RESPONSES),
}
DEFAULT_MAX_MODEL_LEN = 2048
LLMRequest = ChatRequestBase | CompletionRequestBase
OUR_ARGS = ("api", "goodput")  # the rest of the app's args are ray.serve.llm's LLMServingArgs


def resolve_source(source: str) -> str:
    """A relative model_source names a directory under the project root (e.g. .models/tiny-llama).

    Anything else, an absolute path or a hub id, passes through unchanged.
    """
    candidate = PROJECT_ROOT / source
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


def _has_token(event: dict[str, Any]) -> bool:
    for choice in event.get("choices") or []:
        if (choice.get("delta") or {}).get("content") or choice.get("text"):
            return True
    return False


def _server_fault(err: BaseException) -> bool:
    """Whether a request that raised counts against goodput: not a client's 4xx, nor a client gone."""
    if isinstance(err, asyncio.CancelledError):
        return False
    status = getattr(err, "status", None) if isinstance(err, api_errors.ApiError) else (
        getattr(err, "status_code", None) if isinstance(err, vllm_models.OpenAIHTTPException) else None)
    return status is None or int(status) >= 500


class ValidatingIngress(OpenAiIngress):
    """OpenAiIngress whose chat and completions routes take our strict request models."""

    def __init__(self, llm_deployments, model_cards, *, max_model_lens: dict[str, int],
                 max_prompt_chars: int, goodput: dict[str, dict[str, Any]], **kwargs) -> None:
        super().__init__(llm_deployments, model_cards, **kwargs)
        self._max_model_lens, self._max_prompt_chars = max_model_lens, max_prompt_chars
        self._goodput = {model: Goodput.model_validate(g) for model, g in goodput.items()}
        install_trace_log_filter()

    def _check(self, body: LLMRequest, prompt_field: str) -> None:
        chars = body.prompt_chars()
        if chars > self._max_prompt_chars:
            raise api_errors.ApiError(
                422, f"{prompt_field}: {chars} characters of prompt, more than {self._max_prompt_chars}",
                prompt_field)
        limit = self._max_model_lens.get(body.model or "", DEFAULT_MAX_MODEL_LEN)
        for field in ("max_tokens", "max_completion_tokens"):
            value = getattr(body, field, None)
            if value is not None and value > limit:
                raise api_errors.ApiError(
                    422, f"{field}: {value} is above this model's context length {limit}", field)

    @staticmethod
    def _to_vllm(model: type, data: dict[str, Any]):
        try:
            return model.model_validate(data)
        except ValidationError as err:
            raise api_errors.ApiError(422, *api_errors.pydantic_error_message(err.errors())) from None
        except VLLMValidationError as err:
            # vLLM's cross-field checks (tool_choice without tools, ...) raise this, not a ValidationError;
            # unhandled, ray.serve.llm answers 400 with a class name for its type and no param.
            param = err.parameter
            message = f"{param}: {err.args[0]}" if param else str(err.args[0])
            raise api_errors.ApiError(422, message, param) from None

    def _judge(self, model: str, reason: str) -> None:
        """Count one request towards the model's goodput: `reason` ok is good, anything else bad."""
        if model in self._goodput:
            metrics().llm_goodput.inc(tags={"model": model, "verdict": "good" if reason == "ok" else "bad",
                                            "reason": reason})

    def _judge_timing(self, model: str, ttft_ms: float | None, e2e_ms: float, tokens: int) -> None:
        """A request that succeeded, judged by its model's objectives (none: not counted)."""
        if model in self._goodput:
            self._judge(model, self._goodput[model].judge(ttft_ms, e2e_ms, tokens))

    def _model_label(self, model: str | None) -> str:
        if model in self._max_model_lens:
            return model
        only = list(self._max_model_lens)
        return only[0] if model is None and len(only) == 1 else "other"

    async def _observed(self, body: LLMRequest, route: str, vllm_model: type,
                        handler: Callable[[Any, Request], Awaitable[Response]], request: Request) -> Response:
        """Run the stock handler with an llm.request span, token counts and time to first token."""
        data = body.model_dump(exclude_unset=True)
        if not switch.enabled():
            return await handler(self._to_vllm(vllm_model, data), request)
        model = self._model_label(body.model)
        client_wants_usage = bool(body.stream_options and body.stream_options.include_usage)
        if body.stream:  # ask vLLM for the usage chunk; dropped again unless the client asked too
            data["stream_options"] = {**(data.get("stream_options") or {}), "include_usage": True}
        metrics().input_chars.observe(body.prompt_chars(), tags={"route": route})
        attributes = {"llm.model": model, "llm.stream": bool(body.stream), "http.route": route}
        span = tracer().start_span("llm.request", attributes=attributes)
        started = time.perf_counter()
        try:
            with trace.use_span(span, end_on_exit=False):
                response = await handler(self._to_vllm(vllm_model, data), request)
        except BaseException as err:
            if _server_fault(err):
                self._judge(model, "error")
            span.end()
            raise
        if isinstance(response, StreamingResponse):
            response.body_iterator = self._observe_stream(response.body_iterator, route, model, started,
                                                          span, client_wants_usage)
        else:
            usage = json.loads(response.body).get("usage") if response.status_code < 400 else None
            self._record_usage(usage, route, model, span)
            if response.status_code >= 500:
                self._judge(model, "error")
            elif response.status_code < 400:
                tokens = int((usage or {}).get("completion_tokens") or 0)
                self._judge_timing(model, None, (time.perf_counter() - started) * 1000, tokens)
            span.end()
        return response

    @staticmethod
    def _record_usage(usage: dict[str, Any] | None, route: str, model: str, span: trace.Span) -> None:
        if not usage:
            return
        m = metrics()
        prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        m.input_tokens.observe(prompt, tags={"route": route})
        m.llm_prompt_tokens.observe(prompt, tags={"model": model})
        m.llm_completion_tokens.observe(completion, tags={"model": model})
        span.set_attributes({"llm.prompt_tokens": prompt, "llm.completion_tokens": completion})

    async def _observe_stream(self, chunks: AsyncIterator[Any], route: str, model: str, started: float,
                              span: trace.Span, client_wants_usage: bool) -> AsyncIterator[Any]:
        ttft_ms: float | None = None
        tokens, failed = 0, False
        try:
            async for chunk in chunks:
                text = chunk.decode() if isinstance(chunk, bytes) else chunk
                kept, dropped = [], False
                for event in text.split("\n\n"):
                    payload = event.removeprefix("data: ").strip()
                    if payload.startswith("{"):
                        parsed = json.loads(payload)
                        failed = failed or "error" in parsed
                        if ttft_ms is None and _has_token(parsed):
                            ttft_ms = (time.perf_counter() - started) * 1000
                            metrics().llm_ttft_ms.observe(ttft_ms, tags={"model": model})
                            span.set_attribute("llm.ttft_ms", round(ttft_ms, 2))
                        if parsed.get("usage") and not parsed.get("choices"):
                            tokens = int(parsed["usage"].get("completion_tokens") or 0)
                            self._record_usage(parsed["usage"], route, model, span)
                            if not client_wants_usage:
                                dropped = True
                                continue
                    kept.append(event)
                yield "\n\n".join(kept) if dropped else chunk
            e2e_ms = (time.perf_counter() - started) * 1000
            if failed or ttft_ms is None:  # an error event, or a stream that ended with no token
                self._judge(model, "error")
            else:
                self._judge_timing(model, ttft_ms, e2e_ms, tokens)
        except (GeneratorExit, asyncio.CancelledError):
            raise  # the client left: neither good nor bad for the server
        except BaseException:
            self._judge(model, "error")
            raise
        finally:
            span.end()

    async def chat(self, body: ChatRequestBase, request: Request) -> Response:
        self._check(body, "messages")
        return await self._observed(body, "/v1/chat/completions", vllm_models.ChatCompletionRequest,
                                    super().chat, request)

    async def completions(self, body: CompletionRequestBase, request: Request) -> Response:
        self._check(body, "prompt")
        return await self._observed(body, "/v1/completions", vllm_models.CompletionRequest,
                                    super().completions, request)


class _LocalMethod:
    def __init__(self, method: Callable[..., Awaitable[AsyncIterator[Any]]]) -> None:
        self._method = method

    async def remote(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        # What a streaming handle call yields: the items of the generator the server's method returns.
        # A handle call starts a request context of its own; this one is the HTTP request's, whose
        # serve_multiplexed_model_id header LLMServer would take for a LoRA adapter to load (with two
        # hops the header never reaches it). The server reads it before it returns its stream.
        plain = dataclasses.replace(serve_context._get_serve_request_context(), multiplexed_model_id="")
        token = serve_context._serve_request_context.set(plain)
        try:
            stream = await self._method(*args, **kwargs)
        finally:
            serve_context._serve_request_context.reset(token)
        async for item in stream:
            yield item


class LocalModel:
    """What OpenAiIngress takes for a model's DeploymentHandle, for a server in the same replica.

    `handle.options(stream=True).chat.remote(body, raw)` calls the server's method in this process: the
    body is not pickled, no actor call is made, and each chunk is not a streamed object ref.
    """

    def __init__(self, server: Any) -> None:
        self._server = server

    def options(self, *, multiplexed_model_id: str = "", **_: Any) -> "LocalModel":
        if multiplexed_model_id:
            # Serve's multiplexing is what tells LLMServer which LoRA adapter to load; with no handle
            # between them the base model would answer a request for the adapter.
            raise api_errors.ApiError(
                404, f"model: {multiplexed_model_id} is a LoRA adapter; the one_hop_llm lever serves base "
                "models only", "model", "not_found")
        return self  # stream=True, a session id: one server, nothing to route

    def __getattr__(self, method: str) -> _LocalMethod:
        return _LocalMethod(getattr(self._server, method))


class OneHopIngress(ValidatingIngress):
    """The validating ingress with the model's LLMServer in its own replica (the one_hop_llm lever).

    The deployment is sized, named and scaled as the model's LLMServer (its placement group, its
    autoscaling, `LLMServer:<model id>`), and healthy while the engine is.
    """

    async def __init__(self, llm_config: LLMConfig, **kwargs: Any) -> None:
        server = LLMServer.sync_init(llm_config)
        await server.start()
        self._server = server
        model = llm_config.model_id
        super().__init__({model: LocalModel(server)}, {model: to_model_metadata(model, llm_config)}, **kwargs)

    @classmethod
    def get_deployment_options(cls, llm_config: LLMConfig) -> dict[str, Any]:
        return LLMServer.get_deployment_options(llm_config)

    async def check_health(self) -> None:
        await self._server.check_health()

    async def __del__(self) -> None:
        await self._server.__del__()


def bounded_ingress(models: RequestModels, base: type[ValidatingIngress] = ValidatingIngress
                    ) -> type[ValidatingIngress]:
    """The ingress class whose routes take the request models bounded by the app's limits."""

    class BoundedIngress(base):
        async def chat(self, body: models.ChatRequest, request: Request) -> Response:
            return await super().chat(body, request)

        async def completions(self, body: models.CompletionRequest, request: Request) -> Response:
            return await super().completions(body, request)

    return BoundedIngress


# ray.serve.llm's own errors (an unknown model on /v1/models/{model}, an error the engine returns) carry
# a class name as their type and the internals in their message; answer them in our contract instead.
_OPENAI_KINDS = {404: "not_found", 408: "timeout", 429: "rate_limit_exceeded"}


async def on_openai_error(request: Request, exc: vllm_models.OpenAIHTTPException) -> Response:
    status = int(exc.status_code)
    kind = _OPENAI_KINDS.get(status, "invalid_request_error" if status < 500 else "server_error")
    api_errors.mark_error(request.scope, f"http_{status}")
    return api_errors.error_response(status, exc.message, "model" if status == 404 else None, kind)


def build_app(args: dict[str, Any]):
    ours = parse_args(LLMArgs, {k: v for k, v in args.items() if k in OUR_ARGS}, "llm")
    limits = ours.api
    llm_args = {k: v for k, v in args.items() if k not in OUR_ARGS}
    serving = LLMServingArgs.model_validate(with_resolved_sources(llm_args))
    configs = serving.llm_configs
    fastapi_app = harden(init(), limits)
    fastapi_app.title = "serveops OpenAI API"
    fastapi_app.add_exception_handler(vllm_models.OpenAIHTTPException, on_openai_error)
    checks = {
        "max_model_lens": {c.model_id: int(c.engine_kwargs.get("max_model_len", DEFAULT_MAX_MODEL_LEN))
                           for c in configs},
        "max_prompt_chars": limits.max_prompt_chars,
        "goodput": {model: g.model_dump() for model, g in ours.goodput.items()},
    }
    if one_hop([c.experimental_configs for c in configs]):
        ingress = make_fastapi_ingress(bounded_ingress(request_models(limits), OneHopIngress),
                                       endpoint_map=ENDPOINTS, app=fastapi_app)
        # Named, sized and scaled as the model's LLMServer deployment would be; the ingress options unused.
        return build_llm_deployment(configs[0], name_prefix="LLMServer:", deployment_cls=ingress,
                                    bind_kwargs=checks)
    options = maybe_apply_llm_deployment_config_defaults(
        ValidatingIngress.get_deployment_options(configs), serving.ingress_deployment_config
    )
    options.setdefault("name", "OpenAiIngress")
    ingress = make_fastapi_ingress(
        bounded_ingress(request_models(limits)), endpoint_map=ENDPOINTS, app=fastapi_app
    )
    return serve.deployment(ingress, **options).bind(
        # Our LLMServer (Ray's, with the first chunk at once where configured); Ray's name prefix.
        llm_deployments={c.model_id: build_llm_deployment(c, name_prefix="LLMServer:",
                                                          deployment_cls=LLMServer) for c in configs},
        model_cards={c.model_id: to_model_metadata(c.model_id, c) for c in configs},
        **checks,
    )
