"""Where a process group's CPU goes under load: py-spy samples of its busiest process, folded to the
functions that were running (leaf frames) and the share of samples each took.

Non-blocking sampling, so the profiled process is not paused; idle threads are left out, so the
shares are of the time the process was on a core.
"""

from __future__ import annotations

import linecache
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from loadtests.bench import cpu

TOP = 12  # functions kept per process
ROOT = Path(__file__).resolve().parents[2]  # py-spy names our frames by path from here (stack/...)

# What SERVEOPS_INSTRUMENTATION=off removes, as py-spy names it. Spans and their context: always ours to
# count. Ray's metric classes: only where serveops code called them (Ray's own serve metrics stay on).
# Our observability code: except the lines that pass the request itself through (the observer's
# `await self.app(...)`, a context manager's `yield`), and the log filter, which stays on with it off.
SPANS = ("opentelemetry/", "ray/serve/_private/tracing_utils.py")
METRIC_CLASSES = ("ray/util/metrics.py", "ray/serve/metrics.py")
OURS, OUR_CODE = "stack/serving/observability/", "stack/"
PASS_THROUGH = ("await self.app(", "yield")
ALWAYS_ON = ("stack/serving/observability/logs.py",)


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


def stacks(raw: str) -> Iterator[tuple[list[str], int]]:
    """py-spy's raw (collapsed) stacks: `frame;frame;leaf count` per line, to (frames, count)."""
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            yield stack.split(";"), int(count)


def leaves(raw: str) -> list[dict[str, Any]]:
    """The top leaf functions of a raw profile, per function, not per line."""
    counts: Counter[str] = Counter()
    for frames, count in stacks(raw):
        name, path, _ = _frame(frames[-1])
        counts[f"{name} ({path})" if path else name] += count
    total = sum(counts.values()) or 1
    return [{"function": f, "share": round(n / total, 3)} for f, n in counts.most_common(TOP)]


def _frame(frame: str) -> tuple[str, str, int]:
    """`func (path:line)` to its parts; a frame without a place has path "" and line 0."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, line = where.rpartition(":")
    return (name, path, int(line)) if line.isdigit() else (name, where, 0)


def _stdlib(path: str) -> bool:
    top = path.split("/")[0].removesuffix(".py")
    return not path or path.startswith("<") or top in sys.stdlib_module_names


def _instrumentation(frames: list[str], root: Path) -> str | None:
    """The frame to charge when the sample's own work (below the standard library) is instrumentation."""
    in_metrics = None
    for frame in reversed(frames):
        _, path, line = _frame(frame)
        if _stdlib(path):
            continue
        if path.startswith(SPANS):
            return frame
        if path.startswith(METRIC_CLASSES):
            in_metrics = in_metrics or frame
            continue
        if in_metrics:
            return in_metrics if path.startswith(OUR_CODE) else None
        if path.startswith(ALWAYS_ON):
            return None
        if path.startswith(OURS):
            source = linecache.getline(str(root / path), line).strip()
            return None if source.startswith(PASS_THROUGH) else frame
        return None
    return None


def instrumentation_share(raw: str, root: Path = ROOT) -> dict[str, Any]:
    """The share of a process's samples spent in what SERVEOPS_INSTRUMENTATION=off removes (serveops'
    metrics, the request observer, spans), and where. A profile of one process on one head, so unlike
    a full-against-off ratio it does not move with the head's speed."""
    counts: Counter[str] = Counter()
    total = 0
    for frames, count in stacks(raw):
        total += count
        charged = _instrumentation(frames, root)
        if charged:
            name, path, _ = _frame(charged)
            counts[f"{name} ({path})"] += count
    return {"share": round(sum(counts.values()) / total, 4) if total else None, "samples": total,
            "top": [{"function": f, "share": round(n / total, 4)} for f, n in counts.most_common(5)]}


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
        raw = path.read_text()
        found[group] = {"pid": pid, "file": str(path), "top": leaves(raw),
                        "instrumentation": instrumentation_share(raw)}
    return found
