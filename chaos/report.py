"""An experiment's report: summary.md, result.json and timeline.png under reports/chaos-<name>-<ts>/."""

from __future__ import annotations

import json
import math
import textwrap
from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from chaos.context import Context
from chaos.engine import Result
from stack.prom import Series, query_range
from stack.stats import percentile

WINDOW_S = 2.0
MARK_COLORS = {"inject": "red", "fault": "darkred", "detected": "orange", "healed": "green",
               "mitigated": "purple", "recovered": "blue"}


def _series(ctx: Context, expr: str, start: float, end: float, label: str) -> Series:
    try:
        return query_range(ctx.ops, expr, start, end, label)
    except Exception:  # a report without Prometheus still shows the load
        return {}


def in_flight(ctx: Context, xs: list[float]) -> tuple[list[int], list[float]]:
    """At each time: how many requests were sent and not yet answered, and the oldest one's age (s)."""
    t0, now = ctx.started, ctx.clock()
    spans = [(o.start, o.end) for o in ctx.load.outcomes]
    spans += [(now - age, math.inf) for age in ctx.load.in_flight(now)]
    counts, ages = [], []
    for x in xs:
        at = t0 + x
        open_ = [at - start for start, end in spans if start <= at < end]
        counts.append(len(open_))
        ages.append(max(open_, default=0.0))
    return counts, ages


