"""Judges of a sweep (pure): did a step meet its target, did it over-saturate, and where is the knee.

Over-saturated: the stack no longer keeps up, so its queue grows without bound at this rate. Any of:
- dropped: an arrival found the in-flight cap full;
- throughput: it served under throughput_ratio of the arrivals, by more than backlog_floor requests;
- backlog: more requests open at the step's end than twice the mean, and more than backlog_floor.
The throughput check compares against the arrivals actually drawn, not the nominal rate: at a few
requests a second a Poisson draw lands well off the nominal rate, and that is not the server's doing.
The floor keeps a handful of requests, the noise of small counts, from stopping a sweep.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from loadtests.sweep.figures import Figures


@dataclass(frozen=True)
class Reason:
    code: str  # empty | goodput | dropped | throughput | backlog
    detail: str


@dataclass(frozen=True)
class Verdict:
    met_target: bool
    oversaturated: bool
    reasons: tuple[Reason, ...]  # why the step fails; empty when it passed

    @property
    def passed(self) -> bool:
        return self.met_target and not self.oversaturated

    def line(self) -> str:
        return "ok" if self.passed else "; ".join(r.detail for r in self.reasons)


def judge(f: Figures, target: float, window_s: float, throughput_ratio: float, backlog_floor: int) -> Verdict:
    if f.arrivals == 0 or f.good_share is None:
        empty = Reason("empty", "no arrival in the measured window; lengthen the step")
        return Verdict(False, False, (empty,))
    saturation: list[Reason] = []
    if f.dropped:
        saturation.append(Reason("dropped", f"{f.dropped} arrivals dropped at the in-flight cap"))
    shortfall = (f.achieved_per_s - f.throughput_per_s) * window_s
    if f.throughput_per_s < throughput_ratio * f.achieved_per_s and shortfall > backlog_floor:
        saturation.append(Reason("throughput", f"served {f.throughput_per_s:g}/s of {f.achieved_per_s:g}/s "
                                               f"arriving (under {throughput_ratio:.0%})"))
    if f.in_flight_end > 2 * f.mean_in_flight and f.in_flight_end > backlog_floor:
        saturation.append(Reason("backlog", f"{f.in_flight_end} open at the end, mean {f.mean_in_flight:g}"))
    met = f.good_share >= target
    short = f"good share {f.good_share:.2%} under the target {target:.2%}"
    goodput = [] if met else [Reason("goodput", short)]
    return Verdict(met, bool(saturation), tuple(goodput + saturation))


@dataclass(frozen=True)
class Knee:
    index: int | None  # the knee's step: the highest rate that passed; None when none did
    stopped_at: int | None  # the step that failed and ended the sweep; None when the last rate passed
    why: str  # the reason the sweep ended, in words

    @property
    def last_rate_reached(self) -> bool:
        return self.stopped_at is None


def find_knee(verdicts: Sequence[Verdict], configured_steps: int) -> Knee:
    """The sweep stops at the first step that fails; the knee is the step before it."""
    for i, v in enumerate(verdicts):
        if not v.passed:
            return Knee(i - 1 if i else None, i, v.line())
    if len(verdicts) < configured_steps:
        raise ValueError(f"{len(verdicts)} of {configured_steps} steps ran and passed: cut short")
    last = len(verdicts) - 1 if verdicts else None
    return Knee(last, None, "the last configured rate was reached without over-saturating")
