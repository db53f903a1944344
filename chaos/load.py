"""Background load for an experiment: paced requests on threads, every outcome recorded.

Several workers share the rate, so one request hung on a stopped replica does not stop the load.
A square wave (high for half a period, idle for the other half) provokes the autoscaler.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Outcome:
    start: float  # wall time
    seconds: float
    status: int  # 0: no HTTP answer (timeout, refused)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class Load:
    def __init__(self, url: str, body: dict[str, Any], headers: dict[str, str], rate_per_s: float,
                 workers: int = 4, timeout_s: float = 30) -> None:
        self.url, self.body, self.headers = url, body, headers
        self.interval = workers / rate_per_s  # each worker's pace
        self.workers, self.timeout_s = workers, timeout_s
        self.outcomes: list[Outcome] = []
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
        try:
            status = client.post(self.url, json=self.body, headers=self.headers).status_code
        except httpx.HTTPError:
            status = 0
        with self._lock:
            self.outcomes.append(Outcome(start, time.perf_counter() - t0, status))

    def between(self, t0: float, t1: float) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if t0 <= o.start < t1]

    def totals(self) -> tuple[int, int]:
        with self._lock:
            return len(self.outcomes), sum(not o.ok for o in self.outcomes)


class SquareWave(Load):
    """Busy for the first half of each period, idle for the second."""

    def __init__(self, *args: Any, period_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.period_s = period_s
        self.t0 = time.time()

    def active(self, now: float) -> bool:
        return (now - self.t0) % self.period_s < self.period_s / 2
