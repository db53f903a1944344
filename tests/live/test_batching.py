"""@serve.batch really batches: 32 concurrent clients on /embed give a mean batch size above 1."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from stack import ray_metrics
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


def batch_totals(samples: ray_metrics.Samples) -> tuple[float, float]:
    return (ray_metrics.total(samples, "ray_serve_actual_batch_size_sum", **EMBEDDER),
            ray_metrics.total(samples, "ray_serve_actual_batch_size_count", **EMBEDDER))


def test_mean_batch_size_above_one(live_stack: OpsConfig, metrics_url: str) -> None:
    sent = CLIENTS * PER_CLIENT
    before_sum, before_count = batch_totals(ray_metrics.scrape(metrics_url))
    sizes = asyncio.run(hammer(live_stack.listen.serve_url))
    assert len(sizes) == sent and max(sizes) > 1
    # Ray's exported histogram sum is approximate (it read 193.5 for 192 texts), so wait for most of it.
    after = ray_metrics.wait_for(
        metrics_url, lambda s: batch_totals(s)[0] - before_sum >= 0.9 * sent)
    texts = batch_totals(after)[0] - before_sum
    batches = batch_totals(after)[1] - before_count
    assert texts >= 0.9 * sent and batches > 0
    mean = texts / batches
    print(f"mean batch size {mean:.2f} over {batches:.0f} batches; largest {max(sizes)}")
    assert mean > 1
