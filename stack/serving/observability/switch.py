"""SERVEOPS_INSTRUMENTATION=off at `make up`: no serveops metrics, no spans; Ray's own metrics stay.

It exists so `make bench` can measure what instrumentation costs. The variable is read once per
process; workers inherit the raylet's environment, so every replica and the proxy see the value the
head started with. The running head's mode is the operating side's to record (stack.local.instrumentation).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

ENV = "SERVEOPS_INSTRUMENTATION"
MODES = ("full", "off")


def mode(env: Mapping[str, str] = os.environ) -> str:
    value = env.get(ENV, "").strip() or "full"
    if value not in MODES:
        raise ValueError(f"{ENV}={value!r}: expected one of {', '.join(MODES)}")
    return value


def enabled(env: Mapping[str, str] = os.environ) -> bool:
    return mode(env) == "full"
