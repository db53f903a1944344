"""SINCE: when evidence starts. One parser for `serveops --since`, the runbook executor's SINCE and the
chaos engine's injection time."""

from __future__ import annotations

import re
import time
from datetime import datetime

_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhd])+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float | None = None) -> float | None:
    """Unix seconds of a SINCE value: unix seconds, an ISO time (local unless it names a zone), or a
    duration back from now (90s, 10m, 1h30m). None for "": no bound."""
    text = text.strip()
    if not text:
        return None
    if _DURATION.fullmatch(text):
        seconds = sum(float(n) * _UNIT_S[unit] for n, unit in _DURATION_PART.findall(text))
        return (time.time() if now is None else now) - seconds
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(f"since {text!r}: not unix seconds, an ISO time or a duration like 10m") from None
