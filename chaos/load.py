"""Background load for an experiment: paced requests on threads, every outcome recorded.

Several workers share the rate, so one request hung on a stopped replica does not stop the load.
Requests in flight are tracked too: one stuck on a stopped replica shows up as hung as soon as it is
older than the route's latency objective, not only when its client timeout ends it.
A square wave (high for half a period, idle for the other half) provokes the autoscaler.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from stack.config import OpsConfig

# The error type of an answer the replicas' fault hook (stack/serving/faults.py) injected.
INJECTED_MARK = b'"fault_injected"'


@dataclass(frozen=True)
class Outcome:
    start: float  # wall time
    seconds: float
    status: int  # 0: no HTTP answer (timeout, refused)
    injected: bool = False  # an error the fault hook answered on purpose (type fault_injected)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def lost(self) -> bool:
        """Failed for a reason other than the experiment's own injected error."""
        return not self.ok and not self.injected

    @property
    def end(self) -> float:
        return self.start + self.seconds


class Load:
    def __init__(self, url: str, body: dict[str, Any], headers: dict[str, str], rate_per_s: float,
                 workers: int = 4, timeout_s: float = 30, objective_s: float | None = None) -> None:
        self.url, self.body, self.headers = url, body, headers
        self.interval = workers / rate_per_s  # each worker's pace
        self.workers, self.timeout_s = workers, timeout_s
        # The route's latency objective: a request older than it is hung. None: only the timeout counts.
        self.objective_s = objective_s if objective_s is not None else timeout_s
        self.outcomes: list[Outcome] = []
        self._in_flight: dict[int, float] = {}  # request number -> wall start
        self._ids = itertools.count()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def active(self, now: float) -> bool:
        return True

    def start(self) -> Load:
        for i in range(self.workers):
            t = threading.Thread(target=self._work, args=(i,), daemon=True, name=f"chaos-load-{i}")
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout_s + 5)

    def _work(self, index: int) -> None:
        self._stop.wait(self.interval * index / self.workers)  # spread the workers over one interval
        with httpx.Client(timeout=self.timeout_s) as client:
            while not self._stop.is_set():
                began = time.monotonic()
                if self.active(time.time()):
                    self._send(client)
                self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def _send(self, client: httpx.Client) -> None:
        start, t0 = time.time(), time.perf_counter()
        with self._lock:
            rid = next(self._ids)
            self._in_flight[rid] = start
        injected = False
        try:
            r = client.post(self.url, json=self.body, headers=self.headers)
            status = r.status_code
            injected = status >= 500 and INJECTED_MARK in r.content
        except httpx.HTTPError:
            status = 0
        with self._lock:
            del self._in_flight[rid]
            self.outcomes.append(Outcome(start, time.perf_counter() - t0, status, injected))

    def between(self, t0: float, t1: float) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if t0 <= o.start < t1]

    def in_flight(self, now: float) -> list[float]:
        """Ages, in seconds, of the requests sent and not yet answered."""
        with self._lock:
            return sorted(now - start for start in self._in_flight.values())

    def hung_now(self, now: float) -> int:
        """Requests in flight for longer than the objective."""
        return sum(age > self.objective_s for age in self.in_flight(now))

    def totals(self) -> tuple[int, int]:
        """Sent and failed; a request still unanswered counts as sent and failed. An error the fault
        hook injected on purpose is the fault itself, not its cost: counted by injected()."""
        with self._lock:
            pending = len(self._in_flight)
            return len(self.outcomes) + pending, sum(o.lost for o in self.outcomes) + pending

    def failures(self) -> dict[str, int]:
        """What the lost requests got: an HTTP status, or no answer (timed out, refused, still pending)."""
        with self._lock:
            got = [str(o.status) if o.status else "no answer" for o in self.outcomes if o.lost]
            got += ["no answer"] * len(self._in_flight)
        return {k: got.count(k) for k in sorted(set(got))}

    def injected(self) -> int:
        with self._lock:
            return sum(o.injected for o in self.outcomes)

    def hung(self, now: float) -> int:
        """Requests that were in flight past the objective at some point: answered late, or not yet."""
        with self._lock:
            late = sum(o.seconds > self.objective_s for o in self.outcomes)
            return late + sum(now - start > self.objective_s for start in self._in_flight.values())


def objective_s(ops: OpsConfig, route: str) -> float | None:
    """The route's latency objective from the ops config's SLOs (the LLM routes share one)."""
    slo = ops.slo_for(route)
    return slo.latency_objective_ms / 1000 if slo else None


class SquareWave(Load):
    """Busy for the first half of each period, idle for the second."""

    def __init__(self, *args: Any, period_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.period_s = period_s
        self.t0 = time.time()

    def active(self, now: float) -> bool:
        return (now - self.t0) % self.period_s < self.period_s / 2
