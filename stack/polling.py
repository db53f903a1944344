"""One way to wait for something that becomes true eventually (metrics export, spans, scrapes)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(fn: Callable[[], T], timeout_s: float = 60, every_s: float = 1) -> T:
    """Call fn until it returns something truthy or the time is up; return its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every_s)
