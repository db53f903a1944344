"""One load-test run's settings: the ops config's `loadtest` section with environment overrides.

The runner and the locustfile both call resolve(), so a locust started by hand behaves the same.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, get_args

from loadtests.shapes import Stage, plan
from stack.config import LoadTask, OpsConfig, Shape

TASKS: tuple[str, ...] = get_args(LoadTask)
SHAPES: tuple[str, ...] = get_args(Shape)


@dataclass(frozen=True)
class Settings:
    shape: str
    users: int
    duration_s: float
    spawn_rate: float
    rate_per_s: float | None  # set only for SHAPE=rate
    weights: dict[str, int]
    think_time_s: tuple[float, float]
    max_tokens: int
    embed_batch_texts: int
    tenant_zipf_exponent: float
    oscillation_period_s: float
    workers: int = 0  # 0: one locust process; N: a locust master and N workers (loadtests/distributed.py)

    @property
    def stages(self) -> list[Stage]:
        return plan(self.shape, self.users, self.duration_s, self.spawn_rate, self.oscillation_period_s)

    @property
    def enabled_tasks(self) -> list[str]:
        return [t for t in TASKS if self.weights.get(t, 0) > 0]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class SettingsError(ValueError):
    """A bad override, named so the user can fix it."""


def _number(env: Mapping[str, str], name: str, default: float, cast: type = float) -> Any:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a {cast.__name__}") from None
    if value <= 0:
        raise SettingsError(f"{name}={raw!r} must be > 0")
    return value


def _workers(env: Mapping[str, str], shape: str) -> int:
    raw = env.get("WORKERS")
    if raw in (None, ""):
        return 0
    if not raw.strip().isdigit():
        raise SettingsError(f"WORKERS={raw!r} must be a whole number >= 0 (0: one locust process)")
    workers = int(raw)
    if workers and shape == "sweep":  # the sweep drives its own load (loadtests/sweep), not locust
        raise SettingsError(f"WORKERS={raw!r} applies to locust's shapes, not SHAPE=sweep")
    return workers


def parse_weights(raw: str) -> dict[str, int]:
    """WEIGHTS=chat=3,embed=1: the tasks named get those weights, the others none."""
    weights = dict.fromkeys(TASKS, 0)
    for item in filter(None, (p.strip() for p in raw.split(","))):
        task, _, value = item.partition("=")
        if task not in weights:
            raise SettingsError(f"WEIGHTS: unknown task {task!r}; tasks are {', '.join(TASKS)}")
        if not value.isdigit():
            raise SettingsError(f"WEIGHTS: weight of {task!r} must be a whole number >= 0, got {value!r}")
        weights[task] = int(value)
    if not any(weights.values()):
        raise SettingsError("WEIGHTS gives no task a weight above 0")
    return weights


def resolve(ops: OpsConfig, env: Mapping[str, str] = os.environ) -> Settings:
    lt = ops.loadtest
    shape = env.get("SHAPE") or lt.shape
    if shape not in SHAPES:
        raise SettingsError(f"SHAPE={shape!r}; use one of {', '.join(SHAPES)}")
    weights = parse_weights(env["WEIGHTS"]) if env.get("WEIGHTS") else {t: lt.weights.get(t, 0)
                                                                        for t in TASKS}
    return Settings(
        shape=shape,
        users=_number(env, "USERS", lt.users, int),
        duration_s=_number(env, "DURATION", lt.duration_s),
        spawn_rate=lt.spawn_rate,
        rate_per_s=_number(env, "RATE", lt.rate_per_s) if shape == "rate" else None,
        weights=weights,
        think_time_s=lt.think_time_s,
        max_tokens=lt.max_tokens,
        embed_batch_texts=lt.embed_batch_texts,
        tenant_zipf_exponent=lt.tenant_zipf_exponent,
        oscillation_period_s=lt.oscillation_period_s,
        workers=_workers(env, shape),
    )
