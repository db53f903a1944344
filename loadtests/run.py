"""`make loadtest`: locust against every route, a report, and the SLO gate.

Starts the stack when it is not up (and leaves it running), warms each route once, runs
loadtests/locustfile.py headless (WORKERS=N: a master and N workers, loadtests/distributed.py), then
writes reports/<timestamp>/: locust's HTML and CSV, summary.json, summary.txt and PNG plots. Exits 1
when an objective of the ops config is broken, 2 when the run itself could not be made.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import httpx

from loadtests import distributed, gate, plots
from loadtests.settings import Settings, SettingsError, resolve
from loadtests.stack_client import ensure_up
from loadtests.summary import Run, summarize, table
from loadtests.sweep import run as sweep
from stack import ROOT, prom, targets
from stack.config import OpsConfig, load
from stack.polling import eventually
from stack.serving.models.tenants import N_FEATURES, TENANTS

LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
# One valid request per task, sent before the run so a replica scaled to zero or a model not yet
# loaded shows up as warm-up time, not as the SLO's tail.
WARMUP = {
    "chat": ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
    "completions": ("/v1/completions", {"prompt": "hi", "max_tokens": 2}),
    "embed": ("/embed", {"text": "warm up"}),
    "embed_batch": ("/embed", {"text": ["warm", "up"]}),
    "classify": ("/classify", {"text": "warm up"}),
    "predict": ("/predict", {"features": [0.0] * N_FEATURES}),
}


def report_dir() -> Path:
    out = Path(os.environ.get("REPORT_DIR") or ROOT / "reports" / time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    return out


def warm_up(ops: OpsConfig, settings: Settings, model: str) -> None:
    with httpx.Client(base_url=ops.targets.serve_url, headers=targets.headers("serve"), timeout=60) as client:
        for task in settings.enabled_tasks:
            path, body = WARMUP[task]
            body = {"model": model, **body} if path.startswith("/v1/") else body
            headers = {"serve_multiplexed_model_id": next(iter(TENANTS))} if task == "predict" else {}
            start = time.perf_counter()

            def answered(path: str = path, body: dict = body, headers: dict = headers) -> bool:
                try:
                    return client.post(path, json=body, headers=headers).status_code == 200
                except httpx.HTTPError:
                    return False

            if not eventually(answered, timeout_s=180):
                raise SystemExit(f"warm-up: {path} did not answer 200 within 180 s; see `make status`")
            print(f"warm-up   {task:<12} {(time.perf_counter() - start) * 1000:8.1f} ms")


def run_locust(ops: OpsConfig, settings: Settings, model: str, out: Path) -> int:
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
           "--host", ops.targets.serve_url, "--csv", str(out / "locust"), "--csv-full-history",
           "--html", str(out / "locust.html")]
    env = {**os.environ, "LOADTEST_OUT": str(out), "LLM_MODEL_ID": model}
    if settings.workers:
        return distributed.run(cmd, env, settings.workers, out, settings.duration_s + 300, shown)
    with open(out / "locust.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if shown(line):
                print(line.rstrip())
        return proc.wait(timeout=settings.duration_s + 300)


def shown(line: str) -> bool:
    """Shape changes and warnings (e.g. locust's own CPU), printed as they happen."""
    return "WARNING" in line or "Shape test updating" in line or "ERROR" in line


def describe(settings: Settings) -> str:
    stages = ", ".join(f"{s.users}u until {s.until_s:g}s" for s in settings.stages)
    load = f"{settings.rate_per_s}/s arrivals" if settings.rate_per_s else f"think {settings.think_time_s} s"
    weights = ", ".join(f"{t}={w}" for t, w in settings.weights.items() if w)
    workers = f"; {settings.workers} locust workers" if settings.workers else ""
    return f"shape {settings.shape}: {stages}; {load}; weights {weights}{workers}"


def main() -> int:
    ops = load()
    try:
        settings = resolve(ops)
    except SettingsError as err:
        print(f"loadtest: {err}", file=sys.stderr)
        return 2
    if settings.shape == "sweep":  # open-loop rate sweep to the knee, not locust (loadtests/sweep)
        return sweep.main(ops, lambda: ensure_up(ops))
    model = ensure_up(ops)[0]
    out = report_dir()
    print(f"targets   {targets.describe(ops)}")
    print(describe(settings))
    warm_up(ops, settings, model)
    try:
        code = run_locust(ops, settings, model, out)
    except distributed.WorkerError as err:  # never a report from part of the load
        print(f"loadtest: {err}", file=sys.stderr)
        return 2
    samples = out / "samples.json"
    if not samples.exists():
        print(f"locust exited {code} without samples; see {out / 'locust.log'}", file=sys.stderr)
        return 2
    run = Run.parse(json.loads(samples.read_text()))
    time.sleep(ops.observability.scrape_interval_s)  # let Prometheus scrape the run's last seconds
    history = prom.fetch(ops, run.started, time.time())
    summary = summarize(run, ops.loadtest.locust_cpu_warn_percent)
    verdicts = gate.evaluate(ops, run)
    pngs = plots.draw_all(run, history, ops.loadtest.plot_window_s, out)
    summary.update(
        settings=settings.to_json(), model=model, machine={"host": platform.node(), "cpus": os.cpu_count()},
        replicas=history.replica_range(), alerts_fired=history.alerts_fired(), prometheus_error=history.error,
        slo_gate=gate.report(verdicts), plots=[p.name for p in pngs],
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = "\n".join([table(summary), "", *(v.line() for v in verdicts)])
    (out / "summary.txt").write_text(text + "\n")
    print(text)
    generator = summary["load_generator"]
    if generator["saturated"]:
        busy = [i for i, w in generator.get("workers", {}).items() if w["saturated"]]
        who = f"locust worker {', '.join(busy)}" if busy else "locust"
        print(f"WARNING: {who} used most of a core; the load generator, not the stack, may have set the pace"
              + ("; raise WORKERS" if settings.workers else "; try WORKERS=N"))
    if summary["arrival_rate"] and not summary["arrival_rate"]["kept_up"]:
        print("WARNING: the users could not keep the arrival rate; raise USERS")
    print(f"alerts fired: {', '.join(summary['alerts_fired']) or 'none'}")
    print(f"report    {out}/ (locust.html, summary.json, {', '.join(summary['plots'])})")
    print("the stack is still running; stop it with `make down`")
    broken = [v.objective for v in verdicts if not v.passed]
    if broken:
        print(f"SLO gate FAILED: {', '.join(broken)}")
        return 1
    print("SLO gate passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
