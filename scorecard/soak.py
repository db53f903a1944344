"""The soak (live): `make loadtest` with each shape in turn, then what Prometheus saw during it.

Pages firing in the soak (and a grace after it, for a rule's `for`) are false pages: the load stays
within the SLOs. The grace ends once the alert pipeline has seen the end of the load and no page is
pending; a pending one is waited for, up to the longest `for` of a page. The same window gives each
replica's RSS growth; a replica over the target gets a memray capture, taken after the precision
window closes (attaching pauses the replica briefly).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from chaos.engine import RESOLVE_WAIT_S  # leftover pages get the same wait as a chaos run's alerts
from scorecard import history, measure
from scorecard.bounds import RAY_EXPORT_S
from scorecard.history import Source
from scorecard.model import Capture, Identity, LeakWatch, Precision, ShapeRun
from stack import ROOT, prom
from stack.config import OpsConfig
from stack.local import serve_deploy

SHAPES = ("step", "spike", "oscillation")
DURATION_S = {"full": 150.0, "short": 30.0}
CAPTURE_S = 10
SOAK_FILE = "soak.json"


def replica_rss(ops: OpsConfig) -> list[tuple[history.Labels, float]]:
    """Each RUNNING Serve replica's resident memory now (MB), read from its process.

    Not ray_component_rss_mb: Ray 2.60 exports it with an empty pid label, one series per deployment
    whatever its replica count, so replicas cannot be told apart there.
    """
    out = []
    apps = serve_deploy.details(ops.targets.ray_dashboard_url).get("applications") or {}
    for app, details in apps.items():
        for dep, d in (details.get("deployments") or {}).items():
            for r in d.get("replicas") or []:
                if r.get("state") != "RUNNING" or not r.get("pid"):
                    continue
                try:
                    mb = psutil.Process(int(r["pid"])).memory_info().rss / 1e6
                except (psutil.Error, ValueError):
                    continue  # gone, or on another node: not this machine's to read
                out.append(({"Component": f"ray::ServeReplica:{app}:{dep}", "pid": str(r["pid"])}, mb))
    return out


@dataclass
class Effects:
    """What the soak does outside itself; tests pass fakes."""

    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    rss: Callable[[OpsConfig], list[tuple[history.Labels, float]]] = replica_rss


def run_shape(shape: str, duration_s: float, out: Path, fx: Effects) -> ShapeRun:
    report = out / f"soak-{shape}"
    env = {**fx.env, "SHAPE": shape, "DURATION": f"{duration_s:g}", "REPORT_DIR": str(report)}
    began = fx.clock()
    print(f"scorecard: soak {shape} for {duration_s:g}s -> {report}", flush=True)
    code = fx.run([sys.executable, "-m", "loadtests.run"], cwd=ROOT, env=env).returncode
    ended = fx.clock()
    samples = report / "samples.json"
    started = began
    if samples.exists():  # locust's own start: after the warm-up, which the soak does not judge
        record = json.loads(samples.read_text())
        started, ended = float(record.get("started", began)), float(record.get("ended", ended))
    return ShapeRun(shape=shape, duration_s=duration_s, exit_code=code, report_dir=str(report),
                    started=started, ended=ended)


def pages_firing(ops: OpsConfig) -> list[str]:
    return sorted(a["labels"].get("alertname", "?") for a in prom.firing_alerts(ops)
                  if a["labels"].get("severity") == "critical")


def wait_no_pages(ops: OpsConfig, fx: Effects, timeout_s: float = RESOLVE_WAIT_S) -> list[str]:
    """A page left over from earlier work would count against the soak: wait for it to resolve."""
    deadline = fx.clock() + timeout_s
    firing = pages_firing(ops)
    if firing:
        print(f"scorecard: waiting up to {timeout_s:g}s for {firing} to resolve before the soak", flush=True)
    while firing and fx.clock() < deadline:
        fx.sleep(10)
        firing = pages_firing(ops)
    return firing


def capture(deployment: str, pid: str, out: Path, fx: Effects) -> Capture:
    """memray on a replica of the deployment (stack/tools/memprofile.py picks a RUNNING one)."""
    where = out / f"memprofile-{deployment}"
    cmd = [sys.executable, "-m", "stack.tools.memprofile", "--deployment", deployment, "--seconds",
           str(CAPTURE_S), "--out", str(where)]
    try:
        done = fx.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    except Exception as err:  # a failed capture is reported, not fatal
        return Capture(deployment=deployment, pid=pid, exit_code=None, path=None, error=str(err))
    lines = [x for x in (done.stdout or "").splitlines() if x.startswith("flamegraph ")]
    if done.returncode != 0:
        tail = ((done.stderr or "") + (done.stdout or "")).strip().splitlines()[-1:]
        return Capture(deployment=deployment, pid=pid, exit_code=done.returncode, path=None,
                       error=tail[0] if tail else f"exit {done.returncode}")
    return Capture(deployment=deployment, pid=pid, exit_code=0,
                   path=lines[-1].split(" ", 1)[1].strip() if lines else str(where))


def soak(ops: OpsConfig, source: Source, known: list[Identity], mode: str, out: Path,
         fx: Effects | None = None) -> tuple[Precision, LeakWatch]:
    fx = fx or Effects()
    wait_no_pages(ops, fx)  # one still firing at the deadline shows as a leftover page
    start = fx.clock()
    shapes = [run_shape(SHAPES[0], DURATION_S[mode], out, fx)]
    # RSS from after the first shape, which warmed every replica (caches, batches, allocator pools):
    # growth past that is what a leak looks like.
    rss_start, leak_start = read_rss(ops, fx), fx.clock()
    shapes += [run_shape(s, DURATION_S[mode], out, fx) for s in SHAPES[1:]]
    rss_end, end = read_rss(ops, fx), fx.clock()
    grace = settle(ops, source, known, end, fx)
    precision = read_precision(source, start, end, grace, shapes)
    if isinstance(rss_start, str) or isinstance(rss_end, str):
        leak = LeakWatch(target_pct=measure.LEAK_TARGET_PCT, start=leak_start, end=end, replicas=[],
                         deployments=[], over=[], captures=[], appeared=[], vanished=[],
                         error=rss_start if isinstance(rss_start, str) else str(rss_end))
    else:
        leak = measure.leak(rss_start, rss_end, leak_start, end)
    captured: dict[str, Capture] = {}
    for r in leak.over:
        if r.deployment not in captured:
            captured[r.deployment] = capture(r.deployment, r.pid, out, fx)
    return precision, leak.model_copy(update={"captures": list(captured.values())})


PENDING_PAGES = 'ALERTS{alertstate="pending",severity="critical"}'


def settle(ops: OpsConfig, source: Source, known: list[Identity], end: float, fx: Effects) -> float:
    """Seconds after the soak's end that its pages are counted over: the pipeline's lag (Ray's export,
    two scrapes and evaluations), then for as long as a page is pending, since only a pending page can
    still fire; at most measure.grace_s, the longest `for` of a page and the same lag. Prometheus not
    answering counts as pending: the grace runs its full length."""
    obs = ops.observability
    lag = RAY_EXPORT_S + 2 * (obs.scrape_interval_s + obs.evaluation_interval_s)
    most = measure.grace_s(known, obs.scrape_interval_s, obs.evaluation_interval_s) + RAY_EXPORT_S
    fx.sleep(max(0.0, end + lag - fx.clock()))
    while fx.clock() < end + most:
        try:
            pending = source.instant(PENDING_PAGES, fx.clock())
        except Exception:  # unknown: wait the full grace
            pending = [({}, 1.0)]
        if not pending:
            break
        fx.sleep(min(5.0, end + most - fx.clock()))
    return round(fx.clock() - end, 1)


def read_rss(ops: OpsConfig, fx: Effects) -> list[tuple[history.Labels, float]] | str:
    try:
        return fx.rss(ops)
    except Exception as err:  # no Serve details: the leak watch says so instead of failing the soak
        return f"{type(err).__name__}: {err}"


def read_precision(source: Source, start: float, end: float, grace: float,
                   shapes: list[ShapeRun]) -> Precision:
    clean = all(s.passed for s in shapes)
    try:
        found = measure.pages(history.alerts(source, start, end + grace, "critical"), start, end + grace)
        warnings = measure.pages(history.alerts(source, start, end + grace, "warning"), start, end + grace)
        firing = source.instant('ALERTS{alertstate="firing",severity="critical"}', start)
        before = [labels for labels, _ in firing]
    except Exception as err:  # no Prometheus: precision unmeasured, said so
        return Precision(start=start, end=end, grace_s=grace, shapes=shapes, clean=clean, false_pages=[],
                         warnings=[], leftover=[], error=str(err))
    false_pages, leftover = measure.split_leftover(found, before)
    return Precision(start=start, end=end, grace_s=grace, shapes=shapes, clean=clean, false_pages=false_pages,
                     warnings=warnings, leftover=leftover)


def save(precision: Precision, leak: LeakWatch, path: Path) -> None:
    path.write_text(json.dumps({"precision": precision.model_dump(mode="json"),
                                "leak": leak.model_dump(mode="json")}, indent=2) + "\n")


def load(path: Path) -> tuple[Precision, LeakWatch]:
    raw = json.loads(path.read_text())
    return Precision.model_validate(raw["precision"]), LeakWatch.model_validate(raw["leak"])
