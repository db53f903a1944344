"""Raw in-process MiniLM throughput: the ceiling the Serve path is compared with, on this machine."""

from __future__ import annotations

import functools
import time
from typing import Any


@functools.cache
def _model() -> Any:
    import torch

    from stack.serving.models.minilm import MiniLM

    return MiniLM("cuda" if torch.cuda.is_available() else "cpu")


def throughput(texts: list[str], batch_size: int, seconds: float, threads: int) -> dict[str, Any]:
    """Texts per second encoding batches of batch_size on `threads` torch threads (the replica's count:
    against every core the raw side would have more CPU than the replica it is compared with)."""
    import torch

    model = _model()
    batch = (texts * (batch_size // len(texts) + 1))[:batch_size]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for _ in range(3):
            model.encode(batch)
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            model.encode(batch)  # encode returns lists, so a GPU batch has finished when it returns
            done += batch_size
        elapsed = time.perf_counter() - started
        used = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)  # the bench process keeps its own default for whatever runs next
    return {"texts_per_s": round(done / elapsed, 2), "batch_size": batch_size, "seconds": round(elapsed, 2),
            "torch_threads": used, "device": model.device}


def tokens(text: str) -> int:
    return _model().encode([text]).tokens[0]
