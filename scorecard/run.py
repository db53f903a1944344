"""`make scorecard`: how far to trust each alert, measured on the live stack.

  python -m scorecard.run [--short] [--reuse DIR] [--soak-from FILE] [--out DIR]
  python -m scorecard.run [--short] --soak-only [--out DIR]
  python -m scorecard.run --publish reports/scorecard-<ts>

1. A soak: `make loadtest` with the step, spike and oscillation shapes (SCORECARD=short or --short:
   30 s each, else about 150 s); the pages it raised are false pages; each replica's RSS growth.
2. Every chaos experiment (short timings with --short), or with --reuse DIR the chaos-*/result.json
   already under DIR (the latest per experiment).
3. Per alert: recall (which experiments fired it; every page none fired is a gap, with its reason),
   detection against its bound, reset; the loss of each experiment.
--soak-only runs the soak alone and writes soak.json; --soak-from reads one instead of soaking (the
live tests soak on the clean stack first and score after the chaos tests). Writes
reports/scorecard-<ts>/scorecard.json, scorecard.md and scorecard.png. Exits 1 when a page has
no bound, a detection is past its bound, a false page fired (or the soak was not clean), or a page
gap has no reason. --publish writes a report's figures to runbooks/scorecard.json and regenerates
each runbook's scorecard line.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from alerts.generate import groups
from chaos import experiment
from chaos import run as chaos_run
from loadtests.stack_client import ensure_up
from runbooks import scorecard_line
from scorecard import bounds, history, measure, publish, report, rules, soak
from scorecard.inputs import LiveBounds
from scorecard.model import ChaosRun, Identity, LeakWatch, Pipeline, Precision, Scorecard
from stack import ROOT, targets
from stack.config import OpsConfig, load
from stack.local.monitoring import alertmanager_config
from stack.profile import select


def pipeline(ops: OpsConfig) -> Pipeline:
    obs = ops.observability
    return bounds.pipeline(obs.scrape_interval_s, obs.evaluation_interval_s,
                           alertmanager_config(ops)["route"]["group_wait"])


def reuse(directory: Path) -> list[ChaosRun]:
    """The latest chaos-<name>-<ts>/result.json per experiment under `directory`."""
    latest: dict[str, ChaosRun] = {}
    for path in sorted(directory.glob("chaos-*/result.json")):  # <ts> sorts in time order
        run = ChaosRun.model_validate_json(path.read_text()).model_copy(update={"report": str(path.parent)})
        latest[run.experiment] = run
    return [latest[n] for n in experiment.in_run_order() if n in latest] + \
        [r for n, r in latest.items() if n not in experiment.in_run_order()]


def run_all(short: bool, reports: Path) -> list[ChaosRun]:
    out = []
    for name in experiment.in_run_order():
        try:
            result = dataclasses.asdict(chaos_run.one(name, short, reports))
            found = sorted(reports.glob(f"chaos-{name}-*/result.json"))
            where = str(found[-1].parent) if found else None
            out.append(ChaosRun.model_validate({**result, "report": where}))
        except (Exception, SystemExit) as err:  # a failed experiment is reported, not fatal
            out.append(ChaosRun(experiment=name, error=f"{type(err).__name__}: {err}"))
    return out


def assemble(ops: OpsConfig, known: list[Identity], runs: list[ChaosRun], bound_for: measure.BoundFor,
             history_for: measure.History | None, pipe: Pipeline, mode: str, started: float, ended: float,
             chaos_source: str, precision: Precision | None, leak: LeakWatch | None) -> Scorecard:
    """Everything but the live reads: the figures, then the verdict."""
    rows = measure.detections(runs, known, bound_for)
    covered = measure.coverage(known, rows)
    losses = measure.loss(runs)
    card = Scorecard(
        mode=mode, started=started, ended=ended, chaos_source=chaos_source, pipeline=pipe, experiments=runs,
        coverage=covered, recall=measure.recall(known, covered), detection=rows,
        reset=measure.resets(rows, {r.experiment: r for r in runs}, {i.key: i for i in known}, history_for,
                             ops.observability.scrape_interval_s, ended),
        precision=precision, leak=leak, loss=losses, half_alive=measure.half_alive(losses), failures=[],
        exit_code=0)
    failed = measure.failures(card, known)
    return card.model_copy(update={"failures": failed, "exit_code": 1 if failed else 0})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", default=os.environ.get("SCORECARD") == "short",
                        help="the short version (SCORECARD=short): 30 s soak shapes, short chaos timings")
    parser.add_argument("--reuse", type=Path, metavar="DIR",
                        help="read chaos-*/result.json under DIR instead of running chaos")
    parser.add_argument("--out", type=Path, help="report directory (default reports/scorecard-<ts>)")
    parser.add_argument("--soak-only", action="store_true", help="run the soak alone; write soak.json")
    parser.add_argument("--soak-from", type=Path, metavar="FILE", help="a soak.json instead of soaking")
    parser.add_argument("--publish", type=Path, metavar="REPORT_DIR",
                        help="write REPORT_DIR/scorecard.json's figures to runbooks/scorecard.json")
    args = parser.parse_args(argv)
    if args.publish:
        published = publish.publish(args.publish)
        print(f"scorecard: {len(published.alerts)} alerts published to "
              f"{scorecard_line.FIGURES.relative_to(ROOT)}")
        return scorecard_line.main([])
    ops, mode = load(), "short" if args.short else "full"
    away = targets.remote(ops)
    if away and not (args.soak_only or args.reuse or args.soak_from):
        # Chaos acts only on the local stack (chaos/safety.py); here it would judge another cluster.
        print(f"scorecard: the targets point at {', '.join(away.values())}; only the read-only parts run "
              "there: SOAK_ONLY=1 (--soak-only), or REUSE=<dir> (--reuse) with the results of experiments "
              "run on that cluster", file=sys.stderr)
        return 2
    out = args.out or ROOT / "reports" / f"scorecard-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    known = rules.identities(groups(ops))
    if not args.soak_from:
        ensure_up(ops)  # like `make loadtest`: a fresh clone's first run starts the stack
    source = history.LiveSource(ops)
    pipe = pipeline(ops)
    started = time.time()
    if args.soak_from:
        precision, leak = soak.load(args.soak_from)
    else:
        precision, leak = soak.soak(ops, source, known, mode, out)
        soak.save(precision, leak, out / soak.SOAK_FILE)
    if args.soak_only:
        print(f"\nscorecard soak: {'clean' if precision.clean else 'NOT clean (an SLO gate failed)'}, "
              f"{len(precision.false_pages)} false pages, {len(leak.over)} replicas over "
              f"{leak.target_pct:g}% RSS growth; {out / soak.SOAK_FILE}")
        voided = not precision.clean and mode != "short"  # as measure.failures judges it
        return 0 if not (voided or precision.false_pages or precision.error) else 1
    runs = reuse(args.reuse) if args.reuse else run_all(args.short, out / "chaos")
    step = float(ops.observability.scrape_interval_s)

    def alert_history(labels: history.Labels, since: float) -> history.Points:
        return history.alert_points(source, labels, since - step, time.time())

    bound_for = LiveBounds(ops, source, pipe, ops.profiles.get(select()))
    card = assemble(ops, known, runs, bound_for, alert_history, pipe, mode, started, time.time(),
                    f"reuse {args.reuse}" if args.reuse else "run", precision, leak)
    report.write(card, out)
    r = card.recall
    print(f"\nscorecard: recall {r.covered}/{r.page_identities} pages ({r.percent:g}%), "
          f"{sum(d.verdict == 'over' for d in card.detection)} detections past their bound, "
          f"{len(precision.false_pages)} false pages; report {out}/scorecard.md")
    for failure in card.failures:
        print(f"  FAIL {failure}")
    return card.exit_code


if __name__ == "__main__":
    sys.exit(main())
