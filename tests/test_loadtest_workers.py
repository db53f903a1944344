"""WORKERS=N (loadtests/distributed.py): the setting, the master's and workers' command lines, the
merge of the workers' records, the failure paths on stand-in processes, and one real locust master
with two workers against a fake stack on 127.0.0.1."""

from __future__ import annotations

import itertools
import json
import os
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from loadtests import distributed, routes
from loadtests import run as runner
from loadtests.distributed import WorkerError, combined_cpu, commands, merge, read_records
from loadtests.settings import SettingsError, resolve
from loadtests.summary import Run, summarize, table
from stack.config import OpsConfig, load

EMBED = routes.ENTRIES["embed"].name


@pytest.fixture(scope="module")
def ops() -> OpsConfig:
    return load()


# --- the setting ---

@pytest.mark.parametrize(("raw", "workers"), [(None, 0), ("", 0), ("0", 0), ("2", 2), (" 3 ", 3)])
def test_workers_setting(ops: OpsConfig, raw: str | None, workers: int) -> None:
    settings = resolve(ops, {} if raw is None else {"WORKERS": raw})
    assert settings.workers == workers
    assert settings.to_json()["workers"] == workers


@pytest.mark.parametrize("raw", ["-1", "abc", "1.5", "2x"])
def test_bad_workers_are_named(ops: OpsConfig, raw: str) -> None:
    with pytest.raises(SettingsError, match="WORKERS"):
        resolve(ops, {"WORKERS": raw})


def test_the_sweep_takes_no_workers(ops: OpsConfig) -> None:
    with pytest.raises(SettingsError, match=r"WORKERS.*sweep"):
        resolve(ops, {"WORKERS": "2", "SHAPE": "sweep"})
    assert resolve(ops, {"WORKERS": "0", "SHAPE": "sweep"}).workers == 0


# --- the command lines ---

