"""A handler watchdog: a replica whose requests stop finishing fails its health check.

Serve's health check asks whether the replica's event loop answers. A replica can answer it and still
never finish a request (a handler awaiting something that never comes, a fault hang): half alive, and
Serve keeps routing to it. The watchdog tracks the start of each in-flight request; once the oldest has
run past `watchdog_s`, check_health raises, and Serve replaces the replica after its failure threshold.

The limit arrives as user_config {"watchdog_s": x} (stack/config.py DeploymentOptions.watchdog_s), so
`serve deploy` changes it without a restart; {"watchdog_s": null} turns it off. For leaf deployments
only: one that awaits another deployment would be replaced for that deployment's hang.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

WATCHDOG_KEY = "watchdog_s"


class Stuck(RuntimeError):
    """The handler is stuck; Serve logs this message with the failed health check."""


class Watchdog:
    """In-flight requests of one handler, by start time, and the age past which the handler is stuck."""

    def __init__(self, limit_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit_s, self.clock = limit_s, clock
        self._started: dict[int, float] = {}
        self._ids = itertools.count()

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """One request in flight for the length of the block, however it ends (a cancel included)."""
        token = next(self._ids)
        self._started[token] = self.clock()
        try:
            yield
        finally:
            del self._started[token]

    @property
    def in_flight(self) -> int:
        return len(self._started)

    def oldest_age_s(self) -> float | None:
        return self.clock() - min(self._started.values()) if self._started else None

    def check(self) -> None:
        """Raise Stuck when the oldest in-flight request has run past the limit; off when it is None."""
        if self.limit_s is None:
            return
        age = self.oldest_age_s()
        if age is not None and age > self.limit_s:
            raise Stuck(f"watchdog: the oldest in-flight request has run {age:.1f} s, "
                        f"past {self.limit_s:g} s: the handler is stuck ({self.in_flight} in flight)")

    def configure(self, user_config: Mapping[str, Any]) -> None:
        """Take watchdog_s from a user_config; a missing key leaves the limit as it is."""
        if WATCHDOG_KEY not in user_config:
            return
        value = user_config[WATCHDOG_KEY]
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if value is not None and (not number or value <= 0):
            raise ValueError(f"user_config {WATCHDOG_KEY} must be a number of seconds > 0, or null to turn "
                             f"the watchdog off; got {value!r}")
        self.limit_s = None if value is None else float(value)


class Watched:
    """Mixin for a deployment class whose handlers run inside `self.watchdog.track()`: Serve's health
    check and user_config reach the watchdog. The class must set `self.watchdog` in __init__.

    A check_health of the class's own replaces Serve's optional user-loop probe (Ray 2.60 runs that only
    without one); a blocked event loop still fails, as the check itself then times out.
    """

    watchdog: Watchdog

    async def check_health(self) -> None:
        self.watchdog.check()

    def reconfigure(self, user_config: Mapping[str, Any]) -> None:
        # Strict: a key the watchdog does not know is a typo in the Serve config; fail the rollout.
        unknown = set(user_config) - {WATCHDOG_KEY}
        if unknown:
            raise ValueError(f"user_config keys {sorted(unknown)} unknown to {type(self).__name__}; "
                             f"it takes only {WATCHDOG_KEY}")
        self.watchdog.configure(user_config)
