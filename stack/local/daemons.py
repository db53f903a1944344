"""Background processes serveops starts beside Ray (exporters, later Prometheus and Alertmanager).

Each runs in its own session, so it outlives `make up`, with its pid in .run/<name>.pid and its
output in .run/logs/<name>.log; `make down` stops every one it finds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from stack import ROOT

RUN_DIR = ROOT / ".run"


def pid_file(name: str) -> Path:
    return RUN_DIR / f"{name}.pid"


def log_file(name: str) -> Path:
    return RUN_DIR / "logs" / f"{name}.log"


def pid_of(name: str) -> int | None:
    """The daemon's pid while it runs; a stale pid file is removed."""
    path = pid_file(name)
    try:
        pid = int(path.read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        path.unlink(missing_ok=True)
        return None


def start(name: str, cmd: list[str], env: dict[str, str] | None = None) -> int:
    running = pid_of(name)
    if running:
        return running
    log_file(name).parent.mkdir(parents=True, exist_ok=True)
    with log_file(name).open("a") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env, cwd=ROOT)
    pid_file(name).write_text(f"{proc.pid}\n")
    return proc.pid


def stop(name: str, grace_s: float = 10) -> bool:
    """SIGTERM, then SIGKILL after the grace period; True when it is gone."""
    pid = pid_of(name)
    if pid is None:
        return True
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            break
        time.sleep(0.2)
    else:
        os.killpg(pid, signal.SIGKILL)
    pid_file(name).unlink(missing_ok=True)
    return True


def all_names() -> list[str]:
    return sorted(p.stem for p in RUN_DIR.glob("*.pid"))
