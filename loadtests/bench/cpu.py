"""CPU seconds per process group over a measured run, from /proc: where a request's CPU goes."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from stack.local.ray_head import cmdlines

TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def group(cmdline: str) -> str:
    """Ray actors by class and deployment (their command line also names the method running now)."""
    first = cmdline.split(" ", 1)[0]
    if first.startswith("ray::"):
        return first.split(".", 1)[0]
    if "VLLM::" in cmdline or "vllm.entrypoints" in cmdline:
        return "vllm"
    return "other"


def snapshot() -> dict[int, tuple[str, float]]:
    """pid -> (group, CPU seconds so far)."""
    out = {}
    for pid, cmdline in cmdlines():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (group(cmdline), (int(fields[11]) + int(fields[12])) * TICK_S)
    return out


def per_request_ms(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
                   requests: int, top: int = 6) -> dict[str, float]:
    """CPU milliseconds per request of the busiest groups, and of everything, over the run."""
    spent: dict[str, float] = defaultdict(float)
    for pid, (name, cpu_s) in after.items():
        spent[name] += cpu_s - before.get(pid, (name, 0.0))[1]
    per = {k: round(v * 1000 / max(requests, 1), 2) for k, v in spent.items()}
    busiest = dict(sorted(per.items(), key=lambda kv: -kv[1])[:top])
    return {**busiest, "all": round(sum(per.values()), 2)}
