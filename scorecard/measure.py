"""The scorecard's figures from chaos results, rules and Prometheus series: pure functions.

Recall and detection come from the chaos results; reset from a result or from ALERTS history;
precision and the leak watch from the soak's series. Nothing here reaches the stack: the caller
passes what it read (scorecard/history.py) or fakes.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable

from scorecard import gaps
from scorecard.bounds import WINDOW_TERMS
from scorecard.history import Labels, Points
from scorecard.model import (
    Bound,
    ChaosRun,
    Coverage,
    DeploymentRss,
    Detection,
    HalfAlive,
    Identity,
    LeakWatch,
    Loss,
    Page,
    Recall,
    ReplicaRss,
    Reset,
    Scorecard,
    Verdict,
)
from scorecard.rules import attribute, expectations

LEAK_TARGET_PCT = 5.0  # the target: a replica's RSS grows under 5% over the soak
HALF_ALIVE = ("half-alive", "half-alive-unwatched")  # the watchdog on, and off
History = Callable[[Labels, float], Points]  # (alert labels, since) -> firing samples
BoundFor = Callable[[Identity, ChaosRun, Labels, float | None], Bound]  # ..., detect_s
_REPLICA = re.compile(r"ServeReplica:(?P<app>[^:]+):(?P<dep>[^.\s]+)")


def verdict(detect_s: float | None, bound: Bound) -> Verdict:
    if detect_s is None:
        return "not fired"
    if bound.total_s is None:
        return "no bound"
    return "within" if detect_s <= bound.total_s else "over"


def detections(runs: Iterable[ChaosRun], known: list[Identity], bound_for: BoundFor) -> list[Detection]:
    """One row per (identity, experiment) an experiment expected, fired or not."""
    rows = []
    for run in runs:
        for key, alert, labels in expectations(run):
            chosen, note = attribute(alert, labels, known)
            if not chosen:
                note = f"no rule {alert} with labels {labels}"
            if not run.passed:  # a detection in a failed run may rest on what the failure explains
                note = "; ".join(x for x in (note, f"{run.experiment} FAILED: "
                                             f"{(run.problems or [run.error or '?'])[0]}") if x)
            for identity in chosen:
                detect = run.detect_s.get(key)
                b = bound_for(identity, run, labels, detect)
                rows.append(Detection(identity=identity.key, alert=identity.alert, severity=identity.severity,
                                      experiment=run.experiment, expected=key, detect_s=detect,
                                      condition_s=run.condition_s.get(key), bound=b,
                                      verdict=verdict(detect, b), note=note))
    return rows


def coverage(known: list[Identity], rows: list[Detection]) -> list[Coverage]:
    out = []
    for identity in known:
        mine = [r for r in rows if r.identity == identity.key]
        fired = sorted({r.experiment for r in mine if r.detect_s is not None})
        out.append(Coverage(identity=identity.key, alert=identity.alert, severity=identity.severity,
                            routes=identity.routes, fired_by=fired,
                            expected_by=sorted({r.experiment for r in mine}),
                            gap_reason=None if fired else gaps.reason_for(identity)))
    return out


def recall(known: list[Identity], covered: list[Coverage]) -> Recall:
    pages = {i.key for i in known if i.page}
    page_rows = [c for c in covered if c.identity in pages]
    gap_rows = [c for c in page_rows if not c.fired_by]
    n = len(page_rows)
    return Recall(page_identities=n, covered=n - len(gap_rows),
                  percent=round(100 * (n - len(gap_rows)) / n, 1) if n else 100.0, gaps=gap_rows,
                  unexplained=[c.identity for c in gap_rows if not c.gap_reason])


def reset_from_points(points: Points, recovered: float, step_s: float,
                      end: float) -> tuple[float | None, float | None]:
    """(reset_s, still_firing_at) from one alert's firing samples (query_range of max(ALERTS{...}) from
    recovery to `end`). Reset: the end of the firing run that recovery falls in (to within a step);
    0 if none was firing at recovery. still_firing_at: the run lasts until the end of the range."""
    after = sorted((t, v) for t, v in points if t >= recovered - step_s)
    if not after or after[0][1] <= 0 or after[0][0] > recovered + 1.5 * step_s:
        return 0.0, None
    last = after[0][0]
    for t, v in after[1:]:
        if v <= 0 or t - last > 1.5 * step_s:
            return round(max(last - recovered, 0.0), 1), None
        last = t
    return (None, last) if last >= end - 1.5 * step_s else (round(max(last - recovered, 0.0), 1), None)


def resets(rows: list[Detection], runs: dict[str, ChaosRun], known: dict[str, Identity],
           history: History | None, step_s: float, until: float) -> list[Reset]:
    """Per fired (identity, experiment): the experiment's own reset_s where it measured one, else
    Prometheus' ALERTS history from recovery to `until` (history(labels, since) -> points). A reset
    that outlasts the next experiment's fault says so: that fault may have kept the alert firing."""
    out = []
    for row in (r for r in rows if r.detect_s is not None):
        run, identity = runs[row.experiment], known[row.identity]
        measured = run.reset_s.get(row.expected)
        if measured is not None:
            out.append(Reset(identity=row.identity, experiment=row.experiment, reset_s=measured,
                             source="experiment"))
            continue
        recovered = run.recovered_at
        if recovered is None or history is None:
            why = "no recovery mark" if recovered is None else "no Prometheus history"
            out.append(Reset(identity=row.identity, experiment=row.experiment, reset_s=None,
                             source="unknown", detail=why))
            continue
        expected = next((labels for key, _, labels in expectations(run) if key == row.expected), {})
        labels = {"alertname": identity.alert, "severity": identity.severity, **identity.labels, **expected}
        horizon, after = next_start(run, runs.values(), recovered, until)
        try:
            reset, still = reset_from_points(history(labels, recovered), recovered, step_s, until)
        except Exception as err:  # Prometheus gone: the row says so, the scorecard goes on
            out.append(Reset(identity=row.identity, experiment=row.experiment, reset_s=None,
                             source="unknown", detail=f"Prometheus: {err}"))
            continue
        ended = until if reset is None else recovered + reset
        detail = f"outlasted the start of {after}, whose fault may have kept it firing" if (
            after and ended > horizon + 1.5 * step_s) else ""
        out.append(Reset(identity=row.identity, experiment=row.experiment, reset_s=reset, source="prometheus",
                         still_firing_at=still, detail=detail))
    return out


