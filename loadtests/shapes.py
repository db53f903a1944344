"""Traffic shapes as plain data: a list of stages, each holding a user count until a time.

Kept free of locust so chaos experiments and tests can reason about the same shapes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    until_s: float
    users: int
    spawn_rate: float


def _low(users: int) -> int:
    return max(1, users // 4)


def plan(shape: str, users: int, duration_s: float, spawn_rate: float, period_s: float) -> list[Stage]:
    """The stages of one run. Sudden shapes (spike, oscillation) start their users at once."""
    burst = float(users)  # all users within a second
    if shape in ("steady", "rate"):
        return [Stage(duration_s, users, spawn_rate)]
    if shape == "step":
        steps = 4
        return [Stage(duration_s * (k + 1) / steps, max(1, round(users * (k + 1) / steps)), spawn_rate)
                for k in range(steps)]
    if shape == "spike":
        return [Stage(duration_s * 0.4, _low(users), spawn_rate),
                Stage(duration_s * 0.6, users, burst),
                Stage(duration_s, _low(users), burst)]
    if shape == "oscillation":
        half = period_s / 2
        stages, t, high = [], 0.0, True
        while t < duration_s:
            t = min(duration_s, t + half)
            stages.append(Stage(t, users if high else _low(users), burst))
            high = not high
        return stages
    raise ValueError(f"unknown shape {shape!r}; use steady, step, spike, oscillation or rate")


def at(stages: list[Stage], t: float) -> Stage | None:
    """The stage in force at t seconds into the run; None once the run is over."""
    return next((s for s in stages if t < s.until_s), None)
