"""`make memprofile [DEPLOYMENT=Embedder] [SECONDS=10]`: memray on one live replica, for a while.

Attaches memray to the replica's process (through lldb), records for SECONDS, then writes the
capture (.bin), a flame graph of peak memory (HTML), a flame graph of what was allocated and not
freed during the window (leaks HTML), and a text summary with the top allocators still holding
memory. The flame graph's path is printed last.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from stack import ROOT
from stack.config import load
from stack.local import serve_deploy

MEMRAY = str(Path(sys.executable).parent / "memray")
DEFAULT_DEPLOYMENT = "Embedder"


def replica_pid(dashboard_url: str, deployment: str) -> int:
    apps = serve_deploy.details(dashboard_url).get("applications") or {}
    for app in apps.values():
        for name, dep in (app.get("deployments") or {}).items():
            if name == deployment:
                for replica in dep.get("replicas") or []:
                    if replica.get("state") == "RUNNING" and replica.get("pid"):
                        return int(replica["pid"])
    known = sorted({d for a in apps.values() for d in (a.get("deployments") or {})})
    raise SystemExit(f"no RUNNING replica of {deployment!r}; deployments: {', '.join(known)}")


def run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")


def wait_until_written(capture: Path, tracking_ends: float, timeout_s: float = 60) -> None:
    """The replica writes the capture as it tracks: complete once tracking ends and it stops growing."""
    time.sleep(max(0.0, tracking_ends - time.monotonic()))
    deadline, last = time.monotonic() + timeout_s, -1
    while time.monotonic() < deadline:
        size = capture.stat().st_size if capture.exists() else 0
        if size > 0 and size == last:
            return
        last = size
        time.sleep(1)
    raise SystemExit(f"memray capture {capture} is empty or still growing after {timeout_s:.0f}s")


def profile(deployment: str, seconds: int, out_dir: Path) -> Path:
    pid = replica_pid(load().listen.dashboard_url, deployment)
    out_dir.mkdir(parents=True, exist_ok=True)
    capture = out_dir / f"{deployment}.bin"
    print(f"attaching memray to {deployment} (pid {pid}) for {seconds}s")
    # --method lldb: gdb 13 (Debian 12) fails to attach on some x86 hosts ("Couldn't write extended
    # state status: Bad address" restoring the replica's registers); lldb attaches there.
    started = time.monotonic()
    run([MEMRAY, "attach", "--method", "lldb", "-f", "-o", str(capture), "--duration", str(seconds),
         str(pid)])
    wait_until_written(capture, started + seconds)
    flame = out_dir / f"{deployment}-flamegraph.html"
    leaks = out_dir / f"{deployment}-leaks.html"
    run([MEMRAY, "flamegraph", "-f", "-o", str(flame), str(capture)])
    run([MEMRAY, "flamegraph", "--leaks", "-f", "-o", str(leaks), str(capture)])
    summary = subprocess.run([MEMRAY, "stats", str(capture)], capture_output=True, text=True).stdout
    summary += subprocess.run([MEMRAY, "summary", str(capture)], capture_output=True, text=True).stdout
    (out_dir / f"{deployment}-summary.txt").write_text(summary)
    print(f"capture  {capture}")
    print(f"leaks    {leaks}")
    print(f"summary  {out_dir / f'{deployment}-summary.txt'}")
    print(f"flamegraph {flame}")
    return flame


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deployment", default=DEFAULT_DEPLOYMENT)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    profile(args.deployment, args.seconds, args.out or ROOT / "reports" / f"memprofile-{stamp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
