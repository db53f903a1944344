"""`make loadtest SHAPE=sweep`: each family's sweep in turn, its report, and the knee's advice.

loadtests/run.py makes sure the stack is up and calls main(). Writes reports/sweep-<timestamp>/ (or
$REPORT_DIR): per family sweep.json, sweep.md, latency.png and goodput.png, and a top-level sweep.md.
Exits 1 when a family has no knee (no rate met its target), 2 when the sweep could not be made.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx

from loadtests.sweep import plots, report
from loadtests.sweep.families import Family, build
from loadtests.sweep.plan import Plan, PlanError, resolve
from loadtests.sweep.server import prometheus
from loadtests.sweep.sweep import FamilyResult, sweep_family
from stack import ROOT, targets
from stack.config import OpsConfig
from stack.polling import eventually
from stack.profile import select


def report_dir(env: Mapping[str, str] = os.environ) -> Path:
    out = Path(env.get("REPORT_DIR") or ROOT / "reports" / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    return out


def model_id(ops: OpsConfig, env: Mapping[str, str] = os.environ) -> str:
    return env.get("LLM_MODEL_ID") or ops.profile(select()).llm.models[0].model_id


def warm_up(base_url: str, family: Family) -> None:
    """One request before the sweep: a cold replica or model shows up here, not as the first rate's tail."""
    start = time.perf_counter()
    with httpx.Client(base_url=base_url, headers=targets.headers("serve"), timeout=60) as client:

        def answered() -> bool:
            try:
                return client.post(family.route, json=family.body(0)).status_code == 200
            except httpx.HTTPError:
                return False

        if not eventually(answered, timeout_s=180):
            raise SystemExit(f"warm-up: {family.route} did not answer 200 within 180 s; see `make status`")
    print(f"warm-up   {family.name:<8} {(time.perf_counter() - start) * 1000:8.1f} ms")


def write(result: FamilyResult, out: Path, cpu_warn_percent: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    names = [p.name for p in plots.draw(result, out)]
    (out / "sweep.json").write_text(json.dumps(report.to_json(result, names), indent=2) + "\n")
    (out / "sweep.md").write_text(report.markdown(result, names, cpu_warn_percent))


def describe(plan: Plan) -> str:
    rates = "; ".join(f"{f} {', '.join(f'{r:g}' for r in plan.rates[f])}/s" for f in plan.families)
    return (f"sweep {plan.mode}: {plan.step_s:g} s per rate ({plan.settle_s:g} s settle), at most "
            f"{plan.max_in_flight} in flight; {rates}")


def main(ops: OpsConfig, ensure_up: Callable[[], object]) -> int:
    """ensure_up starts the stack when it is down; called once the sweep's settings are known good."""
    try:
        plan = resolve(ops)
    except PlanError as err:
        print(f"loadtest: {err}", file=sys.stderr)
        return 2
    ensure_up()
    model, out = model_id(ops), report_dir()
    base_url, warn = ops.targets.serve_url, ops.loadtest.locust_cpu_warn_percent
    print(describe(plan))
    results: list[FamilyResult] = []
    for name in plan.families:
        family = build(ops, name, model)
        warm_up(base_url, family)
        # Two scrapes after the last step: Prometheus holds its window, and the stack cools before the next.
        result = asyncio.run(sweep_family(base_url, family, plan, prometheus(ops),
                                          prom_delay_s=2 * ops.observability.scrape_interval_s))
        write(result, out / name, warn)
        results.append(result)
        print(report.table(result))
        for line in report.warnings(result, warn):
            print(f"WARNING: {line}")
        print()
    (out / "sweep.md").write_text(report.summary(results))
    print(f"report    {out}/ (sweep.md; per family sweep.json, sweep.md, latency.png, goodput.png)")
    print("the stack is still running; stop it with `make down`")
    missing = [r.family.name for r in results if r.knee.index is None]
    if missing:
        print(f"sweep: no rate met the target for {', '.join(missing)}")
        return 1
    return 0
