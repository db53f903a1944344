"""The instrumentation mode the running head started with, kept in .run/instrumentation.

SERVEOPS_INSTRUMENTATION takes effect when the head starts (stack.serving.observability.switch), so
`make up` against a running head and `make bench` need the mode that head really runs.
"""

from __future__ import annotations

from pathlib import Path

from stack.local import daemons


def mode_file() -> Path:
    # Looked up on each call: tests point daemons.RUN_DIR elsewhere.
    return daemons.RUN_DIR / "instrumentation"


def record(value: str) -> None:
    mode_file().parent.mkdir(parents=True, exist_ok=True)
    mode_file().write_text(value + "\n")


def running_mode() -> str:
    """The mode the running head started with; full where none was recorded."""
    path = mode_file()
    return path.read_text().strip() if path.exists() else "full"
