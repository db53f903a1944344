"""SERVEOPS_INSTRUMENTATION=off at `make up`: no serveops metrics, no spans; Ray's own metrics stay.

It exists so `make bench` can measure what instrumentation costs. The variable is read once per
process; workers inherit the raylet's environment, so every replica and the proxy see the value the
head started with. `make up` records it in .run/instrumentation.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

ENV = "SERVEOPS_INSTRUMENTATION"
MODES = ("full", "off")


def mode(env: Mapping[str, str] = os.environ) -> str:
    value = env.get(ENV, "").strip() or "full"
    if value not in MODES:
        raise ValueError(f"{ENV}={value!r}: expected one of {', '.join(MODES)}")
    return value


def enabled(env: Mapping[str, str] = os.environ) -> bool:
    return mode(env) == "full"


def mode_file() -> Path:
    from stack.local.daemons import RUN_DIR

    return RUN_DIR / "instrumentation"


def record(value: str) -> None:
    mode_file().parent.mkdir(parents=True, exist_ok=True)
    mode_file().write_text(value + "\n")


def running_mode() -> str:
    """The mode the running head started with; full where none was recorded."""
    path = mode_file()
    return path.read_text().strip() if path.exists() else "full"
