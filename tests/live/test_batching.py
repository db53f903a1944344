"""@serve.batch really batches: 32 concurrent clients on /embed give a mean batch size above 1."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from stack import prom
from stack.config import OpsConfig

pytestmark = pytest.mark.live
CLIENTS, PER_CLIENT = 32, 6
EMBEDDER = {"application": "embed", "deployment": "Embedder"}


async def hammer(base: str) -> list[int]:
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        async def one_client(i: int) -> list[int]:
            sizes = []
            for j in range(PER_CLIENT):
                r = await client.post("/embed", json={"text": f"client {i} request {j} about batching"})
                assert r.status_code == 200, r.text
                sizes.append(r.json()["batch_size"])
            return sizes

        results = await asyncio.gather(*(one_client(i) for i in range(CLIENTS)))
    return [s for sizes in results for s in sizes]


def batches(samples: prom.Samples) -> float:
    # The histogram's count is exact; its exported sum is approximated from buckets, so texts are
    # counted from what was sent, all of it answered 200.
    return prom.total(samples, "ray_serve_actual_batch_size_count", **EMBEDDER)


def test_mean_batch_size_above_one(live_stack: OpsConfig, metrics_url: str) -> None:
    sent = CLIENTS * PER_CLIENT
    before = batches(prom.scrape(metrics_url))
    sizes = asyncio.run(hammer(live_stack.listen.serve_url))
    assert len(sizes) == sent and max(sizes) > 1
    ran = prom.wait_settled(metrics_url, batches) - before
    assert 0 < ran < sent
    mean = sent / ran
    print(f"mean batch size {mean:.2f} over {ran:.0f} batches; largest {max(sizes)}")
    assert mean > 1
