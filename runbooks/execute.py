"""`make runbook NAME=<Name> [CONFIRM=1] [STEPS=a,b]`: run a runbook's steps against the live stack.

Diagnosis steps always run; they only read. Mitigation steps run only with CONFIRM=1 and are
otherwise printed with how to run them. Kubernetes steps run only where kubectl is installed and
has a cluster to talk to (a current context).
Each step prints its command, its output (what it found) and its exit status.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

from runbooks.book import Runbook, RunbookError, Step, load, names
from stack import ROOT
from stack.config import OpsConfig
from stack.config import load as load_ops

VENV_BIN = ROOT / ".venv" / "bin"
STEP_TIMEOUT_S = {"diagnose": 120, "mitigate": 600}


@dataclass(frozen=True)
class StepResult:
    step: Step
    ran: bool
    exit_code: int | None
    output: str
    seconds: float
    note: str = ""


def step_env(ops: OpsConfig, base: Mapping[str, str] = os.environ) -> dict[str, str]:
    """What the steps' commands find: our venv's tools first, and the stack's addresses."""
    listen = ops.listen
    return {**base, "PATH": f"{VENV_BIN}{os.pathsep}{base.get('PATH', '')}",
            "RAY_DASHBOARD_ADDRESS": listen.dashboard_url, "RAY_ADDRESS": listen.gcs_address,
            "PROMETHEUS_URL": listen.url(listen.prometheus_port), "SERVE_URL": listen.serve_url}


@cache
def kubernetes_missing() -> str:
    """Why Kubernetes steps cannot run here, or "" where they can."""
    if shutil.which("kubectl") is None:
        return "kubectl is not installed here"
    # Without a context kubectl talks to localhost:8080, which here is Ray's metrics port.
    context = subprocess.run(["kubectl", "config", "current-context"], capture_output=True, text=True)
    return "" if context.returncode == 0 else "kubectl has no cluster configured (no current context)"


def skip_reason(step: Step, confirm: bool) -> str:
    if step.kubernetes and kubernetes_missing():
        return f"skipped: {kubernetes_missing()} (a Kubernetes step)"
    if step.mutates and not confirm:
        return "skipped: a mitigation; run again with CONFIRM=1 to apply it"
    return ""


def run_step(step: Step, env: Mapping[str, str], confirm: bool) -> StepResult:
    reason = skip_reason(step, confirm)
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
            extra_env: Mapping[str, str] | None = None) -> list[StepResult]:
    env = {**step_env(ops), **(extra_env or {})}
    results = []
    for step in book.steps:
        if (only and step.name not in only) or (kinds and step.kind not in kinds):
            continue
        result = run_step(step, env, confirm)
        if echo:
            show(result)
        results.append(result)
    return results


def main() -> int:
    name = os.environ.get("NAME", "")
    if not name:
        print("make runbook NAME=<Name> [CONFIRM=1] [STEPS=a,b]; runbooks:\n  " + "\n  ".join(names()))
        return 2
    try:
        book = load(name)
    except RunbookError as err:
        print(err, file=sys.stderr)
        return 2
    confirm = os.environ.get("CONFIRM") == "1"
    only = [s for s in os.environ.get("STEPS", "").split(",") if s] or None
    print(f"# {book.title}" + ("" if confirm else "  (diagnosis only; CONFIRM=1 applies the mitigation)"))
    results = execute(book, load_ops(), confirm, only)
    failed = [r.step.name for r in results if r.ran and r.exit_code != 0]
    ran = sum(r.ran for r in results)
    print(f"\n{ran} step(s) ran, {len(results) - ran} skipped"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