def test_run_locust_hands_workers_to_the_distributed_runner(ops: OpsConfig, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_run(cmd: list[str], env: dict[str, str], workers: int, out: Path, *_: Any) -> int:
        seen.update(cmd=cmd, env=env, workers=workers, out=out)
        return 0

    monkeypatch.setattr(distributed, "run", fake_run)
    settings = replace(resolve(ops, {}), workers=3)
    assert runner.run_locust(ops, settings, "tiny-llama", tmp_path) == 0
    assert seen["workers"] == 3 and seen["out"] == tmp_path
    assert seen["env"]["LOADTEST_OUT"] == str(tmp_path) and seen["env"]["LLM_MODEL_ID"] == "tiny-llama"

    master, workers = commands(seen["cmd"], 3, 45123)
    assert master[:len(seen["cmd"])] == seen["cmd"]  # the single-process flags: host, CSV, HTML, summary
    flags = dict(itertools.pairwise(master))
    assert "--master" in master and "--worker" not in master
    assert flags["--master-bind-host"] == "127.0.0.1"  # loopback only; locust's default is * (all)
    assert flags["--master-bind-port"] == "45123"
    assert flags["--expect-workers"] == "3"
    assert flags["--host"] == ops.targets.serve_url
    assert flags["--csv"] == str(tmp_path / "locust") and flags["--html"] == str(tmp_path / "locust.html")
    assert not {"*", "0.0.0.0"} & set(master)
    assert len(workers) == 3
    for argv in workers:
        assert argv[:5] == [sys.executable, "-m", "locust", "-f", str(runner.LOCUSTFILE)]
        flags = dict(itertools.pairwise(argv))
        assert "--worker" in argv and "--master" not in argv
        assert flags["--master-host"] == "127.0.0.1" and flags["--master-port"] == "45123"
        # a worker's CSV or HTML would overwrite the master's report
        assert not {"--csv", "--html", "--csv-full-history", "--host"} & set(argv)


def test_free_ports_are_on_loopback_and_differ() -> None:
    ports = {distributed.free_port() for _ in range(5)}
    assert len(ports) > 1 and all(1024 < p < 65536 for p in ports)


# --- the merge ---

def _record(samples: list[list], cpu: list[list], started: float, ended: float) -> dict[str, Any]:
    settings = resolve(load(), {"WORKERS": "2"}).to_json()
    return {"settings": settings, "model": "tiny-llama", "samples": samples, "locust_cpu": cpu,
            "started": started, "ended": ended, "stopped": True}


def _two_workers(busy_cpu: float = 10.0) -> dict[int, dict[str, Any]]:
    w0 = _record([[100.0 + t, EMBED, 20.0, True, 0] for t in range(0, 10, 2)],
                 [[100.2 + t, 5.0, 2] for t in range(10)], 99.5, 110.0)
    w1 = _record([[100.0 + t, EMBED, 30.0, True, 0] for t in range(1, 10, 2)],
                 [[100.7 + t, busy_cpu, 2] for t in range(10)], 99.8, 110.5)
    return {1: w1, 0: w0}


def test_merge_sorts_the_samples_and_spans_both_workers() -> None:
    merged = merge(_two_workers())
    assert [s[0] for s in merged["samples"]] == [100.0 + t for t in range(10)]
    assert [s[2] for s in merged["samples"][:4]] == [20.0, 30.0, 20.0, 30.0]  # interleaved, not concatenated
    assert (merged["started"], merged["ended"]) == (99.5, 110.5)
    assert [(w["index"], w["samples"]) for w in merged["workers"]] == [(0, 5), (1, 5)]
    assert merged["settings"]["workers"] == 2 and merged["model"] == "tiny-llama"
    # one row a second: the busier worker's CPU, both workers' users
    assert merged["locust_cpu"][0] == [100.0, 10.0, 4]
    assert len(merged["locust_cpu"]) == 10


@pytest.mark.parametrize(("busy", "saturated"), [(10.0, False), (97.0, True)])
def test_saturated_when_either_worker_is(ops: OpsConfig, busy: float, saturated: bool) -> None:
    run = Run.parse(merge(_two_workers(busy)))
    gen = summarize(run, ops.loadtest.locust_cpu_warn_percent)["load_generator"]
    assert gen["saturated"] is saturated
    assert gen["workers"]["0"]["saturated"] is False  # worker 0 idles at 5%
    assert gen["workers"]["1"]["saturated"] is saturated
    assert gen["workers"]["0"]["cpu_mean_percent"] == 5.0 and gen["workers"]["1"]["cpu_mean_percent"] == busy
    text = table(summarize(run, ops.loadtest.locust_cpu_warn_percent))
    assert "busiest of 2 workers" in text and ("SATURATED" in text) is saturated


def test_any_worker_saturating_counts_even_where_the_combined_rows_do_not(ops: OpsConfig) -> None:
    """The combined rows stop when worker 0 does; worker 1's own rows still saturate."""
    run = Run.parse(merge(_two_workers()))
    hot = [(t, 99.0, 2) for t, _, _ in run.worker_cpu[1]]
    run = replace(run, worker_cpu={0: run.worker_cpu[0], 1: hot})
    gen = summarize(run, ops.loadtest.locust_cpu_warn_percent)["load_generator"]
    assert gen["cpu_peak_5s_percent"] < 90 and gen["saturated"] is True


def test_combined_cpu_carries_a_skipped_second_and_drops_a_finished_worker() -> None:
    a = [[10.1, 20.0, 1], [11.9, 30.0, 1], [12.1, 40.0, 1]]  # drifted past second 11's start: 11 -> 11.9
    b = [[10.5, 50.0, 3]]  # stopped after second 10
    assert combined_cpu([a, b]) == [[10.0, 50.0, 4], [11.0, 30.0, 1], [12.0, 40.0, 1]]
    a_skips = [[10.9, 20.0, 1], [12.0, 40.0, 1]]  # no row in second 11: its last one counts
    assert combined_cpu([a_skips, [[11.5, 5.0, 2], [12.5, 5.0, 2]]])[1] == [11.0, 20.0, 3]


def test_a_missing_worker_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "samples-worker-0.json").write_text(json.dumps(_two_workers()[0]))
    with pytest.raises(WorkerError, match=r"worker 1 wrote no samples-worker-1\.json.*locust-worker-1\.log"):
        read_records(tmp_path, 2)
    (tmp_path / "samples-worker-1.json").write_text(json.dumps(_two_workers()[1]))
    assert sorted(read_records(tmp_path, 2)) == [0, 1]


