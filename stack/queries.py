"""PromQL that rules, dashboards and chaos probes must read alike, kept in one place."""

from __future__ import annotations


def target_changes(window: str, step_s: int, selector: str = "") -> str:
    """Changes of each deployment's autoscaling target in the window, not counting a scale to zero or
    back: an idle min_replicas 0 deployment cycles 1 -> 0 -> 1 by design (its cold start shows in
    latency), and two idle spells would otherwise read as oscillation. The subquery samples at the
    scrape interval, so no scraped change is missed."""
    sel = f"{{{selector}}}" if selector else ""
    return f"changes(clamp_min(ray_serve_autoscaling_target_replicas{sel}, 1)[{window}:{step_s}s])"
