"""serveops_request_latency_ms: request latency by route, each bucket carrying a sampled request's trace id.

Ray 2.60's metrics pipeline drops exemplars (docs/observability.md, "Exemplars"), so this histogram travels
apart from it. Each ingress replica tallies its requests in process (no I/O on the request path) and,
every FLUSH_S, sends what it counted to one exporter actor on the head node; the exporter adds the
replicas' counts up and serves them as OpenMetrics, every bucket with the latest sampled request that
fell in it as its exemplar. Prometheus stores exemplars only with --enable-feature=exemplar-storage.

The exporter's address comes from the environment the Serve config gives every Serve process
(LISTEN_ENV, set by stack/serve_config.tracing_env); without it nothing is tallied.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import HistogramMetricFamily
from prometheus_client.samples import Exemplar

from stack.serving.observability.metrics import LATENCY_MS

LISTEN_ENV = "SERVEOPS_EXEMPLARS_LISTEN"
NAME = "serveops_request_latency_ms"
HELP = ("Request latency at the ingress replica (ms), by application and route; a bucket's exemplar is "
        "the trace id of the latest sampled request in it.")
LABELS = ("application", "route")
Key = tuple[str, str]  # LABELS' values
ACTOR = "serveops-exemplars"
NAMESPACE = "serveops"
FLUSH_S = 1.0
# After a failed ship, wait twice as long each time up to this: an exporter that cannot start (its port
# taken) must not have every replica spawn a new actor process each second.
MAX_BACKOFF_S = 60.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    trace_id: str
    value_ms: float
    at: float  # unix seconds


@dataclass
class RouteTally:
    counts: list[int]  # per bucket, not cumulative; the last is +Inf
    sum_ms: float = 0.0
    exemplars: dict[int, Sample] = field(default_factory=dict)  # bucket index -> latest sampled request


class LatencyTally:
    """Bucket counts, sums and each bucket's latest exemplar, by application and route. A replica drains
    deltas from its own; the exporter merges them into its running total."""

    def __init__(self, bounds: Sequence[float] = LATENCY_MS) -> None:
        self.bounds = tuple(bounds)
        self.routes: dict[Key, RouteTally] = {}

    def _route(self, key: Key) -> RouteTally:
        tally = self.routes.get(key)
        if tally is None:
            tally = self.routes[key] = RouteTally([0] * (len(self.bounds) + 1))
        return tally

    def observe(self, key: Key, value_ms: float, trace_id: str | None = None,
                at: float | None = None) -> None:
        tally = self._route(key)
        index = bisect.bisect_left(self.bounds, value_ms)  # buckets are `le`: a value on a bound is in it
        tally.counts[index] += 1
        tally.sum_ms += value_ms
        if trace_id is not None:
            tally.exemplars[index] = Sample(trace_id, value_ms, time.time() if at is None else at)

    def drain(self) -> dict[Key, RouteTally]:
        """What was counted since the last drain; the tally starts again from nothing."""
        routes, self.routes = self.routes, {}
        return routes

    def merge(self, delta: Mapping[Key, RouteTally]) -> None:
        for key, part in delta.items():
            if len(part.counts) != len(self.bounds) + 1:
                raise ValueError(f"{key}: {len(part.counts)} buckets, expected {len(self.bounds) + 1}")
            tally = self._route(key)
            tally.counts = [a + b for a, b in zip(tally.counts, part.counts, strict=True)]
            tally.sum_ms += part.sum_ms
            for index, sample in part.exemplars.items():
                kept = tally.exemplars.get(index)
                if kept is None or sample.at >= kept.at:
                    tally.exemplars[index] = sample

    def family(self) -> HistogramMetricFamily:
        hist = HistogramMetricFamily(NAME, HELP, labels=LABELS)
        les = [f"{b:g}" for b in self.bounds] + ["+Inf"]
        for key, tally in sorted(self.routes.items()):
            buckets: list[Any] = []
            running = 0
            for index, (le, count) in enumerate(zip(les, tally.counts, strict=True)):
                running += count
                sample = tally.exemplars.get(index)
                if sample is None:
                    buckets.append((le, running))
                else:
                    buckets.append((le, running, Exemplar({"trace_id": sample.trace_id}, sample.value_ms,
                                                          sample.at)))
            hist.add_metric(list(key), buckets, tally.sum_ms)
        return hist


class Exporter:
    """The Ray actor on the head node: the replicas' deltas in, OpenMetrics out on host:port."""

    def __init__(self, host: str, port: int, bounds: Sequence[float] = LATENCY_MS) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        self.tally = LatencyTally(bounds)
        self.lock = threading.Lock()  # the HTTP server's thread reads while the actor's thread merges
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)  # type: ignore[arg-type]
        self.server, _ = start_http_server(port, addr=host, registry=registry)

    def add(self, delta: dict[Key, RouteTally]) -> None:
        with self.lock:
            self.tally.merge(delta)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self.lock:
            yield self.tally.family()


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{LISTEN_ENV}={value!r}: expected host:port")
    return host, int(port)


def replica_application() -> str:
    """The Serve application this replica belongs to; "" outside a replica."""
    from ray import serve
    from ray.serve.exceptions import RayServeException

    try:
        return serve.get_replica_context().app_name
    except RayServeException:
        return ""


def exporter_actor(host: str, port: int) -> Any:
    """The one exporter, created by whichever replica asks first; detached, so it outlives replicas."""
    import ray

    return ray.remote(Exporter).options(
        name=ACTOR, namespace=NAMESPACE, get_if_exists=True, lifetime="detached", num_cpus=0,
        # On the head, where the scrape config (and on KubeRay the head PodMonitor) looks for it.
        resources={"node:__internal_head__": 0.001}, max_restarts=-1,
    ).remote(host, port)


class Recorder:
    """A replica's side: observe() on the request path, a task that ships the tally every FLUSH_S."""

    def __init__(self, listen: tuple[str, int], flush_s: float = FLUSH_S) -> None:
        self.listen = listen
        self.flush_s = flush_s
        self.tally = LatencyTally()
        self._task: asyncio.Task[None] | None = None
        self._actor: Any = None
        self.failures = 0  # in a row; sets the wait before the next ship
        self.application = ""  # Serve's, once start() runs in the replica

    def start(self) -> None:
        """From the replica's event loop (the ASGI lifespan): the exporter is up before any request."""
        if self._task is None:
            self.application = replica_application()
            self._task = asyncio.get_running_loop().create_task(self._ship_forever())

    def observe(self, route: str, value_ms: float, trace_id: str | None) -> None:
        self.start()
        self.tally.observe((self.application, route), value_ms, trace_id)

    async def ship(self) -> None:
        delta = self.tally.drain()
        try:
            if self._actor is None:  # looked up (or started) even when idle: up before the first request
                self._actor = exporter_actor(*self.listen)
            if not delta:  # an idle replica costs the exporter nothing
                return
            await self._actor.add.remote(delta)
        except Exception as err:  # no exporter or no GCS: this interval's counts are lost, like a reset
            if not self.failures:  # once per outage
                log.warning("serveops exemplar exporter unreachable (%s); looking it up again", err)
            self.failures, self._actor = self.failures + 1, None
        else:
            self.failures = 0

    def delay_s(self) -> float:
        return min(self.flush_s * 2 ** self.failures, MAX_BACKOFF_S)

    async def _ship_forever(self) -> None:
        while True:
            await self.ship()
            await asyncio.sleep(self.delay_s())


@functools.cache
def recorder() -> Recorder | None:
    value = os.environ.get(LISTEN_ENV, "").strip()
    return Recorder(parse_listen(value)) if value else None
