"""`make runbook NAME=<Name> [CONFIRM=1] [STEPS=a,b] [SINCE=10m] [K8S_CONTEXT=<context>]`: run a
runbook's steps against the live stack.

Diagnosis steps always run; they only read. Mitigation steps run only with CONFIRM=1 and are
otherwise printed with how to run them. Kubernetes (k8s-) steps run only when K8S_CONTEXT names
the context kubectl is on (`kubectl config current-context`): never against whatever cluster
happens to be current. SINCE (unix seconds, an ISO time or a duration; the chaos engine passes the
fault time) bounds the evidence: the steps get SINCE as unix seconds and SINCE_WINDOW, a PromQL
range from SINCE to now, so logs, dead actors and queries ignore anything older.
Each step prints its command, its output (what it found) and its exit status.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from runbooks.book import Runbook, RunbookError, Step, load, names
from stack import ROOT, targets
from stack.config import OpsConfig
from stack.config import load as load_ops
from stack.since import parse_since
from stack.tools.promql import URL_ENV

VENV_BIN = ROOT / ".venv" / "bin"
STEP_TIMEOUT_S = {"diagnose": 120, "mitigate": 600}
K8S_NEEDS = "k8s step needs K8S_CONTEXT=<context> matching `kubectl config current-context`"


@dataclass(frozen=True)
class StepResult:
    step: Step
    ran: bool
    exit_code: int | None
    output: str
    seconds: float
    note: str = ""


def step_env(ops: OpsConfig, base: Mapping[str, str] = os.environ) -> dict[str, str]:
    """What the steps' commands find: our venv's tools first, and the targets' addresses (the local
    stack unless the environment points them elsewhere, stack/targets.py)."""
    t = ops.targets
    return {**base, "PATH": f"{VENV_BIN}{os.pathsep}{base.get('PATH', '')}",
            "RAY_DASHBOARD_ADDRESS": t.ray_dashboard_url, "RAY_ADDRESS": ops.listen.gcs_address,
            "PROMETHEUS_URL": t.prometheus_url, "SERVE_URL": t.serve_url,
            targets.KUBE_ENV["kube_namespace"]: t.kube_namespace,
            **({targets.KUBE_ENV["kube_context"]: t.kube_context} if t.kube_context else {}),
            URL_ENV: t.prometheus_url}  # `serveops promql`'s fast path (and the target's override)


def current_context(env: Mapping[str, str]) -> tuple[str, str]:
    """kubectl's current context as the step would see it (same PATH and KUBECONFIG), or "" and why
    there is none."""
    kubectl = shutil.which("kubectl", path=env.get("PATH"))
    if kubectl is None:
        return "", "kubectl is not installed here"
    try:
        done = subprocess.run([kubectl, "config", "current-context"], capture_output=True, text=True,
                              env=dict(env), timeout=30)
    except subprocess.TimeoutExpired:
        return "", "kubectl config current-context timed out"
    name = done.stdout.strip()
    return (name, "") if done.returncode == 0 and name else ("", "kubectl has no current context")


def kubernetes_blocked(env: Mapping[str, str]) -> str:
    """Why a Kubernetes step may not run, or "": it runs only against the context the user named, so
    a mitigation never deletes pods on whatever cluster kubectl happens to point at. Asked per step:
    the current context can change between steps."""
    wanted = env.get("K8S_CONTEXT", "").strip()
    current, none_why = current_context(env)
    if wanted and wanted == current:
        return ""
    named = f"K8S_CONTEXT={wanted}, " if wanted else ""
    seen = f"current: {current}" if current else f"current: none, {none_why}"
    return f"skipped: {K8S_NEEDS} ({named}{seen})"


def skip_reason(step: Step, confirm: bool, env: Mapping[str, str], remote: str = "") -> str:
    """remote: the targets that are not the local stack, described; a mitigation that is not a
    Kubernetes step acts through the local stack's own APIs, so it does not run against them."""
    if step.kubernetes and (blocked := kubernetes_blocked(env)):
        return blocked
    if step.mutates and not confirm:
        return "skipped: a mitigation; run again with CONFIRM=1 to apply it"
    if step.mutates and not step.kubernetes and remote:
        return (f"skipped: this mitigation acts on the local stack, and the targets point elsewhere "
                f"({remote}); on a cluster the k8s- steps act, with K8S_CONTEXT=<context>")
    return ""


