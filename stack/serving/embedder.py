"""/embed: MiniLM-L6 sentence embeddings behind @serve.batch."""

# No `from __future__ import annotations`: FastAPI reads the route's body type from the annotation, and
# the type is built in embedder() from the app's limits.

import asyncio
from dataclasses import dataclass
from typing import Any

from ray import serve
from ray.serve.deployment import Deployment

from stack.serving.api_errors import ERROR_RESPONSES
from stack.serving.http_api import new_api
from stack.serving.observability.logs import install_trace_log_filter
from stack.serving.observability.metrics import metrics
from stack.serving.observability.tracing import span
from stack.serving.schemas import EmbedResponse, request_models
from stack.serving.settings import ApiLimits, FaultSettings


@dataclass(frozen=True)
class Embedded:
    vectors: list[list[float]]
    batch_size: int  # the largest batch any of the texts ran in
    tokens: int


def embedder(limits: ApiLimits, faults: FaultSettings | None = None) -> Deployment:
    """The Embedder deployment, its route bounded by the limits in the app's args; with `faults`, the
    fault hook on its requests."""
    models = request_models(limits)
    api = new_api("serveops /embed", limits, faults)

    @serve.deployment(name="Embedder")
    @serve.ingress(api)
    class Embedder:
        def __init__(self) -> None:
            import torch

            from stack.serving.models.minilm import MiniLM

            install_trace_log_filter()
            with span("model.load", model="all-MiniLM-L6-v2"):
                self.model = MiniLM("cuda" if torch.cuda.is_available() else "cpu")

        def reconfigure(self, config: dict[str, Any]) -> None:
            """user_config from the Serve config: batching and torch threads, retuned without a restart."""
            if "max_batch_size" in config:
                self._embed_batch.set_max_batch_size(config["max_batch_size"])
            if "batch_wait_timeout_s" in config:
                self._embed_batch.set_batch_wait_timeout_s(config["batch_wait_timeout_s"])
            if config.get("torch_threads"):
                import torch

                torch.set_num_threads(int(config["torch_threads"]))

        @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
        async def _embed_batch(self, texts: list[str]) -> list[tuple[list[float], int, int]]:
            with span("embed.batch", **{"batch.size": len(texts)}) as current:
                # Off the event loop, so the next batch fills while this one computes.
                encoded = await asyncio.to_thread(self.model.encode, texts)
                current.set_attribute("batch.padding_ratio", round(encoded.padding_ratio, 4))
            metrics().batch_padding_ratio.observe(encoded.padding_ratio)
            return [(v, len(texts), n) for v, n in zip(encoded.vectors, encoded.tokens, strict=True)]

        async def embed_texts(self, texts: list[str]) -> Embedded:
            """Each text joins the shared batch queue on its own."""
            results = await asyncio.gather(*(self._embed_batch(t) for t in texts))
            return Embedded(vectors=[v for v, _, _ in results], batch_size=max(b for _, b, _ in results),
                            tokens=sum(n for _, _, n in results))

        @api.post("/", response_model=EmbedResponse, responses=ERROR_RESPONSES)
        async def embed(self, body: models.EmbedRequest) -> EmbedResponse:
            texts = body.texts
            out = await self.embed_texts(texts)
            m = metrics()
            m.input_chars.observe(sum(map(len, texts)), tags={"route": "/embed"})
            m.input_tokens.observe(out.tokens, tags={"route": "/embed"})
            return EmbedResponse(embeddings=out.vectors, dim=self.model.dim, batch_size=out.batch_size)

    return Embedder
