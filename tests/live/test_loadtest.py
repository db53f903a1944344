"""`make loadtest` end to end: locust against the live stack, the report files, and the SLO gate."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from loadtests import routes
from stack import ROOT
from stack.config import OPS_PATH, OPS_PATH_ENV, OpsConfig

PNGS = ("latency.png", "throughput.png", "llm.png", "replicas.png", "alerts.png")
REPORT_FILES = ("locust.html", "locust_stats.csv", "locust_stats_history.csv", "locust_failures.csv",
                "summary.json", "summary.txt", *PNGS)


def loadtest(out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "loadtests.run"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "REPORT_DIR": str(out), **env})


def test_a_short_run_drives_every_route_and_writes_the_report(live_stack: OpsConfig, tmp_path: Path) -> None:
    result = loadtest(tmp_path, DURATION="30")
    summary = json.loads((tmp_path / "summary.json").read_text())
    # The gate may pass or fail on a busy machine, but its verdict and the exit code must agree.
    assert result.returncode == (0 if summary["slo_gate"]["passed"] else 1), result.stdout + result.stderr
    for name in REPORT_FILES:
        assert (tmp_path / name).stat().st_size > 0, name
    for png in PNGS:
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert set(summary["routes"]) == {e.name for e in routes.ENTRIES.values()}
    for name, figures in summary["routes"].items():
        assert figures["requests"] > 0, name
        assert figures["p50_ms"] > 0, name
    llm = summary["llm"]
    assert llm["ttft"]["count"] > 0 and llm["itl"]["count"] > 0 and llm["tpot"]["count"] > 0
    assert llm["output_tokens_per_s"] > 0
    assert 0 < summary["load_generator"]["cpu_mean_percent"] < 100
    assert "llm/LLMServer:tiny-llama" in summary["replicas"]
    # locust's own CSV holds every route and the LLM's timings as entries of their own
    with open(tmp_path / "locust_stats.csv") as f:
        entries = {row["Name"]: int(row["Request Count"]) for row in csv.DictReader(f)}
    for name in [*summary["routes"], *routes.LLM_NAMES]:
        assert entries.get(name, 0) > 0, name
    for line in ("/v1/chat/completions stream", "TTFT p50", "tokens/s", "make down"):
        assert line in result.stdout


def test_an_impossible_slo_fails_the_gate_and_is_named(live_stack: OpsConfig, tmp_path: Path) -> None:
    raw = yaml.safe_load(OPS_PATH.read_text())
    for slo in raw["slos"]:
        if slo["name"] == "embed":
            slo.update(latency_objective_ms=1, latency_target=0.999)  # 1 ms: a bucket no request can make
    strict = tmp_path / "ops.yaml"
    strict.write_text(yaml.safe_dump(raw))
    result = loadtest(tmp_path / "report", DURATION="10", WEIGHTS="embed=1", **{OPS_PATH_ENV: str(strict)})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL  embed latency:" in result.stdout
    assert "within 1 ms, objective 99.90%" in result.stdout
    assert "PASS  embed availability" in result.stdout
    assert "SLO gate FAILED: embed latency" in result.stdout
    gate = json.loads((tmp_path / "report" / "summary.json").read_text())["slo_gate"]
    assert gate["passed"] is False


def test_two_workers_share_the_load_and_feed_one_report(live_stack: OpsConfig, tmp_path: Path) -> None:
    """WORKERS=2: a locust master and two workers; their samples merge into the one report and gate."""
    result = loadtest(tmp_path, WORKERS="2", DURATION="20", WEIGHTS="embed=1,predict=1")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert result.returncode == (0 if summary["slo_gate"]["passed"] else 1), result.stdout + result.stderr
    for name in ("locust.html", "locust_stats.csv", "summary.txt", "locust-worker-0.log",
                 "locust-worker-1.log"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert summary["settings"]["workers"] == 2
    assert set(summary["load_generator"]["workers"]) == {"0", "1"}
    record = json.loads((tmp_path / "samples.json").read_text())
    assert [w["index"] for w in record["workers"]] == [0, 1]
    assert all(w["samples"] > 0 for w in record["workers"]), record["workers"]
    assert len(record["samples"]) == sum(w["samples"] for w in record["workers"])
    for e in (routes.ENTRIES["embed"], routes.ENTRIES["predict"]):
        assert summary["routes"][e.name]["requests"] > 0, e.name
    assert "2 locust workers" in result.stdout
    assert ("SLO gate passed" if summary["slo_gate"]["passed"] else "SLO gate FAILED") in result.stdout
