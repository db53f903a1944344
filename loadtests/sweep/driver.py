"""One step of the sweep: Poisson arrivals at one rate, each sent at its time whatever the others do.

Open loop: a slow server does not slow the arrivals (a closed loop of users would, and hide the queue).
An arrival finding max_in_flight requests open is dropped. After the arrivals, the step waits for the
open requests up to drain_timeout_s and counts the rest as failed.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import httpx

from loadtests.sweep.families import Family
from loadtests.sweep.plan import Plan, arrivals
from stack import targets


@dataclass(frozen=True)
class Record:
    """One arrival; times in seconds from the step's start (the event loop's monotonic clock)."""

    scheduled: float
    sent: float | None = None  # None: dropped, the in-flight cap was full
    end: float | None = None  # None: dropped, or still open when the drain timed out
    ok: bool = False
    status: int | None = None
    first_token: float | None = None  # the LLM's first content delta
    tokens: int = 0
    error: str = ""

    @property
    def dropped(self) -> bool:
        return self.sent is None

    @property
    def e2e_ms(self) -> float | None:
        return None if self.sent is None or self.end is None else (self.end - self.sent) * 1000

    @property
    def ttft_ms(self) -> float | None:
        if self.sent is None or self.first_token is None:
            return None
        return (self.first_token - self.sent) * 1000

    @property
    def tpot_ms(self) -> float | None:
        """Mean time per output token after the first."""
        if self.end is None or self.first_token is None or self.tokens < 2:
            return None
        return (self.end - self.first_token) * 1000 / (self.tokens - 1)


@dataclass(frozen=True)
class StepRun:
    rate_per_s: float
    started: float  # wall clock (unix seconds) at the step's start, for Prometheus
    step_s: float
    settle_s: float
    records: tuple[Record, ...]
    cpu_s: float  # this process's CPU during the step: the load generator's own cost
    elapsed_s: float  # the step with its drain


@dataclass(frozen=True)
class _Answer:
    ok: bool
    status: int | None
    first_token: float | None
    tokens: int
    error: str


async def _stream(client: httpx.AsyncClient, family: Family, i: int, clock) -> _Answer:
    """The streamed chat: `data: ` lines, the first content delta is the first token, the usage chunk
    counts the tokens, `data: [DONE]` ends a complete stream."""
    async with client.stream("POST", family.route, json=family.body(i)) as resp:
        if resp.status_code != 200:
            text = (await resp.aread()).decode(errors="replace")[:200]
            return _Answer(False, resp.status_code, None, 0, f"HTTP {resp.status_code}: {text}")
        first, chunks, tokens, done = None, 0, 0, False
        async for line in resp.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                break
            event = json.loads(line[6:])
            if "error" in event:
                return _Answer(False, 200, first, 0, f"stream error: {str(event['error'])[:200]}")
            choices = event.get("choices") or []
            if choices and (choices[0].get("delta") or {}).get("content"):
                chunks += 1
                first = first if first is not None else clock()
            if event.get("usage"):
                tokens = event["usage"].get("completion_tokens") or tokens
        ok = done and first is not None
        error = "" if ok else "stream ended without content and [DONE]"
        return _Answer(ok, 200, first, tokens or chunks, error)


async def send(client: httpx.AsyncClient, family: Family, i: int, clock) -> _Answer:
    try:
        if family.streams:
            return await _stream(client, family, i, clock)
        resp = await client.post(family.route, json=family.body(i))
        ok = resp.status_code == 200
        error = "" if ok else f"HTTP {resp.status_code}: {resp.text[:200]}"
        return _Answer(ok, resp.status_code, None, 0, error)
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as err:  # transport, bad JSON, bad event
        return _Answer(False, None, None, 0, f"{type(err).__name__}: {err}"[:200])


def client(base_url: str, plan: Plan) -> httpx.AsyncClient:
    """Room for every request the cap allows; the drain, not a client timeout, ends a stuck request."""
    limits = httpx.Limits(max_connections=plan.max_in_flight, max_keepalive_connections=plan.max_in_flight)
    return httpx.AsyncClient(base_url=base_url, limits=limits, headers=targets.headers("serve"),
                             timeout=httpx.Timeout(plan.step_s + plan.drain_timeout_s + 30))


async def run_step(http: httpx.AsyncClient, family: Family, rate_per_s: float, plan: Plan,
                   seed: str) -> StepRun:
    loop = asyncio.get_running_loop()
    schedule = arrivals(rate_per_s, plan.step_s, seed)
    records: list[Record | None] = [None] * len(schedule)
    open_: dict[int, asyncio.Task] = {}
    sent_at: dict[int, float] = {}
    cpu0, wall0, t0 = time.process_time(), time.time(), loop.time()

    def clock() -> float:
        return loop.time() - t0

    async def one(i: int, at: float) -> None:
        answer = await send(http, family, i, clock)
        records[i] = Record(at, sent_at[i], clock(), answer.ok, answer.status, answer.first_token,
                            answer.tokens, answer.error)

    for i, at in enumerate(schedule):
        delay = at - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(open_) >= plan.max_in_flight:
            records[i] = Record(at, error="dropped: in-flight cap full")
            continue
        sent_at[i] = clock()
        task = asyncio.create_task(one(i, at))
        open_[i] = task
        task.add_done_callback(lambda _t, i=i: open_.pop(i, None))
    if (rest := plan.step_s - clock()) > 0:
        await asyncio.sleep(rest)
    if open_:
        _, pending = await asyncio.wait(list(open_.values()), timeout=plan.drain_timeout_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    done = tuple(r if r is not None else Record(at, sent_at[i], error="still open after the drain timeout")
                 for i, (at, r) in enumerate(zip(schedule, records, strict=True)))
    return StepRun(rate_per_s, wall0, plan.step_s, plan.settle_s, done, time.process_time() - cpu0, clock())
