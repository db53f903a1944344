"""What one sweep runs: its mode, families and rates, from `loadtest.sweep` and the environment, and
the Poisson arrivals of one step."""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import get_args

from stack.config import OpsConfig, SweepFamilyName

FAMILIES: tuple[str, ...] = get_args(SweepFamilyName)


class PlanError(ValueError):
    """A bad SWEEP, FAMILIES or PEAK_RATE, named so the user can fix it."""


@dataclass(frozen=True)
class Plan:
    mode: str
    families: tuple[str, ...]
    rates: dict[str, tuple[float, ...]]  # per family, rising
    peaks: dict[str, float]  # per family: the rate max_replicas is sized for
    peak_sources: dict[str, str]  # where each peak came from, for the advice's reasons
    step_s: float
    settle_s: float
    drain_timeout_s: float
    max_in_flight: int
    throughput_ratio: float
    backlog_floor: int
    seed: int

    @property
    def window_s(self) -> float:
        """The measured part of each step."""
        return self.step_s - self.settle_s


def rates(start_per_s: float, growth: float, steps: int) -> tuple[float, ...]:
    return tuple(round(start_per_s * growth**k, 3) for k in range(steps))


def parse_families(raw: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))
    unknown = [n for n in names if n not in FAMILIES]
    if unknown or not names:
        raise PlanError(f"FAMILIES={raw!r}: use a comma-separated subset of {', '.join(FAMILIES)}")
    return tuple(n for n in FAMILIES if n in names)  # always in the same order


def parse_peaks(raw: str, families: tuple[str, ...]) -> dict[str, float]:
    """PEAK_RATE=300 sets every family's peak; PEAK_RATE=llm=20,embed=300 sets those named."""
    items = [p.strip() for p in raw.split(",") if p.strip()]
    pairs = [item.partition("=") for item in items]
    try:
        if len(items) == 1 and not pairs[0][1]:
            peaks = dict.fromkeys(families, float(items[0]))
        else:
            peaks = {name.strip(): float(value) for name, _, value in pairs}
    except ValueError:
        raise PlanError(f"PEAK_RATE={raw!r}: a rate per second, or family=rate pairs") from None
    unknown = sorted(set(peaks) - set(FAMILIES))
    if unknown:
        raise PlanError(f"PEAK_RATE names unknown families {unknown}; families are {', '.join(FAMILIES)}")
    if any(v <= 0 for v in peaks.values()):
        raise PlanError(f"PEAK_RATE={raw!r}: rates must be > 0")
    return peaks


def resolve(ops: OpsConfig, env: Mapping[str, str] = os.environ) -> Plan:
    sweep = ops.loadtest.sweep
    mode_name = env.get("SWEEP") or "full"
    if mode_name not in sweep.modes:
        raise PlanError(f"SWEEP={mode_name!r}; use one of {', '.join(sweep.modes)}")
    mode = sweep.modes[mode_name]  # type: ignore[index]
    families = parse_families(env["FAMILIES"]) if env.get("FAMILIES") else FAMILIES
    peaks = {f: sweep.families[f].peak_rate_per_s for f in families}  # type: ignore[index]
    sources = {f: f"loadtest.sweep.families.{f}.peak_rate_per_s" for f in families}
    if env.get("PEAK_RATE"):
        given = {f: v for f, v in parse_peaks(env["PEAK_RATE"], families).items() if f in families}
        peaks.update(given)
        sources.update(dict.fromkeys(given, "PEAK_RATE"))
    return Plan(
        mode=mode_name, families=families,
        rates={f: rates(cfg.start_rate_per_s, cfg.growth, mode.steps or cfg.max_steps)
               for f in families for cfg in [sweep.families[f]]},  # type: ignore[index]
        peaks=peaks, peak_sources=sources, step_s=mode.step_s, settle_s=mode.settle_s,
        drain_timeout_s=mode.drain_timeout_s,
        max_in_flight=sweep.max_in_flight, throughput_ratio=sweep.throughput_ratio,
        backlog_floor=sweep.backlog_floor, seed=sweep.seed,
    )


def arrivals(rate_per_s: float, duration_s: float, seed: str) -> list[float]:
    """Poisson arrival times in [0, duration_s): exponential gaps of mean 1/rate, the same for a seed."""
    rng = random.Random(seed)  # a str seed is hashed with SHA-512: stable across runs and processes
    out: list[float] = []
    t = rng.expovariate(rate_per_s)
    while t < duration_s:
        out.append(t)
        t += rng.expovariate(rate_per_s)
    return out
