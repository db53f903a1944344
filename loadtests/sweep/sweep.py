"""One family's sweep: rising rates until a step fails, then Prometheus' view of each step, the knee
and the advice."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from loadtests.sweep import driver
from loadtests.sweep.advice import Advice, recommend
from loadtests.sweep.families import Family
from loadtests.sweep.figures import Figures, step_figures
from loadtests.sweep.judge import Knee, Verdict, find_knee, judge
from loadtests.sweep.plan import Plan
from loadtests.sweep.server import Query, ServerFigures, fetch


@dataclass(frozen=True)
class Step:
    rate_per_s: float
    window: tuple[float, float]  # wall clock (unix seconds) of the measured part
    figures: Figures
    verdict: Verdict
    server: ServerFigures


@dataclass(frozen=True)
class FamilyResult:
    family: Family
    plan: Plan
    steps: tuple[Step, ...]
    knee: Knee
    advice: Advice | None  # None when no rate met the target

    @property
    def knee_step(self) -> Step | None:
        return None if self.knee.index is None else self.steps[self.knee.index]


def progress(family: Family, f: Figures, v: Verdict) -> str:
    share = "-" if f.good_share is None else f"{f.good_share:.2%}"
    return (f"sweep {family.name:<8} {f.offered_per_s:>8g}/s  served {f.throughput_per_s:g}/s  good {share}  "
            f"dropped {f.dropped}  failed {f.failed}  -> {v.line()}")


def advise(family: Family, plan: Plan, steps: tuple[Step, ...], knee: Knee) -> Advice | None:
    if knee.index is None:
        return None
    at = steps[knee.index]
    assert at.figures.mean_e2e_ms is not None  # a passing step has good, hence succeeded, requests
    return recommend(at.rate_per_s, at.server.values.get("deployment_replicas_max"), at.figures.mean_e2e_ms,
                     plan.peaks[family.name], plan.peak_sources[family.name], family.deployment,
                     knee.last_rate_reached)


async def sweep_family(base_url: str, family: Family, plan: Plan, query: Query, prom_delay_s: float = 0.0,
                       log: Callable[[str], None] = print) -> FamilyResult:
    rates = plan.rates[family.name]
    done: list[tuple[driver.StepRun, Figures, Verdict]] = []
    async with driver.client(base_url, plan) as http:
        for k, rate in enumerate(rates):
            run = await driver.run_step(http, family, rate, plan, f"{plan.seed}/{family.name}/{k}")
            figures = step_figures(run, family)
            verdict = judge(figures, family.target, plan.window_s, plan.throughput_ratio, plan.backlog_floor)
            log(progress(family, figures, verdict))
            done.append((run, figures, verdict))
            if not verdict.passed:
                break
    # Prometheus stamps a figure when it scrapes it, a scrape (and Ray's report) after it happened: each
    # step's server window is its own, that much later.
    await asyncio.sleep(prom_delay_s)
    windows = [(r.started + r.settle_s + prom_delay_s, r.started + r.step_s + prom_delay_s)
               for r, _, _ in done]
    server = await asyncio.to_thread(fetch, query, family, windows)
    steps = tuple(Step(r.rate_per_s, w, f, v, s)
                  for (r, f, v), w, s in zip(done, windows, server, strict=True))
    knee = find_knee([s.verdict for s in steps], len(rates))
    return FamilyResult(family, plan, steps, knee, advise(family, plan, steps, knee))