def next_start(run: ChaosRun, runs: Iterable[ChaosRun], after: float, until: float) -> tuple[float, str]:
    """When the first experiment after `after` (other than `run`) began, and which; else `until`."""
    starts = [(min(r.marks.values()), r.experiment) for r in runs
              if r is not run and r.marks and min(r.marks.values()) > after]
    return min(starts, default=(until, ""))


def pages(series: list[tuple[Labels, Points]], start: float, end: float) -> list[Page]:
    """Each alert instance (label set) firing at any sample in [start, end]."""
    out = []
    for labels, points in series:
        firing = [t for t, v in points if v > 0 and start <= t <= end]
        if firing:
            named = {k: v for k, v in labels.items() if k not in ("__name__", "alertstate")}
            out.append(Page(alert=named.pop("alertname", "?"), severity=named.pop("severity", "?"),
                            labels=named, first=min(firing), last=max(firing)))
    return sorted(out, key=lambda p: (p.first, p.alert))


def split_leftover(found: list[Page], firing_at_start: list[Labels]) -> tuple[list[Page], list[Page]]:
    """(false pages, leftovers): a page already firing when the soak began is not the soak's."""
    def key(alert: str, labels: Labels) -> frozenset[tuple[str, str]]:
        return frozenset({**labels, "alertname": alert}.items())

    dropped = ("__name__", "alertstate", "alertname", "severity")
    before = {key(lab.get("alertname", "?"), {k: v for k, v in lab.items() if k not in dropped})
              for lab in firing_at_start}
    leftover = [p for p in found if key(p.alert, p.labels) in before]
    return [p for p in found if p not in leftover], leftover


def grace_s(known: list[Identity], scrape_s: float, eval_s: float) -> float:
    """How long after the soak a page it caused may still start: the longest `for` of a page (up to
    5m; the slow burn pairs' 15m and more are not a soak's) and two scrapes and evaluations."""
    fors = [i.for_s for i in known if i.page and i.for_s <= 300]
    return max(fors, default=0.0) + 2 * (scrape_s + eval_s)


def _replicas(samples: list[tuple[Labels, float]]) -> dict[str, tuple[str, str, str, float]]:
    """pid -> (app, deployment, component, MB). A replica's process title (Component) changes with
    the method it runs; its pid does not."""
    out: dict[str, tuple[str, str, str, float]] = {}
    for labels, value in samples:
        pid, component = labels.get("pid", "?"), labels.get("Component", "?")
        m = _REPLICA.search(component)
        app, dep = (m.group("app"), m.group("dep")) if m else ("?", component)
        if pid not in out or value > out[pid][3]:
            out[pid] = (app, dep, f"ray::ServeReplica:{app}:{dep}" if m else component, value)
    return out


def growth_pct(start: float, end: float) -> float:
    return round(100 * (end - start) / start, 2) if start > 0 else 0.0


