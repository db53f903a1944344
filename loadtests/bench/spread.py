"""Repeats and their spread: how every bench figure is built, and how its goal is judged.

A figure is the mean of its repeats; it keeps each repeat and their min and max, because a mean that
meets a goal can hide a repeat that missed it, and two repeats further apart than the figure is from
its goal say the next run could land on the other side.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any, Literal

from stack.config import Goal

Verdict = Literal["met", "missed", "noisy"]


def figure(per_repeat: Sequence[float], digits: int = 3) -> dict[str, Any]:
    """value (the mean of the repeats), per_repeat and spread {min, max}, each rounded to digits."""
    values = [float(v) for v in per_repeat]
    if not values:
        raise ValueError("a figure needs at least one repeat")
    return {"value": round(statistics.fmean(values), digits),
            "per_repeat": [round(v, digits) for v in values],
            "spread": {"min": round(min(values), digits), "max": round(max(values), digits)}}


def bound(goal: Goal) -> float:
    return goal.min if goal.min is not None else goal.max  # type: ignore[return-value]


def verdict(value: float, per_repeat: Sequence[float], goal: Goal,
            null_floor: float | None = None) -> Verdict:
    """met only when every repeat meets the goal and the repeats agree within the figure's margin to it.

    margin = |value - bound|; spread = max - min of the repeats. spread > margin is noisy: the repeats
    disagree by more than the figure clears (or misses) its goal by. Every repeat missing is missed, however
    noisy. One repeat has no spread, so it is met or missed on its own (the noise is not judged).

    null_floor, for a ratio whose section also set one setting against itself (an A/A comparison): how far
    that ratio strayed from 1. A margin inside it is noisy, met or missed: the measurement moved that much
    with nothing changed, so it cannot tell this figure from its goal."""
    values = [float(v) for v in per_repeat] or [float(value)]
    if any(math.isnan(v) for v in [value, *values]):
        return "missed"
    if null_floor is not None and (math.isnan(null_floor) or null_floor > abs(value - bound(goal))):
        return "noisy"
    meeting = [goal.met(v) for v in values]
    if not any(meeting):
        return "missed"
    if max(values) - min(values) > abs(value - bound(goal)) or not all(meeting):
        return "noisy"
    return "met"
