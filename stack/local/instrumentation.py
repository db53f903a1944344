"""What the running head started with, kept under .run/: its instrumentation mode and its levers.

SERVEOPS_INSTRUMENTATION and SERVEOPS_LEVERS take effect when the head starts (stack.serving.observability
.switch, stack.levers), so `make up` against a running head and `make bench` need what that head really runs.
"""

from __future__ import annotations

from pathlib import Path

from stack.local import daemons


def mode_file() -> Path:
    # Looked up on each call: tests point daemons.RUN_DIR elsewhere.
    return daemons.RUN_DIR / "instrumentation"


def levers_file() -> Path:
    return daemons.RUN_DIR / "levers"


def _write(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value + "\n")


def _read(path: Path, default: str) -> str:
    return path.read_text().strip() if path.exists() else default


def record(value: str) -> None:
    _write(mode_file(), value)


def running_mode() -> str:
    """The mode the running head started with; full where none was recorded."""
    return _read(mode_file(), "full")


def record_levers(value: str) -> None:
    _write(levers_file(), value)


def running_levers() -> str:
    """The levers the running head started with (SERVEOPS_LEVERS' form); none where none was recorded."""
    return _read(levers_file(), "none")