def leak(start_samples: list[tuple[Labels, float]], end_samples: list[tuple[Labels, float]], start: float,
         end: float, target_pct: float = LEAK_TARGET_PCT) -> LeakWatch:
    """Per replica alive at both ends and per deployment: RSS growth over the soak."""
    first, last = _replicas(start_samples), _replicas(end_samples)
    both = sorted(set(first) & set(last), key=lambda p: (first[p][:2], p))
    replicas = [ReplicaRss(application=first[p][0], deployment=first[p][1], pid=p, component=first[p][2],
                           start_mb=round(first[p][3], 1), end_mb=round(last[p][3], 1),
                           growth_pct=growth_pct(first[p][3], last[p][3])) for p in both]
    by_dep: dict[tuple[str, str], list[ReplicaRss]] = defaultdict(list)
    for r in replicas:
        by_dep[(r.application, r.deployment)].append(r)
    deployments = []
    for (app, dep), rs in sorted(by_dep.items()):
        before, after = sum(r.start_mb for r in rs), sum(r.end_mb for r in rs)
        deployments.append(DeploymentRss(application=app, deployment=dep, replicas=len(rs),
                                         start_mb=round(before, 1), end_mb=round(after, 1),
                                         growth_pct=growth_pct(before, after)))

    def name(table: dict[str, tuple[str, str, str, float]], pid: str) -> str:
        return f"{table[pid][0]}/{table[pid][1]} pid {pid}"

    return LeakWatch(target_pct=target_pct, start=start, end=end, replicas=replicas, deployments=deployments,
                     over=[r for r in replicas if r.growth_pct >= target_pct], captures=[],
                     appeared=[name(last, p) for p in sorted(set(last) - set(first))],
                     vanished=[name(first, p) for p in sorted(set(first) - set(last))])


def loss(runs: Iterable[ChaosRun]) -> list[Loss]:
    return [Loss(experiment=r.experiment, passed=r.passed, sent=r.sent, failed=r.failed, hung=r.hung,
                 loss_bound=r.loss_bound, recover_s=r.recover_s, problems=[*r.problems, *([r.error] if r.error
                                                                                         else [])])
            for r in runs]


def half_alive(losses: list[Loss]) -> HalfAlive:
    by = {x.experiment: x for x in losses}
    on, off = by.get(HALF_ALIVE[0]), by.get(HALF_ALIVE[1])
    if on is None or off is None:
        missing = [n for n in HALF_ALIVE if n not in by]
        return HalfAlive(watched=on, unwatched=off, note=f"not compared: {', '.join(missing)} did not run")

    def share(x: Loss) -> str:
        return f"{x.failed}/{x.sent} failed, {x.hung} hung"

    return HalfAlive(watched=on, unwatched=off,
                     note=f"watchdog on: {share(on)}; off: {share(off)}; the watchdog saved "
                          f"{off.failed - on.failed} failed requests")


def failures(card: Scorecard, known: list[Identity]) -> list[str]:
    """Why `make scorecard` exits 1: each one a sentence."""
    out = []
    for identity in known:
        if identity.page and identity.alert not in WINDOW_TERMS:
            out.append(f"page {identity.key} has no bound (scorecard/bounds.py)")
    for row in card.detection:
        if row.verdict == "over":
            out.append(f"{row.identity} in {row.experiment}: detected after {row.detect_s:g} s, "
                       f"past its bound of {row.bound.total_s:g} s")
        elif row.verdict == "no bound" and row.severity == "critical":
            out.append(f"page {row.identity} in {row.experiment} has no bound: {row.bound.detail}")
    out += [f"experiment {r.experiment} failed: {(r.problems or [r.error or '?'])[0]}"
            for r in card.experiments if not r.passed]
    p = card.precision
    if p is None:
        out.append("precision not measured: no soak")
    else:
        out += [f"false page: {x.alert}{{{', '.join(f'{k}={v}' for k, v in sorted(x.labels.items()))}}} "
                f"during the soak" for x in p.false_pages]
        # A short soak's gates hold a few dozen requests per route: one slow answer breaks a 99%
        # objective, so only the full soak's gates can void its precision.
        if not p.clean and card.mode != "short":
            failed = [s.shape for s in p.shapes if not s.passed]
            out.append(f"the soak was not clean (SLO gate failed: {', '.join(failed)}): precision unmeasured")
        if p.leftover:
            out.append(f"pages firing before the soak began: {', '.join(x.alert for x in p.leftover)}")
        if p.error:
            out.append(f"precision: {p.error}")
    out += [f"page {gap} fired by no experiment, and no reason in scorecard/gaps.py"
            for gap in card.recall.unexplained]
    return out

