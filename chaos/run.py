"""`make chaos` (every experiment, short timings) and `make chaos-<name>` (one, normal timings).

  python -m chaos.run [--short] NAME|all
Each run writes reports/chaos-<name>-<ts>/ and prints the time to detect and to recover.
Exits 1 when an experiment fails its verdict.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from chaos import engine, experiment, report, safety
from stack import ROOT
from stack.config import load
from stack.local import second_node


def one(name: str, short: bool, reports: Path) -> engine.Result:
    ops = load()
    safety.check(ops)
    exp = experiment.load(name).for_cluster(second_node.exists())
    result, ctx = engine.run(exp, ops, "short" if short else "normal")
    out = report.write(ctx, result, reports / f"chaos-{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    detect = ", ".join(f"{a} {'never' if s is None else f'{s:g}s'}" for a, s in result.detect_s.items())
    recover = "never" if result.recover_s is None else f"{result.recover_s:g}s"
    print(f"\n{name}: {'PASSED' if result.passed else 'FAILED'} | detected: {detect or 'n/a'} | "
          f"recovered: {recover} | requests failed {result.failed} of {result.sent} "
          f"(bound {result.loss_bound}), {result.hung} hung | report {out}")
    for problem in result.problems:
        print(f"  problem: {problem}")
    return result


def table(results: list[engine.Result]) -> str:
    """The closing table of `make chaos`: one row per experiment, each figure against its bound."""
    rows = ["| experiment | alert | detect s | recover s | failed / sent | hung past objective | bound "
            "| verdict |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        alerts = ", ".join(a.split("{")[0] for a in r.detect_s) or "none"
        detect = ", ".join("-" if s is None else f"{s:g}" for s in r.detect_s.values()) or "-"
        recover = "-" if r.recover_s is None else f"{r.recover_s:g}"
        rows.append(f"| {r.experiment} | {alerts} | {detect} | {recover} | {r.failed} / {r.sent} | {r.hung} "
                    f"| {r.loss_bound} | {'PASSED' if r.passed else 'FAILED'} |")
    return "\n" + "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", help=f"one of {', '.join(experiment.names())}, or all")
    parser.add_argument("--short", action="store_true", help="short timings (make chaos, tests)")
    args = parser.parse_args(argv)
    reports = Path(os.environ.get("REPORT_DIR") or ROOT / "reports")
    names = experiment.in_run_order() if args.name == "all" else [args.name]
    results = [one(n, args.short, reports) for n in names]
    if len(results) > 1:
        print(table(results))
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
