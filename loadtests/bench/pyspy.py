"""Where a process group's CPU goes under load: py-spy samples of its busiest process, folded to the
functions that were running (leaf frames) and the share of samples each took.

Non-blocking sampling, so the profiled process is not paused; idle threads are left out, so the
shares are of the time the process was on a core.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from loadtests.bench import cpu

TOP = 12  # functions kept per process


def busiest(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
            groups: list[str]) -> dict[str, int]:
    """Per group, the pid that spent the most CPU between the two snapshots."""
    best: dict[str, tuple[float, int]] = {}
    for pid, (group, cpu_s) in after.items():
        if group in groups:
            spent = cpu_s - before.get(pid, (group, 0.0))[1]
            if spent > best.get(group, (-1.0, 0))[0]:
                best[group] = (spent, pid)
    return {group: pid for group, (_, pid) in best.items()}


def start(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen([binary, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
                             "--format", "raw", "--nonblocking", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def leaves(raw: str) -> list[dict[str, Any]]:
    """py-spy's raw (collapsed) stacks: `frame;frame;leaf count` per line, to the top leaf functions."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        name, _, where = stack.rsplit(";", 1)[-1].partition(" (")
        where = where.rstrip(")").rsplit(":", 1)[0]  # per function, not per line
        counts[f"{name} ({where})" if where else name] += int(count)
    total = sum(counts.values()) or 1
    return [{"function": f, "share": round(n / total, 3)} for f, n in counts.most_common(TOP)]


def profile_groups(groups: list[str], seconds: float, out: Path, load: Any) -> dict[str, Any]:
    """Run load() (a measured load run) with py-spy on the busiest process of each group; per group
    the pid and its top functions. Busiest is judged on a first short run of the same load."""
    before = cpu.snapshot()
    load(min(seconds, 3))
    pids = busiest(before, cpu.snapshot(), groups)
    out.mkdir(parents=True, exist_ok=True)
    spies = {g: (pid, out / f"pyspy-{g.replace(':', '_')}-{pid}.txt") for g, pid in pids.items()}
    procs = {g: start(pid, seconds, path) for g, (pid, path) in spies.items()}
    load(seconds)
    found: dict[str, Any] = {}
    for group, proc in procs.items():
        _, err = proc.communicate(timeout=seconds + 60)
        pid, path = spies[group]
        if proc.returncode != 0 or not path.exists():
            found[group] = {"pid": pid, "error": err.decode(errors="replace")[-300:]}
            continue
        found[group] = {"pid": pid, "file": str(path), "top": leaves(path.read_text())}
    return found