def test_a_worker_stopped_from_outside_is_named() -> None:
    records = _two_workers()
    records[1]["stopped"] = False
    with pytest.raises(WorkerError, match="worker 1 quit before the master ended the run"):
        merge(records)


# --- the processes, on stand-ins that act like locust ---

FAKE_LOCUST = textwrap.dedent("""
    import json, os, sys, time
    if "--master" in sys.argv:
        time.sleep(float(os.environ["FAKE_MASTER_S"]))
        sys.exit(0)
    index = os.environ["LOADTEST_WORKER_INDEX"]
    behaviour = os.environ.get(f"FAKE_WORKER_{index}", "ok")
    print(f"worker {index}: {behaviour}", flush=True)
    if behaviour == "crash":
        sys.exit(3)
    if behaviour != "silent":
        now = time.time()
        record = {"settings": {"workers": 2}, "model": "m", "samples": [[now, "/embed", 10.0, True, 0]],
                  "locust_cpu": [[now, 1.0, 1]], "started": now, "ended": now,
                  "stopped": behaviour != "early"}
        with open(os.path.join(os.environ["LOADTEST_OUT"], f"samples-worker-{index}.json"), "w") as f:
            json.dump(record, f)
""")


def _fake_run(tmp_path: Path, master_s: float, timeout_s: float = 60, **workers: str) -> int:
    script = tmp_path / "fake_locust.py"
    script.write_text(FAKE_LOCUST)
    out = tmp_path / "report"
    out.mkdir(exist_ok=True)
    cmd = [sys.executable, str(script), "-f", "locustfile.py", "--headless", "--csv", str(out / "locust")]
    env = {**os.environ, "LOADTEST_OUT": str(out), "FAKE_MASTER_S": str(master_s),
           **{f"FAKE_WORKER_{i}": b for i, b in workers.items()}}
    return distributed.run(cmd, env, 2, out, timeout_s, lambda _: False)


def test_stand_ins_that_end_well_are_merged(tmp_path: Path) -> None:
    assert _fake_run(tmp_path, master_s=1.0) == 0
    merged = json.loads((tmp_path / "report" / "samples.json").read_text())
    assert [w["index"] for w in merged["workers"]] == [0, 1] and len(merged["samples"]) == 2
    assert "worker 1: ok" in (tmp_path / "report" / "locust-worker-1.log").read_text()


def test_a_worker_that_dies_fails_the_run_at_once(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(WorkerError, match=r"locust worker 1 exited 3; see .*locust-worker-1\.log"):
        _fake_run(tmp_path, master_s=60, **{"1": "crash"})
    assert time.monotonic() - start < 30  # not after the master's 60 s
    assert not (tmp_path / "report" / "samples.json").exists()


def test_a_worker_that_leaves_early_fails_the_run_at_once(tmp_path: Path) -> None:
    """SIGTERM: locust writes the samples on the way out, but the master never stopped its test."""
    start = time.monotonic()
    with pytest.raises(WorkerError, match=r"worker 0 quit before the master ended.*locust-worker-0\.log"):
        _fake_run(tmp_path, master_s=60, **{"0": "early"})
    assert time.monotonic() - start < 30


def test_a_worker_that_writes_no_samples_fails_the_run(tmp_path: Path) -> None:
    with pytest.raises(WorkerError, match="locust worker 0 exited 0 without its samples"):
        _fake_run(tmp_path, master_s=1.0, **{"0": "silent"})


def test_a_stale_worker_file_does_not_hide_a_silent_worker(tmp_path: Path) -> None:
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "samples-worker-0.json").write_text(json.dumps(_two_workers()[0]))  # a good one
    with pytest.raises(WorkerError, match="locust worker 0 exited 0 without its samples"):
        _fake_run(tmp_path, master_s=1.0, **{"0": "silent"})


