"""Choose the hardware profile: `PROFILE=cpu|gpu` wins, else GPU when `nvidia-smi` works.

Standard library only: `make setup` imports this before the virtualenv exists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping

PROFILES = ("cpu", "gpu")


def gpu_present(which: Callable[[str], str | None] = shutil.which) -> bool:
    """True when nvidia-smi exists and lists at least one GPU."""
    smi = which("nvidia-smi")
    if not smi:
        return False
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def select(env: Mapping[str, str] = os.environ, detect: Callable[[], bool] = gpu_present) -> str:
    explicit = env.get("PROFILE", "").strip().lower()
    if explicit:
        if explicit not in PROFILES:
            raise ValueError(f"PROFILE={explicit!r}: expected one of {', '.join(PROFILES)}")
        return explicit
    return "gpu" if detect() else "cpu"


if __name__ == "__main__":
    print(select())
