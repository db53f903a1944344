"""Read Ray's Prometheus export (127.0.0.1:8080) directly, for tests and benchmarks that need a figure now."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from stack.polling import eventually

Samples = list[tuple[str, dict[str, str], float]]


def scrape(metrics_url: str) -> Samples:
    text = httpx.get(f"{metrics_url}/metrics", timeout=10).text
    return [(s.name, s.labels, s.value) for fam in text_string_to_metric_families(text) for s in fam.samples]


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include the given ones."""
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == w for k, w in labels.items()))


def wait_for(metrics_url: str, predicate: Callable[[Samples], bool], timeout_s: float = 60) -> Samples:
    """Poll until predicate holds; Ray reports metrics every few seconds, not per request."""
    last: Samples = []

    def check() -> bool:
        nonlocal last
        last = scrape(metrics_url)
        return predicate(last)

    eventually(check, timeout_s, every_s=2)
    return last


def wait_settled(metrics_url: str, value: Callable[[Samples], float], settle_s: float = 10,
                 timeout_s: float = 90) -> float:
    """Poll until a figure has moved and then held still for settle_s: Ray has exported it all."""
    start = value(scrape(metrics_url))
    deadline = time.monotonic() + timeout_s
    last, since = start, time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(2)
        now = value(scrape(metrics_url))
        if now != last:
            last, since = now, time.monotonic()
        elif now != start and time.monotonic() - since >= settle_s:
            break
    return last