def test_a_run_past_its_time_is_stopped(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(WorkerError, match="did not finish within 2 s"):
        _fake_run(tmp_path, master_s=120, timeout_s=2)
    assert time.monotonic() - start < 20


def test_main_exits_2_naming_the_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    def dead_worker(*_: Any) -> int:
        raise WorkerError("locust worker 1 exited -9; see /r/locust-worker-1.log")

    monkeypatch.setenv("REPORT_DIR", str(tmp_path))
    monkeypatch.setenv("WORKERS", "2")
    monkeypatch.setattr(runner, "ensure_up", lambda _: ["tiny-llama"])
    monkeypatch.setattr(runner, "warm_up", lambda *_: None)
    monkeypatch.setattr(runner, "run_locust", dead_worker)
    assert runner.main() == 2
    assert "locust worker 1 exited -9; see /r/locust-worker-1.log" in capsys.readouterr().err


# --- one real run: a locust master and two workers against a fake stack ---

class FakeStack(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as FastHttpUser expects

    def log_message(self, *_: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"vectors": [[0.0]], "dim": 1}).encode() if self.path == "/embed" else b"{}"
        self.send_response(200 if self.path == "/embed" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # a user stopped mid-request at the end
            return
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.hits += 1  # type: ignore[attr-defined]


@pytest.fixture
def fake_stack() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeStack)
    srv.daemon_threads = True
    srv.hits, srv.lock = 0, threading.Lock()  # type: ignore[attr-defined]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_a_real_master_and_two_workers_merge_into_one_report(ops: OpsConfig, tmp_path: Path,
                                                              fake_stack: ThreadingHTTPServer,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """SHAPE=rate across two workers: both send, the users split 2 and 2, and the total rate holds."""
    env = {"WORKERS": "2", "SHAPE": "rate", "USERS": "4", "RATE": "8", "DURATION": "6", "WEIGHTS": "embed=1"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = resolve(ops, env)
    at_fake = ops.targets.model_copy(update={"serve_url": f"http://127.0.0.1:{fake_stack.server_port}"})
    fake = ops.model_copy(update={"targets": at_fake})
    code = runner.run_locust(fake, settings, "tiny-llama", tmp_path)
    assert code == 0, (tmp_path / "locust.log").read_text()[-3000:]

    record = json.loads((tmp_path / "samples.json").read_text())
    per_worker = {w["index"]: w["samples"] for w in record["workers"]}
    assert sorted(per_worker) == [0, 1] and all(n > 0 for n in per_worker.values()), per_worker
    assert len(record["samples"]) == sum(per_worker.values())
    assert 0 < len(record["samples"]) <= fake_stack.hits  # type: ignore[attr-defined]  # a last one may be cut
    times = [s[0] for s in record["samples"]]
    assert times == sorted(times)
    for w in record["workers"]:  # the master spread the 4 users over the two workers
        assert max(row[2] for row in w["locust_cpu"]) == 2, w["locust_cpu"]
    assert max(row[2] for row in record["locust_cpu"]) == 4

    run = Run.parse(record)
    summary = summarize(run, ops.loadtest.locust_cpu_warn_percent)
    assert summary["routes"][EMBED]["failures"] == 0
    assert set(summary["load_generator"]["workers"]) == {"0", "1"}
    # each user keeps RATE/USERS of the total: two workers neither double nor halve the rate
    achieved = summary["arrival_rate"]["achieved_per_s"]
    assert 0.6 * 8 < achieved < 1.4 * 8, summary["arrival_rate"]
    for i in (0, 1):
        assert (tmp_path / f"locust-worker-{i}.log").exists()
    assert (tmp_path / "locust_stats.csv").exists() and (tmp_path / "locust.html").exists()
