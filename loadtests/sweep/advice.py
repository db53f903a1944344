"""Autoscaling advice from the knee (pure): each number with the sentence that says where it came from.

- per-replica rate: the knee's rate over the replicas of the scaled deployment at the knee;
- target_ongoing_requests: Little's law, requests in a replica = its rate x their mean time in it;
- max_replicas: the peak rate over the per-replica rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Advice:
    knee_rate_per_s: float
    replicas: float  # of the scaled deployment at the knee; 1 when Prometheus did not say
    replicas_known: bool
    per_replica_rate_per_s: float
    mean_e2e_s: float
    target_ongoing_requests: int
    peak_rate_per_s: float
    max_replicas: int
    knee_is_floor: bool  # the sweep ran out of rates before it over-saturated
    reasons: tuple[str, ...]


def _ceil(x: float) -> int:
    return math.ceil(round(x, 6))  # 160 x 0.05 is 8.000000000000002 in floats, and needs 8 not 9


def recommend(knee_rate_per_s: float, replicas: float | None, mean_e2e_ms: float, peak_rate_per_s: float,
              peak_source: str, deployment: str, knee_is_floor: bool) -> Advice:
    if knee_rate_per_s <= 0 or mean_e2e_ms <= 0 or peak_rate_per_s <= 0:
        raise ValueError("the knee's rate, its mean E2E and the peak must be > 0")
    known = replicas is not None and replicas > 0
    n = replicas if known else 1.0
    assert n is not None
    per = knee_rate_per_s / n
    e2e_s = mean_e2e_ms / 1000
    ongoing = max(1, _ceil(per * e2e_s))  # a positive figure rounds up to 1 at least
    most = _ceil(peak_rate_per_s / per)
    knee = f"{knee_rate_per_s:g} req/s was the highest rate that met the target without over-saturating"
    if known:
        first = (f"{knee}, served by {n:g} replica(s) of {deployment} (Prometheus, the most during the "
                 f"step): {per:.4g} req/s per replica.")
    else:
        first = (f"{knee}. Prometheus gave no replica count for {deployment}, so this assumes 1 replica: "
                 f"{per:.4g} req/s per replica holds only if one replica served it all.")
    reasons = [
        first,
        f"target_ongoing_requests = ceil({per:.4g} req/s per replica x {e2e_s:.4g} s mean E2E at the knee) "
        f"= ceil({per * e2e_s:.3g}) = {ongoing}: by Little's law, the requests open at a replica "
        f"that serves the knee's rate per replica at the knee's latency.",
        f"max_replicas = ceil({peak_rate_per_s:g} req/s peak ({peak_source}) / {per:.4g} req/s per replica) "
        f"= ceil({peak_rate_per_s / per:.3g}) = {most}.",
    ]
    if knee_is_floor:
        reasons.append("The sweep reached its last rate without over-saturating: the real knee is higher, so "
                       "the per-replica rate is a floor and max_replicas a ceiling; add steps to find it.")
    return Advice(knee_rate_per_s, n, known, round(per, 4), round(e2e_s, 4), ongoing, peak_rate_per_s, most,
                  knee_is_floor, tuple(reasons))
