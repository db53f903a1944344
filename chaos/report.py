"""An experiment's report: summary.md, result.json and timeline.png under reports/chaos-<name>-<ts>/."""

from __future__ import annotations

import json
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


def timeline(ctx: Context, result: Result, path: Path) -> Path:
    t0, end = ctx.started, max(ctx.marks.values(), default=ctx.started) + 10
    outcomes = ctx.load.outcomes
    buckets: dict[float, list] = {}
    for o in outcomes:
        buckets.setdefault((o.start - t0) // WINDOW_S * WINDOW_S, []).append(o)
    xs = sorted(buckets)
    fig, (rps, lat, reps, alerts) = plt.subplots(4, 1, figsize=(11, 11), sharex=True)
    fig.suptitle(f"chaos {result.experiment}: {ctx.exp.title}")
    rps.plot(xs, [sum(o.ok for o in buckets[x]) / WINDOW_S for x in xs], label="ok/s")
    rps.plot(xs, [sum(not o.ok for o in buckets[x]) / WINDOW_S for x in xs], color="red", label="failed/s")
    rps.set_ylabel("requests/s")
    lat.plot(xs, [percentile([o.seconds * 1000 for o in buckets[x]], 50) for x in xs], label="p50")
    lat.plot(xs, [max(o.seconds * 1000 for o in buckets[x]) for x in xs], label="max")
    lat.set_ylabel("latency ms")
    lat.set_yscale("log")
    t = ctx.exp.target
    sel = f'application="{t.app}",deployment="{t.deployment}"'
    for name, expr, style in (("healthy", f"sum(ray_serve_deployment_replica_healthy{{{sel}}})", "-"),
                              ("target", f"max(ray_serve_autoscaling_target_replicas{{{sel}}})", "--")):
        for _, pts in _series(ctx, expr, t0, end, "none").items():
            reps.step([p[0] - t0 for p in pts], [p[1] for p in pts], style, where="post", label=name)
    reps.set_ylabel(f"{t.deployment} replicas")
    names = "|".join(e.alert for e in ctx.exp.expect) or "none"
    states = _series(ctx, f'max by (alertname, alertstate) (ALERTS{{alertname=~"{names}"}})', t0, end,
                     "alertname,alertstate")
    for row, (key, pts) in enumerate(sorted(states.items())):
        color = "red" if key.endswith("firing") else "orange"
        alerts.broken_barh([(p[0] - t0, 5) for p in pts if p[1] > 0], (row - 0.4, 0.8), color=color)
    alerts.set_yticks(range(len(states)), sorted(states) or [])
    alerts.set_ylabel("alerts")
    for ax in (rps, lat, reps, alerts):
        if "inject" in ctx.marks and ctx.exp.heal:  # a fault with a duration (an instant one is the red line)
            ax.axvspan(ctx.marks["inject"] - t0, ctx.marks.get("healed", end) - t0, color="red", alpha=0.08)
        for mark, at in ctx.marks.items():
            if mark in MARK_COLORS:
                ax.axvline(at - t0, color=MARK_COLORS[mark], linestyle="--", linewidth=0.8)
        ax.grid(alpha=0.3)
    for ax in (rps, lat, reps):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left")
    legend = ", ".join(f"{m} ({c})" for m, c in MARK_COLORS.items())
    alerts.set_xlabel(f"seconds; shaded: fault; dashed: {legend}")
    fig.tight_layout()
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
        f"| requests failed / sent | {result.failed} / {result.sent} ({exp.load.route}) |",
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
