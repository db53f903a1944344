"""ray.serve.llm's LLMServer, with the first streamed chunk sent as soon as it exists.

Ray batches a stream's chunks on a fixed tick from the stream's start (stream_batching_interval_ms,
50 by default), so the first token waits up to a whole tick before the client sees it: time to first
token pays for a batching that only helps the chunks after it. With FIRST_CHUNK_AT_ONCE in the model's
experimental_configs (the first_chunk_at_once lever, stack/levers.py, through the Serve config), the
first chunk goes out alone and the rest is batched as before. The class keeps Ray's name, so the
deployment stays `LLMServer:<model_id>`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, TypeVar

from ray.llm._internal.serve.core.server.llm_server import LLMServer as _RayLLMServer
from ray.llm._internal.serve.utils.batcher import Batcher

from stack.serving.settings import FIRST_CHUNK_AT_ONCE

T = TypeVar("T")


async def first_at_once(generator: AsyncGenerator[T, None], interval_ms: float | None
                        ) -> AsyncGenerator[list[T], None]:
    """The first item alone, at once; then Ray's batches of the rest."""
    try:
        first = await generator.__anext__()
    except StopAsyncIteration:
        return
    yield [first]
    async for batch in Batcher(generator, interval_ms=interval_ms).stream():
        yield list(batch)


class LLMServer(_RayLLMServer):
    def _batch_output_stream(self, generator: AsyncGenerator[Any, None]) -> AsyncGenerator[Any, None]:
        if not self._llm_config.experimental_configs.get(FIRST_CHUNK_AT_ONCE):
            return super()._batch_output_stream(generator)
        return first_at_once(generator, self._get_batch_interval_ms())