def since_window(since: float, scrape_interval_s: int, now: float) -> str:
    """A PromQL range from SINCE to now, for `[${SINCE_WINDOW}]`: one scrape interval longer, so a
    series whose last sample came just before SINCE (the replica killed at SINCE) still counts, and
    at least three scrape intervals, so rate() has two samples. No longer: a minute's floor would let
    in the evidence of a fault a minute before this one."""
    return f"{max(3 * scrape_interval_s, math.ceil(now - since) + scrape_interval_s)}s"


def with_since(env: Mapping[str, str], since: float | None, ops: OpsConfig) -> dict[str, str]:
    """The step's env with SINCE as unix seconds (one instant for every step) and SINCE_WINDOW as of
    now; without a bound neither is set, and the steps' defaults (`${SINCE_WINDOW:-15m}`) apply."""
    env = {k: v for k, v in env.items() if k not in ("SINCE", "SINCE_WINDOW")}
    if since is None:
        return env
    window = since_window(since, ops.observability.scrape_interval_s, time.time())
    return {**env, "SINCE": f"{since:.3f}", "SINCE_WINDOW": window}


def run_step(step: Step, env: Mapping[str, str], confirm: bool, remote: str = "") -> StepResult:
    reason = skip_reason(step, confirm, env, remote)
    if reason:
        return StepResult(step, False, None, "", 0.0, reason)
    started = time.monotonic()
    timeout = STEP_TIMEOUT_S["mitigate" if step.mutates else "diagnose"]
    try:
        done = subprocess.run(["bash", "-o", "pipefail", "-c", step.code], cwd=ROOT, env=dict(env),
                              capture_output=True, text=True, timeout=timeout)
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as err:
        code, output = 124, f"{err.stdout or ''}{err.stderr or ''}\n(timed out after {timeout}s)"
    return StepResult(step, True, code, output.rstrip(), time.monotonic() - started)


def show(result: StepResult) -> None:
    step = result.step
    print(f"\n== {step.kind}:{step.name}" + (f"  ({step.why})" if step.why else ""))
    for line in step.code.splitlines():
        print(f"   $ {line}")
    if not result.ran:
        print(f"   -> {result.note}")
        return
    for line in result.output.splitlines() or ["(no output)"]:
        print(f"   | {line}")
    print(f"   -> exit {result.exit_code} in {result.seconds:.1f}s")


def execute(book: Runbook, ops: OpsConfig, confirm: bool, only: list[str] | None = None,
            kinds: tuple[str, ...] | None = None, echo: bool = True,
            extra_env: Mapping[str, str] | None = None, since: float | None = None) -> list[StepResult]:
    """Run the runbook's steps. since (unix seconds), else SINCE in extra_env or the environment,
    bounds the evidence; K8S_CONTEXT there lets Kubernetes steps run against that context."""
    env = {**step_env(ops), **(extra_env or {})}
    bound = since if since is not None else parse_since(env.get("SINCE", ""))
    remote = ", ".join(f"{kind} {url}" for kind, url in targets.remote(ops).items())
    results = []
    for step in book.steps:
        if (only and step.name not in only) or (kinds and step.kind not in kinds):
            continue
        result = run_step(step, with_since(env, bound, ops), confirm, remote)
        if echo:
            show(result)
        results.append(result)
    return results


def main() -> int:
    name = os.environ.get("NAME", "")
    if not name:
        print("make runbook NAME=<Name> [CONFIRM=1] [STEPS=a,b] [SINCE=10m] [K8S_CONTEXT=<context>]; "
              "runbooks:\n  " + "\n  ".join(names()))
        return 2
    try:
        book = load(name)
    except RunbookError as err:
        print(err, file=sys.stderr)
        return 2
    try:
        since = parse_since(os.environ.get("SINCE", ""))
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    confirm = os.environ.get("CONFIRM") == "1"
    only = [s for s in os.environ.get("STEPS", "").split(",") if s] or None
    print(f"# {book.title}" + ("" if confirm else "  (diagnosis only; CONFIRM=1 applies the mitigation)"))
    if since is not None:
        print(f"# evidence since {datetime.fromtimestamp(since).isoformat(sep=' ', timespec='seconds')}: "
              "older logs, dead actors and samples are left out")
    ops = load_ops()
    print(f"# targets: {targets.describe(ops)}")
    results = execute(book, ops, confirm, only, since=since)
    failed = [r.step.name for r in results if r.ran and r.exit_code != 0]
    ran = sum(r.ran for r in results)
    print(f"\n{ran} step(s) ran, {len(results) - ran} skipped"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
