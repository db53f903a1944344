"""`make memprofile` profiles a live replica under traffic and leaves a capture and flame graphs."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from stack import ROOT

pytestmark = pytest.mark.live


def test_memprofile_embedder(http: httpx.Client, serve_url: str, tmp_path: Path) -> None:
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=serve_url, timeout=60) as client:
            while not stop.is_set():
                client.post("/embed", json={"text": ["profile me", "and me too, a little longer"]})

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        out = subprocess.run(
            ["make", "--no-print-directory", "memprofile", "DEPLOYMENT=Embedder", "SECONDS=3"],
            cwd=ROOT, capture_output=True, text=True, timeout=240,
        )
    finally:
        stop.set()
        worker.join()
    assert out.returncode == 0, out.stdout + out.stderr
    last = Path(out.stdout.strip().splitlines()[-1].split()[-1])
    assert last.suffix == ".html" and last.stat().st_size > 0
    folder = last.parent
    capture = folder / "Embedder.bin"
    assert capture.stat().st_size > 0
    assert (folder / "Embedder-leaks.html").stat().st_size > 0
    summary = (folder / "Embedder-summary.txt").read_text()
    assert "Total allocations" in summary
    # The replica survived being attached to.
    time.sleep(1)
    assert http.post("/embed", json={"text": "still alive"}).status_code == 200


def test_unknown_deployment_is_named(live_stack) -> None:
    out = subprocess.run(["make", "--no-print-directory", "memprofile", "DEPLOYMENT=Nope", "SECONDS=1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "Nope" in out.stdout + out.stderr and "Embedder" in out.stdout + out.stderr