def timeline(ctx: Context, result: Result, path: Path) -> Path:
    t0, end = ctx.started, max(ctx.marks.values(), default=ctx.started) + 10
    buckets: dict[float, list] = {}
    for o in ctx.load.outcomes:
        buckets.setdefault((o.end - t0) // WINDOW_S * WINDOW_S, []).append(o)  # by completion
    # Every window, empty ones included: no answers for 10s is a gap in latency and zero throughput,
    # not a line drawn across it.
    xs = [i * WINDOW_S for i in range(int((end - t0) // WINDOW_S) + 1)]
    fig, (rps, lat, flight, reps, alerts) = plt.subplots(5, 1, figsize=(11, 13), sharex=True)
    fig.suptitle(f"chaos {result.experiment}: {ctx.exp.title}")
    rps.plot(xs, [sum(o.ok for o in buckets.get(x, [])) / WINDOW_S for x in xs], label="ok/s")
    injected = [sum(o.injected for o in buckets.get(x, [])) / WINDOW_S for x in xs]
    if any(injected):  # errors the fault hook answered on purpose: the fault, not its cost
        rps.plot(xs, injected, color="orange", label="injected errors/s")
    rps.plot(xs, [sum(o.lost for o in buckets.get(x, [])) / WINDOW_S for x in xs], color="red",
             label="failed/s")
    rps.set_ylabel("answered/s")
    nan = float("nan")
    lat.plot(xs, [percentile([o.seconds * 1000 for o in buckets[x]], 50) if x in buckets else nan
                  for x in xs], ".-", label="p50")  # dots: a lone window between gaps still shows
    lat.plot(xs, [max(o.seconds * 1000 for o in buckets[x]) if x in buckets else nan for x in xs], ".-",
             label="max")
    lat.axhline(ctx.load.objective_s * 1000, color="grey", linestyle=":", label="objective")
    lat.set_ylabel("latency ms")
    lat.set_yscale("log")
    counts, ages = in_flight(ctx, xs)
    flight.plot(xs, counts, label="in flight")
    flight.plot(xs, ages, color="red", label="oldest in flight, s")
    flight.axhline(ctx.load.objective_s, color="grey", linestyle=":", label="objective, s")
    flight.set_ylabel("in flight")
    t = ctx.exp.target
    sel = f'application="{t.app}",deployment="{t.deployment}"'
    for name, expr, style in (("healthy", f"sum(ray_serve_deployment_replica_healthy{{{sel}}})", "-"),
                              ("target", f"max(ray_serve_autoscaling_target_replicas{{{sel}}})", "--")):
        for _, pts in _series(ctx, expr, t0, end, "none").items():
            reps.step([p[0] - t0 for p in pts], [p[1] for p in pts], style, where="post", label=name)
    reps.set_ylabel(f"{t.deployment} replicas")
    # Each expected alert with its labels: the same alert on another deployment is not this fault's.
    selectors = [",".join([f'alertname="{e.alert}"', *(f'{k}="{v}"' for k, v in e.labels.items())])
                 for e in ctx.exp.expect] or ['alertname="none"']
    expr = " or ".join(f"max by (alertname, alertstate) (ALERTS{{{sel}}})" for sel in selectors)
    states = _series(ctx, expr, t0, end, "alertname,alertstate")
    for row, (key, pts) in enumerate(sorted(states.items())):
        color = "red" if key.endswith("firing") else "orange"
        alerts.broken_barh([(p[0] - t0, 5) for p in pts if p[1] > 0], (row - 0.4, 0.8), color=color)
    alerts.set_yticks(range(len(states)), sorted(states) or [])
    alerts.set_ylabel("alerts")
    for ax in (rps, lat, flight, reps, alerts):
        if "inject" in ctx.marks and ctx.exp.heal:  # a fault with a duration (an instant one is the red line)
            ax.axvspan(ctx.marks["inject"] - t0, ctx.marks.get("healed", end) - t0, color="red", alpha=0.08)
        for mark, at in ctx.marks.items():
            if mark in MARK_COLORS:
                ax.axvline(at - t0, color=MARK_COLORS[mark], linestyle="--", linewidth=0.8)
        ax.grid(alpha=0.3)
    for ax in (rps, lat, flight, reps):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left")
    alerts.set_xlabel("seconds since the experiment started")
    legend = ", ".join(f"{m} ({c})" for m, c in MARK_COLORS.items())
    caption = (f"{result.failed} of {result.sent} requests to {ctx.exp.load.route} failed (bound "
               f"{result.loss_bound}), {result.hung} hung past the {ctx.load.objective_s:g}s objective. "
               f"Shaded: the fault. Dashed lines: {legend}.")
    fig.tight_layout(rect=(0, 0.05, 1, 1))  # room for the caption, inside the image
    fig.text(0.01, 0.01, textwrap.fill(caption, 150), fontsize=8, va="bottom")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def markdown(ctx: Context, result: Result) -> str:
    exp = ctx.exp
    detect = ", ".join(f"{a}: {'-' if s is None else f'{s:g}s'}" for a, s in result.detect_s.items())
    detect = detect or "none expected"
    lines = [
        f"# chaos {exp.name}: {'PASSED' if result.passed else 'FAILED'}", "",
        f"{exp.title}. Hypothesis: {exp.hypothesis}", "",
        "| | |", "|---|---|",
        f"| target | {exp.target.app}/{exp.target.deployment} |",
        f"| mode | {result.mode} |",
        f"| time to detect | {detect} (bound {exp.detect_within_s:g}s) |",
        f"| time to recover | {'-' if result.recover_s is None else f'{result.recover_s:g}s'} "
        f"(bound {exp.recover_within_s:g}s) |",
        f"| requests failed / sent | {result.failed} / {result.sent} ({exp.load.route}; "
        f"bound {result.loss_bound}) |",
        f"| hung past the objective | {result.hung} (in flight over {ctx.load.objective_s:g}s) |",
        f"| runbook | {exp.runbook.name if exp.runbook else '-'} |", "",
    ]
    if result.diagnosis:
        lines += ["Diagnosis found:", *(f"- `{s}`: {f}" for s, f in result.diagnosis.items()), ""]
    if result.mitigation:
        lines += ["Mitigation:", *(f"- `{s}`: exit {c}" for s, c in result.mitigation.items()), ""]
    if result.problems:
        lines += ["Problems:", *(f"- {p}" for p in result.problems), ""]
    lines += ["Log:", "```", *result.log, "```", "", "![timeline](timeline.png)"]
    return "\n".join(lines) + "\n"


def write(ctx: Context, result: Result, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    timeline(ctx, result, out / "timeline.png")
    (out / "summary.md").write_text(markdown(ctx, result))
    (out / "result.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    return out
