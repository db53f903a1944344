"""`make preflight` against the running stack: every item answered, all pass, and the live parts were read."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from stack import ROOT
from stack.config import OpsConfig

pytestmark = pytest.mark.live


def test_preflight_passes_on_the_live_stack(live_stack: OpsConfig) -> None:
    out = subprocess.run([sys.executable, "-m", "stack.tools.preflight"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    items = re.findall(r"^(PASS|FAIL|N/A) +(\d)\. .*\n +(.+)$", out.stdout, re.M)
    assert [n for _, n, _ in items] == [str(i) for i in range(1, 9)], out.stdout
    reasons = {n: (status, reason) for status, n, reason in items}
    # Consulted live: the Ray cluster's resources and the rules Prometheus has loaded.
    assert re.search(r"Ray cluster at \S+: CPU \d", out.stdout) and "alerts loaded" in out.stdout
    assert reasons["3"][0] == "PASS" and "live Ray cluster" in reasons["3"][1]
    assert reasons["7"][0] == "PASS" and "loaded by Prometheus" in reasons["7"][1]
    assert "Prometheus not reachable" not in reasons["6"][1]
