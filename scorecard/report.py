"""The scorecard's report: scorecard.json (everything), scorecard.md and scorecard.png."""

from __future__ import annotations

import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from scorecard.model import Page, Precision, Scorecard
from scorecard.rules import short


def _t(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _labels(labels: dict[str, str]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}" if labels else ""


def _pages(pages: list[Page], t0: float) -> list[str]:
    return [f"- `{p.alert}{_labels(p.labels)}` ({p.severity}): firing from +{p.first - t0:.0f} s to "
            f"+{p.last - t0:.0f} s" for p in pages]


def recall_md(card: Scorecard) -> list[str]:
    r = card.recall
    lines = ["## Recall", "",
             f"Page-severity alerts fired by an experiment: **{r.covered} of {r.page_identities} "
             f"({r.percent:g}%)**" + ("; every gap has a reason." if not r.unexplained else
                                       f"; **{len(r.unexplained)} gap(s) without a reason**."), "",
             "| alert | severity | fired by | expected by, not fired | gap reason |", "|---|---|---|---|---|"]
    for c in card.coverage:
        missed = sorted(set(c.expected_by) - set(c.fired_by))
        routes = f" ({', '.join(c.routes)})" if c.routes else ""
        lines.append(f"| `{c.identity}`{routes} | {c.severity} | {', '.join(c.fired_by) or '-'} | "
                     f"{', '.join(missed) or '-'} | {c.gap_reason or ('-' if c.fired_by else 'NONE')} |")
    if r.gaps:
        lines += ["", "Gaps (pages no experiment fired):", ""]
        lines += [f"- `{g.identity}`: {g.gap_reason or '**no reason**'}" for g in r.gaps]
    return [*lines, ""]


def detection_md(card: Scorecard) -> list[str]:
    p = card.pipeline
    lines = ["## Detection", "",
             "Fault to active in Alertmanager (detect) and to Prometheus' activeAt (condition), against "
             f"the alert's bound: window term + `for` + pipeline ({p.total_s:g} s: Ray's export "
             f"{p.ray_export_s:g} + scrape {p.scrape_interval_s:g} + evaluation "
             f"{p.evaluation_interval_s:g} + group_wait {p.group_wait_s:g}).", "",
             "| alert | experiment | detect s | condition s | window s | for s | bound s | verdict "
             "| window term |", "|---|---|---|---|---|---|---|---|---|"]
    for d in card.detection:
        b = d.bound
        verdict = d.verdict if d.verdict == "within" else f"**{d.verdict}**"
        note = f" ({d.note})" if d.note else ""
        lines.append(f"| `{d.identity}` | {d.experiment} | {_s(d.detect_s)} | {_s(d.condition_s)} | "
                     f"{_s(b.window_s)} | {b.for_s:g} | {_s(b.total_s)} | {verdict} | "
                     f"{b.kind}: {b.detail}{note} |")
    return [*lines, ""]


def reset_md(card: Scorecard) -> list[str]:
    lines = ["## Reset", "", "Recovery (the experiment's `recovered` mark, else `healed`) to the alert no "
             "longer firing.", "", "| alert | experiment | reset s | from |", "|---|---|---|---|"]
    for r in card.reset:
        value = f"still firing at {_t(r.still_firing_at)}" if r.still_firing_at is not None else _s(r.reset_s)
        lines.append(f"| `{r.identity}` | {r.experiment} | {value} | {r.source}"
                     f"{': ' + r.detail if r.detail else ''} |")
    return [*lines, ""]


def precision_md(p: Precision | None) -> list[str]:
    lines = ["## Precision", ""]
    if p is None:
        return [*lines, "Not measured: no soak ran.", ""]
    lines += [f"A soak of {p.end - p.start:.0f} s ({_t(p.start)} to {_t(p.end)}), pages counted until "
              f"{p.grace_s:g} s after it. Soak {'clean' if p.clean else '**not clean**'}.", "",
              "| shape | duration s | SLO gate | report |", "|---|---|---|---|"]
    for s in p.shapes:
        gate = "PASS" if s.passed else f"**FAIL** (exit {s.exit_code})"
        lines.append(f"| {s.shape} | {s.duration_s:g} | {gate} | {s.report_dir} |")
    lines += ["", f"False pages: **{len(p.false_pages)}**" + ("." if not p.false_pages else ":")]
    lines += ["", *_pages(p.false_pages, p.start)] if p.false_pages else []
    lines += ["", f"Warnings seen: {len(p.warnings)}" + ("." if not p.warnings else ":")]
    lines += ["", *_pages(p.warnings, p.start)] if p.warnings else []
    if p.leftover:
        lines += ["", "Pages already firing when the soak began (not counted as false):", ""]
        lines += _pages(p.leftover, p.start)
    if p.error:
        lines += ["", f"Prometheus: {p.error}"]
    return [*lines, ""]


def leak_md(card: Scorecard) -> list[str]:
    leak = card.leak
    lines = ["## Leak watch", ""]
    if leak is None:
        return [*lines, "Not measured: no soak ran.", ""]
    if leak.error:
        return [*lines, f"Not measured: {leak.error}", ""]
    lines += ["Each RUNNING Serve replica's RSS, read from its process, from after the soak's first shape "
              f"(every replica warm) to its end; target under {leak.target_pct:g}%.", "",
              "| deployment | replicas | start MB | end MB | growth |", "|---|---|---|---|---|"]
    lines += [f"| {d.application}/{d.deployment} | {d.replicas} | {d.start_mb:g} | {d.end_mb:g} | "
              f"{d.growth_pct:+.2f}% |" for d in leak.deployments]
    captures = {c.pid: c for c in leak.captures}
    over = f"Replicas at or over {leak.target_pct:g}%"
    lines += ["", f"{over}: none."] if not leak.over else ["", f"{over}, each with its memray capture:", ""]
    for r in leak.over:
        c = captures.get(r.pid)
        where = ("no memray capture" if c is None else c.path if c.path
                 else f"memray capture failed: {c.error}")
        lines.append(f"- {r.application}/{r.deployment} pid {r.pid}: {r.start_mb:g} -> {r.end_mb:g} MB "
                     f"({r.growth_pct:+.2f}%); {where}")
    if leak.appeared or leak.vanished:
        lines += ["", f"Replicas started during the soak: {', '.join(leak.appeared) or 'none'}; "
                      f"gone by its end: {', '.join(leak.vanished) or 'none'}."]
    return [*lines, ""]


def loss_md(card: Scorecard) -> list[str]:
    lines = ["## Loss", "", "Requests failed of those sent on each experiment's load route, against its "
             "bound.", "", "| experiment | verdict | failed / sent | hung | bound | recover s |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {x.experiment} | {'PASSED' if x.passed else '**FAILED**'} | {x.failed} / {x.sent} | "
              f"{x.hung} | {x.loss_bound or '-'} | {_s(x.recover_s)} |" for x in card.loss]
    h = card.half_alive
    lines += ["", "The half-alive replica, the watchdog on (half-alive) against off (half-alive-unwatched): "
              + h.note + "."]
    if h.watched and h.unwatched:
        lines += ["", "| watchdog | failed / sent | hung | recover s |", "|---|---|---|---|"]
        for name, x in (("on", h.watched), ("off", h.unwatched)):
            lines.append(f"| {name} | {x.failed} / {x.sent} | {x.hung} | {_s(x.recover_s)} |")
    problems = [(x.experiment, p) for x in card.loss for p in x.problems]
    if problems:
        lines += ["", "Experiment problems:", *(f"- {e}: {p}" for e, p in problems)]
    return [*lines, ""]


def markdown(card: Scorecard) -> str:
    ran = {x.experiment for x in card.experiments}
    head = [f"# Alert scorecard: {'PASSED' if card.exit_code == 0 else 'FAILED'}", "",
            f"{card.mode} run, {_t(card.started)} to {_t(card.ended)}; chaos: {card.chaos_source} "
            f"({len(ran)} experiments).", ""]
    if card.failures:
        head += ["Failures (exit 1):", *(f"- {f}" for f in card.failures), ""]
    body = [*recall_md(card), *detection_md(card), *reset_md(card), *precision_md(card.precision),
            *leak_md(card), *loss_md(card), "![detection and reset](scorecard.png)"]
    return "\n".join([*head, *body]) + "\n"


def plot(card: Scorecard, path: Path) -> Path:
    fired = [d for d in card.detection if d.detect_s is not None]
    resets = [r for r in card.reset if r.reset_s is not None or r.still_firing_at is not None]
    fig, (det, res) = plt.subplots(2, 1, figsize=(11, 3 + 0.35 * (len(fired) + len(resets))))
    names = [f"{short(d.identity)} ({d.experiment})" for d in fired]
    ys = range(len(fired))
    det.barh(ys, [d.detect_s or 0 for d in fired], color=["red" if d.verdict == "over" else "tab:blue"
                                                          for d in fired], label="detect")
    det.barh(ys, [d.condition_s or 0 for d in fired], color="tab:cyan", height=0.4, label="condition")
    bounds = [(y, d.bound.total_s) for y, d in zip(ys, fired, strict=True) if d.bound.total_s is not None]
    det.scatter([b for _, b in bounds], [y for y, _ in bounds], marker="|", s=400, color="black",
                label="bound")
    det.set_yticks(list(ys), names, fontsize=7)
    det.set_xlabel("seconds from the fault")
    det.set_title("detection against each alert's bound")
    det.legend(fontsize=7, loc="lower right")
    ry = range(len(resets))
    res.barh(ry, [r.reset_s if r.reset_s is not None else 0 for r in resets],
             color=["orange" if r.still_firing_at is not None else "tab:green" for r in resets])
    res.set_yticks(list(ry), [f"{short(r.identity)} ({r.experiment})" for r in resets], fontsize=7)
    res.set_xlabel("seconds from recovery to resolved (orange: still firing)")
    res.set_title("reset")
    for ax in (det, res):
        ax.grid(alpha=0.3, axis="x")
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write(card: Scorecard, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "scorecard.json").write_text(json.dumps(card.model_dump(mode="json"), indent=2) + "\n")
    (out / "scorecard.md").write_text(markdown(card))
    plot(card, out / "scorecard.png")
    return out
