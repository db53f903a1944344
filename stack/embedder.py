"""/embed: MiniLM-L6 sentence embeddings behind @serve.batch."""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve

from stack.api_errors import ERROR_RESPONSES
from stack.http_api import new_api
from stack.schemas import EmbedRequest, EmbedResponse

api = new_api("serveops /embed")


@serve.deployment(name="Embedder")
@serve.ingress(api)
class Embedder:
    def __init__(self) -> None:
        import torch

        from stack.models.minilm import MiniLM

        self.model = MiniLM("cuda" if torch.cuda.is_available() else "cpu")

    def reconfigure(self, config: dict[str, Any]) -> None:
        """user_config from the ops config: batching and torch threads, retuned without a restart."""
        if "max_batch_size" in config:
            self._embed_batch.set_max_batch_size(config["max_batch_size"])
        if "batch_wait_timeout_s" in config:
            self._embed_batch.set_batch_wait_timeout_s(config["batch_wait_timeout_s"])
        if config.get("torch_threads"):
            import torch

            torch.set_num_threads(int(config["torch_threads"]))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def _embed_batch(self, texts: list[str]) -> list[tuple[list[float], int]]:
        # Off the event loop, so the next batch fills while this one computes.
        encoded = await asyncio.to_thread(self.model.encode, texts)
        return [(vector, len(texts)) for vector in encoded.vectors]

    async def embed_texts(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Each text joins the shared batch queue on its own; returns vectors and the largest batch seen."""
        results = await asyncio.gather(*(self._embed_batch(t) for t in texts))
        return [v for v, _ in results], max(b for _, b in results)

    @api.post("/", response_model=EmbedResponse, responses=ERROR_RESPONSES)
    async def embed(self, body: EmbedRequest) -> EmbedResponse:
        vectors, batch_size = await self.embed_texts(body.texts)
        return EmbedResponse(embeddings=vectors, dim=self.model.dim, batch_size=batch_size)
