"""A short streaming-chat load from a plain asyncio client, until the locust suite lands (issue #6).

Starts the stack when it is not up, drives CONCURRENCY clients for DURATION seconds, prints
throughput, time to first token, end-to-end latency and errors, and leaves the stack running.
Exits non-zero when any request fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field

import httpx

from loadtests.stack_client import ensure_up
from loadtests.stats import percentile
from stack.config import load


@dataclass
class Results:
    ttft: list[float] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)
    tokens: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def one_chat(client: httpx.AsyncClient, url: str, model: str, max_tokens: int, out: Results) -> None:
    body = {"model": model, "stream": True, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "Say something about serving models."}]}
    start = time.perf_counter()
    first = None
    chunks = 0
    try:
        async with client.stream("POST", url, json=body) as r:
            if r.status_code != 200:
                out.error(f"HTTP {r.status_code}")
                return
            done = False
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    break
                delta = json.loads(line[6:])["choices"][0]["delta"].get("content")
                if delta:
                    first = first or time.perf_counter()
                    chunks += 1
            if not done or first is None:
                out.error("stream ended without tokens and [DONE]")
                return
    except httpx.HTTPError as err:
        out.error(type(err).__name__)
        return
    out.ttft.append(first - start)
    out.e2e.append(time.perf_counter() - start)
    out.tokens += chunks


async def drive(url: str, model: str, concurrency: int, duration_s: float, max_tokens: int) -> Results:
    out = Results()
    deadline = time.monotonic() + duration_s

    async def worker() -> None:
        while time.monotonic() < deadline:
            await one_chat(client, url, model, max_tokens, out)

    async with httpx.AsyncClient(timeout=60) as client:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


def main() -> int:
    ops = load()
    concurrency = int(os.environ.get("USERS", 4))
    duration = float(os.environ.get("DURATION", 30))
    max_tokens = int(os.environ.get("MAX_TOKENS", 32))
    model = ensure_up(ops)[0]
    url = f"{ops.listen.serve_url}/v1/chat/completions"
    print(f"streaming chat to {model}: {concurrency} clients for {duration:.0f}s, max_tokens={max_tokens}")
    started = time.perf_counter()
    res = asyncio.run(drive(url, model, concurrency, duration, max_tokens))
    elapsed = time.perf_counter() - started
    ok, failed = len(res.e2e), sum(res.errors.values())
    ms = lambda xs, q: percentile(xs, q) * 1000  # noqa: E731
    print(f"requests  ok={ok} failed={failed} rps={ok / elapsed:.2f}")
    print(f"TTFT ms   p50={ms(res.ttft, 50):.1f} p95={ms(res.ttft, 95):.1f} p99={ms(res.ttft, 99):.1f}")
    print(f"E2E  ms   p50={ms(res.e2e, 50):.1f} p95={ms(res.e2e, 95):.1f} p99={ms(res.e2e, 99):.1f}")
    print(f"output    {res.tokens / elapsed:.1f} tokens/s")
    for kind, n in sorted(res.errors.items()):
        print(f"error     {n} x {kind}")
    print("the stack is still running; stop it with `make down`")
    return 1 if failed or not ok else 0


if __name__ == "__main__":
    sys.exit(main())
