"""make bench without the stack: wrk's script and summary (against a local HTTP server), CPU grouping,
vLLM flags, repeats, spread and verdicts, the report, the fairness checks (threads, a streamed baseline),
section selection, and the instrumentation switch."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from loadtests.bench import cpu, embed, instrumentation, llm, raw_bert, results, run, spread, wrk
from stack import prom
from stack.config import Goal, load
from stack.local import ray_head
from stack.polling import eventually
from stack.serving.observability import metrics as serveops_metrics
from stack.serving.observability import switch


class _Batches(BaseHTTPRequestHandler):
    """Answers every POST with batch_size 1, 4, 1, 4, ...; every fifth request with a 503."""

    count = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            type(self).count += 1
            n = type(self).count
        answer = {"batch_size": 1 if n % 2 else 4}
        status, body = (503, b"{}") if n % 5 == 0 else (200, json.dumps(answer).encode())
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def batches_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Batches)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/embed"
    server.shutdown()


def test_wrk_counts_failures_and_the_harmonic_mean_of_a_field(batches_url: str) -> None:
    result = wrk.run(batches_url, json.dumps({"text": "it's [[quoted]]"}), 2, 1, field="batch_size")
    assert result.requests > 20
    assert 0.1 < result.failed / result.requests < 0.3  # every fifth answer is a 503
    # 1 and 4 alternate: the harmonic mean is 2 / (1 + 1/4) = 1.6, the arithmetic one 2.5.
    assert result.field_harmonic_mean == pytest.approx(1.6, abs=0.1)
    assert result.ok_per_s == pytest.approx((result.requests - result.failed) / result.duration_s)
    assert 0 < result.p50_ms <= result.p99_ms
    plain = wrk.run(batches_url, "{}", 1, 1)
    assert plain.field_harmonic_mean is None and plain.requests > 0


def test_wrk_script_and_parse() -> None:
    script = wrk.lua_script('{"a": "]]"}', {"serve_multiplexed_model_id": "acme"}, field="batch_size")
    assert 'wrk.body = [==[{"a": "]]"}]==]' in script
    assert 'wrk.headers["serve_multiplexed_model_id"] = "acme"' in script
    assert '"batch_size"%s*:' in script and "FIELD" not in script
    line = ('{"requests": 10, "duration_us": 2000000, "non_2xx": 1, "socket_errors": 1, "p50_us": 1500, '
            '"p90_us": 2000, "p99_us": 3000, "mean_us": 1600.0, "field_seen": 0, "field_inverse_sum": 0.0}')
    parsed = wrk.parse("Running 2s test\n" + line + "\n", connections=4)
    assert (parsed.requests, parsed.failed, parsed.p50_ms, parsed.ok_per_s) == (10, 2, 1.5, 4.0)
    assert parsed.field_harmonic_mean is None
    with pytest.raises(RuntimeError, match="no summary"):
        wrk.parse("unable to connect", connections=1)


def test_cpu_groups_and_per_request_figures() -> None:
    assert cpu.group("ray::ServeReplica:embed:Embedder.handle_request_with_rejection") == \
        "ray::ServeReplica:embed:Embedder"
    assert cpu.group("ray::ProxyActor") == "ray::ProxyActor"
    assert cpu.group("VLLM::Worker") == "vllm"
    assert cpu.group("/usr/bin/prometheus --config.file=x") == "other"
    before = {1: ("ray::ProxyActor", 1.0), 2: ("other", 5.0)}
    after = {1: ("ray::ProxyActor", 1.5), 2: ("other", 5.1), 3: ("vllm", 0.2)}  # pid 3 started meanwhile
    figures = cpu.per_request_ms(before, after, requests=100)
    assert figures == {"ray::ProxyActor": 5.0, "vllm": 2.0, "other": 1.0, "all": 8.0}
    snap = cpu.snapshot()
    assert snap and all(cpu_s >= 0 for _, cpu_s in snap.values())


def test_engine_kwargs_become_vllm_flags() -> None:
    flags = llm.engine_flags({"dtype": "float32", "max_model_len": 512, "enforce_eager": True,
                              "tensor_parallel_size": 1, "trust_remote_code": False})
    assert flags == ["--dtype", "float32", "--max-model-len", "512", "--enforce-eager",
                     "--tensor-parallel-size", "1"]
    model = load().profile("cpu").llm.models[0]
    assert "--max-model-len" in llm.engine_flags(model.engine_kwargs)


def test_goals_judge_and_report() -> None:
    with pytest.raises(ValidationError):
        Goal(min=1, max=2)
    goals = {"batching_gain": Goal(min=1.5), "ttft_overhead_ms": Goal(max=15),
             "bert_serve_efficiency": Goal(min=0.7), "gpu_texts_efficiency": Goal(min=0.5),
             "llm_throughput_ratio": Goal(min=0.9)}
    baseline = {"value": 1.2, "per_repeat": [1.1, 1.3]}  # the figure with no levers, same run
    doc = {"batching_gain": {**spread.figure([2.0, 2.1]), "baseline": baseline},
           "ttft_overhead_ms": {**spread.figure([40.0], digits=1)},
           "bert_serve_efficiency": {"value": math.nan},
           "gpu_texts_efficiency": {"value": None, "skipped": "no GPU"},
           "llm_throughput_ratio": spread.figure([1.0, 0.85]),
           "detection_latency_s": {"alerts": {"ServeDeploymentFailed": {
               "experiment": "bad-rollout", "detect_s": 12.0, "condition_s": 11.5, "alerting_s": 0.5,
               "bound_s": 10.0, "within_bound": True}}}}
    results.judge(doc, goals)
    assert (doc["batching_gain"]["verdict"], doc["batching_gain"]["met"]) == ("met", True)
    assert (doc["ttft_overhead_ms"]["verdict"], doc["ttft_overhead_ms"]["met"]) == ("missed", False)
    assert doc["ttft_overhead_ms"]["goal"] == "<= 15"
    assert doc["ttft_overhead_ms"]["noise"] == {"repeats": 1, "judged": False, "spread": 0.0, "margin": 25.0}
    assert doc["bert_serve_efficiency"]["met"] is False  # NaN never meets a goal
    assert "met" not in doc["gpu_texts_efficiency"]
    # The mean (0.925) meets >= 0.9; one repeat does not: noisy, and met is False.
    assert (doc["llm_throughput_ratio"]["verdict"], doc["llm_throughput_ratio"]["met"]) == ("noisy", False)
    table = results.markdown(doc)
    assert "| figure | value | per repeat (spread) | baseline | goal | verdict | what |" in table
    assert "| batching_gain | 2.05 | 2, 2.1 (0.1) | 1.2 (1.1, 1.3) | >= 1.5 | met |" in table
    assert "| ttft_overhead_ms | 40.0 | 1 repeat |  | <= 15 | **missed** (1 repeat) |" in table
    assert "| llm_throughput_ratio | 0.925 | 1, 0.85 (0.15) |  | >= 0.9 | **noisy** |" in table
    assert "not measured: no GPU" in table
    assert "| ServeDeploymentFailed (bad-rollout) | 12.0 | 11.5 | 0.5 | 10 | True |" in table


def test_spread_figure_keeps_every_repeat() -> None:
    assert spread.figure([0.61234, 0.7]) == {"value": 0.656, "per_repeat": [0.612, 0.7],
                                             "spread": {"min": 0.612, "max": 0.7}}
    one = spread.figure([12.34], digits=1)
    assert one["value"] == one["per_repeat"][0] == 12.3 and isinstance(one["value"], float)
    with pytest.raises(ValueError, match="at least one repeat"):
        spread.figure([])


@pytest.mark.parametrize(("goal", "per_repeat", "verdict"), [
    (Goal(min=1.5), [2.0, 2.1], "met"),  # every repeat meets, spread 0.1 within the margin 0.55
    (Goal(min=1.5), [1.0, 1.2], "missed"),  # every repeat misses
    (Goal(min=1.5), [2.0, 1.4], "noisy"),  # the mean 1.7 meets, one repeat does not
    (Goal(min=1.5), [1.6, 2.6], "noisy"),  # both meet, but they differ by 1.0 against a margin of 0.6
    (Goal(max=15), [10.0, 12.0], "met"),
    (Goal(max=15), [5.0, 30.0], "noisy"),  # the mean 17.5 misses, one repeat meets
    (Goal(max=0), [0, 0, 0], "met"),  # a count at its bound: no spread, no margin
    (Goal(max=15), [14.0], "met"),  # one repeat: its value alone decides
    (Goal(max=15), [16.0], "missed"),
    (Goal(min=0.9), [1.0, math.nan], "missed"),
])
def test_verdict(goal: Goal, per_repeat: list[float], verdict: str) -> None:
    assert spread.verdict(spread.figure(per_repeat)["value"], per_repeat, goal) == verdict


@pytest.mark.parametrize(("per_repeat", "floor", "verdict"), [
    ([0.78, 0.81], 0.45, "noisy"),  # a miss by 0.17 where the same setting moved 0.45 against itself
    ([0.78, 0.81], 0.1, "missed"),  # ... and where it moved 0.1: a miss the noise cannot explain
    ([1.0, 1.01], 0.05, "noisy"),  # a pass by 0.035 inside an A/A floor of 0.05
    ([1.0, 1.01], 0.01, "met"),
    ([1.0, 1.01], math.nan, "noisy"),
])
def test_verdict_with_an_aa_floor(per_repeat: list[float], floor: float, verdict: str) -> None:
    goal = Goal(min=0.97)
    assert spread.verdict(spread.figure(per_repeat)["value"], per_repeat, goal, floor) == verdict
    doc = {"instrumentation_throughput_ratio": {**spread.figure(per_repeat), "null": {"floor": floor}}}
    results.judge(doc, {"instrumentation_throughput_ratio": goal})
    judged = doc["instrumentation_throughput_ratio"]
    assert judged["verdict"] == verdict and judged["met"] is (verdict == "met")
    assert judged["noise"]["null_floor"] == floor or math.isnan(floor)


def test_verdict_needs_every_repeat_not_the_mean() -> None:
    """The case a mean-only judge gets wrong: it would pass this figure."""
    goal, per_repeat = Goal(max=1.03), [1.0, 1.01, 1.05]
    value = spread.figure(per_repeat)["value"]
    assert goal.met(value)  # the mean alone passes ...
    assert spread.verdict(value, per_repeat, goal) != "met"  # ... every repeat does not
    doc = {"instrumentation_latency_ratio": spread.figure(per_repeat)}
    results.judge(doc, {"instrumentation_latency_ratio": goal})
    assert doc["instrumentation_latency_ratio"]["met"] is False


def test_baseline_only_when_measured() -> None:
    doc = {"batching_gain": {"value": 2.0, "baseline": {"value": None}},
           "bert_serve_efficiency": {"value": 0.5, "baseline": {"value": 0.4, "per_repeat": [0.4]}}}
    table = results.markdown(doc)
    assert "| batching_gain | 2.0 |  |  |  |  |" in table
    assert "| bert_serve_efficiency | 0.5 |  | 0.4 |  |  |" in table


def test_streamed_baseline_and_ttft_at_concurrency_1() -> None:
    llm.require_streamed({"median_tpot_ms": 5.05, "median_itl_ms": 0.004}, "vLLM")  # bursts of events: fine
    with pytest.raises(RuntimeError, match="did not stream"):
        llm.require_streamed({"median_tpot_ms": 0.002}, "vLLM's own server")  # the whole answer at once
    with pytest.raises(RuntimeError, match="did not stream"):
        llm.require_streamed({}, "vLLM's own server")
    serve_c1, vllm_c1 = [{"median_ttft_ms": 60.0}, {"median_ttft_ms": 64.0}], [{"median_ttft_ms": 50.0}] * 2
    serve_at, vllm_at = [{"median_ttft_ms": 240.0}, {"median_ttft_ms": 260.0}], [{"median_ttft_ms": 55.0}] * 2
    figure = llm.ttft_figure(serve_c1, vllm_c1, serve_at, vllm_at)
    assert (figure["value"], figure["per_repeat"], figure["spread"]) == (12.0, [10.0, 14.0],
                                                                         {"min": 10.0, "max": 14.0})
    assert figure["at_throughput_concurrency"]["value"] == 195.0
    assert figure["at_throughput_concurrency"]["per_repeat"] == [185.0, 205.0]


def _execed(proc: subprocess.Popen[Any], argv0: str) -> None:
    """Wait until proc's /proc entry shows argv0. Popen returns once exec has closed its error pipe, a
    moment before the kernel sets the new command line and environment (create_elf_tables): under
    make test's load a test read an empty environment there."""
    def shows() -> bool:
        return Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")[0] == argv0.encode()

    assert eventually(shows, timeout_s=10, every_s=0.01), f"{proc.args} did not exec {argv0}"


def _exited(pid: int) -> bool:
    """pid has exited (a zombie has no command line)."""
    try:
        return not Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


def test_standalone_gets_the_serve_engines_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's settings as they are: the worker's binding is vLLM's doing, not an input (an explicit
    VLLM_CPU_OMP_THREADS_BIND of the same cores is another configuration than the Serve engine's)."""
    assert llm.thread_env({"OMP_NUM_THREADS": "1", "GOMP_CPU_AFFINITY": "0", "PATH": "/bin"}) == \
        {"OMP_NUM_THREADS": "1"}
    assert llm.thread_env({"OMP_NUM_THREADS": "2", "VLLM_CPU_OMP_THREADS_BIND": "0-1"}) == \
        {"OMP_NUM_THREADS": "2", "VLLM_CPU_OMP_THREADS_BIND": "0-1"}
    monkeypatch.setattr(llm, "local_pid", lambda pattern: None)
    with pytest.raises(RuntimeError, match="OMP_NUM_THREADS: no VLLM::Worker or VLLM::EngineCore"):
        llm.serve_engine_threads()
    with pytest.raises(RuntimeError, match="no VLLM::Worker process of the Serve engine"):
        llm.serve_worker_binding()
    for env, expected in (({"GOMP_CPU_AFFINITY": "0"}, None),
                          ({"OMP_NUM_THREADS": "1", "GOMP_CPU_AFFINITY": "0"}, {"OMP_NUM_THREADS": "1"})):
        engine = subprocess.Popen(["sleep", "30"], env=env)  # stands in for VLLM::Worker: a real environ
        try:
            _execed(engine, "sleep")
            monkeypatch.setattr(llm, "local_pid", lambda pattern, pid=engine.pid: pid)
            if expected is None:
                with pytest.raises(RuntimeError, match="has none; the standalone server would run unpinned"):
                    llm.serve_engine_threads()
            else:
                assert llm.serve_engine_threads() == expected
        finally:
            engine.kill()
            engine.wait()


def test_a_worker_binding_is_its_cores_and_its_openmp_binding() -> None:
    """What standalone compares: a worker on other cores, or bound by another OpenMP setting, differs."""
    def binding(cores: str, env: dict[str, str]) -> dict[str, Any]:
        proc = subprocess.Popen(["taskset", "-c", cores, "sleep", "30"], env=env)  # stands in for a worker
        try:
            _execed(proc, "sleep")
            return llm.worker_binding(proc.pid)
        finally:
            proc.kill()
            proc.wait()

    here = llm.sched_group(os.getpid())
    assert binding("0", {"GOMP_CPU_AFFINITY": "0"}) == {"cores": [0], "GOMP_CPU_AFFINITY": "0",
                                                        "sched_group": here}
    if len(os.sched_getaffinity(0)) > 1:
        assert binding("0", {"GOMP_CPU_AFFINITY": "0"}) != binding("1", {"GOMP_CPU_AFFINITY": "1"})
    assert binding("0", {"GOMP_CPU_AFFINITY": "0"}) != binding("0", {})


def test_a_worker_in_a_session_of_its_own_is_bound_otherwise() -> None:
    """With autogroups a session of its own shares CPU apart (niceness no longer counts against the
    load generator): a worker started so differs from one in this session; without them, the same."""
    mine = subprocess.Popen(["sleep", "30"])
    apart = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        _execed(mine, "sleep")
        _execed(apart, "sleep")
        sysctl = Path("/proc/sys/kernel/sched_autogroup_enabled")
        on = sysctl.exists() and sysctl.read_text().strip() == "1"  # read here, not through llm
        assert llm.autogroups() is on
        if on:
            assert llm.sched_group(mine.pid) == llm.sched_group(os.getpid()) is not None
            assert llm.sched_group(apart.pid) != llm.sched_group(os.getpid())
        else:
            assert llm.sched_group(mine.pid) is llm.sched_group(apart.pid) is None
    finally:
        for proc in (mine, apart):
            proc.kill()
            proc.wait()


def test_the_standalone_worker_is_found_by_its_process_group() -> None:
    """Two engines run side by side during the LLM section: the standalone's worker is the one in its
    process group, not the Serve engine's."""
    ours = subprocess.Popen(["bash", "-c", "exec -a VLLM::Worker sleep 30"], process_group=0)
    other = subprocess.Popen(["bash", "-c", "exec -a VLLM::Worker sleep 30"], process_group=0)
    # Not the test's own group: under `make test` the stack's engine may share it.
    bare = subprocess.Popen(["sleep", "30"], process_group=0)
    try:
        for proc, argv0 in ((ours, "VLLM::Worker"), (other, "VLLM::Worker"), (bare, "sleep")):
            _execed(proc, argv0)
        assert llm.group_worker(ours.pid) == ours.pid
        assert llm.group_worker(other.pid) == other.pid
        assert llm.group_worker(bare.pid) is None
    finally:
        for proc in (ours, other, bare):
            proc.kill()
            proc.wait()


# Stands in for `python -m vllm.entrypoints.openai.api_server`: a worker process named like vLLM's and
# an HTTP server that answers /v1/models on --port (no single quote in it: sh gets it in one).
FAKE_VLLM = """import http.server, os, subprocess, sys, time
port = int(sys.argv[sys.argv.index("--port") + 1])
worker = subprocess.Popen(["bash", "-c", "exec -a VLLM::Worker sleep 60"])
while not open(f"/proc/{worker.pid}/cmdline", "rb").read().startswith(b"VLLM::Worker"):
    time.sleep(0.01)  # serves only once the worker runs, as vLLM does
open(os.environ["FAKE_WORKER_PID"], "w").write(str(worker.pid))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"{}")
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def test_standalone_shares_cpu_like_the_serve_engine(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    """The standalone server starts in this session, whose scheduling group a stack started from here
    is in, and is stopped whole; a worker bound otherwise fails the section, naming why."""
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\nshift 2\nexec {sys.executable} -c '{FAKE_VLLM}' \"$@\"\n")
    fake.chmod(0o755)
    monkeypatch.setattr(llm.sys, "executable", str(fake))
    ops = load()
    model = ops.profile("cpu").llm.models[0]
    child = subprocess.Popen(["sleep", "30"])  # bound as any child of this process is
    try:
        _execed(child, "sleep")
        like_here = llm.worker_binding(child.pid)
    finally:
        child.kill()
        child.wait()
    assert like_here["sched_group"] == llm.sched_group(os.getpid())
    env = {"FAKE_WORKER_PID": str(tmp_path / "worker.pid")}
    with llm.standalone(ops, model, env, tmp_path / "server.log", timeout_s=30, binding=like_here) as url:
        assert httpx.get(f"{url}/v1/models").status_code == 200
        worker = int((tmp_path / "worker.pid").read_text())
        assert llm.sched_group(worker) == llm.sched_group(os.getpid())
    assert eventually(lambda: _exited(worker), timeout_s=10, every_s=0.05)  # stopped with its group
    elsewhere = {**like_here, "sched_group": "/autogroup-0 nice 0"}
    with pytest.raises(RuntimeError, match="started from another session"):
        with llm.standalone(ops, model, env, tmp_path / "server.log", timeout_s=30, binding=elsewhere):
            pass


def test_standalone_runs_at_the_serve_engines_niceness(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = subprocess.Popen(["nice", "-n", "7", "sleep", "30"])  # stands in for VLLM::Worker
    try:
        _execed(engine, "sleep")
        monkeypatch.setattr(llm, "local_pid", lambda pattern, pid=engine.pid: pid)
        assert llm.serve_engine_nice() == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 7)
    finally:
        engine.kill()
        engine.wait()
    monkeypatch.setattr(llm, "local_pid", lambda pattern: None)
    with pytest.raises(RuntimeError, match="no VLLM::Worker or VLLM::EngineCore"):
        llm.serve_engine_nice()


def test_raw_bert_runs_at_the_given_threads_and_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    seen: list[int] = []

    class _Model:
        device = "cpu"

        def encode(self, batch: list[str]) -> None:
            seen.append(torch.get_num_threads())

    monkeypatch.setattr(raw_bert, "_model", lambda: _Model())
    before = torch.get_num_threads()
    threads = 1 if before > 1 else 2
    result = raw_bert.throughput(["a text"], 4, 0.05, threads)
    assert set(seen) == {threads} and result["torch_threads"] == threads and result["batch_size"] == 4
    assert torch.get_num_threads() == before


def test_replica_torch_threads() -> None:
    ops = load()
    options = ops.profile("cpu").deployment(embed.APP, embed.DEPLOYMENT)
    threads, source = embed.replica_torch_threads(options, {"OMP_NUM_THREADS": "3"})
    assert (threads, source) == (options.torch_threads, source) and "ops config" in source  # config first
    unset = options.model_copy(update={"torch_threads": None, "ray_actor_options": {"num_cpus": 2.5}})
    assert embed.replica_torch_threads(unset, {})[0] == 2  # Ray: the floor of the actor's CPUs
    assert embed.replica_torch_threads(unset, {"OMP_NUM_THREADS": "3"})[0] == 3
    bare = options.model_copy(update={"torch_threads": None, "ray_actor_options": None})
    assert embed.replica_torch_threads(bare, {})[0] == 1  # Serve's default of 1 CPU per replica
    quarter = options.model_copy(update={"torch_threads": None, "ray_actor_options": {"num_cpus": 0.25}})
    assert embed.replica_torch_threads(quarter, {})[0] == 1


def test_instrumentation_pairs_each_off_run_with_its_neighbours() -> None:
    def run(p50: float, rps: float) -> dict[str, Any]:
        return {"/r": {"latency": {"p50_ms": p50}, "throughput": {"ok_per_s": rps}},
                "/s": {"latency": {"p50_ms": 1.0}, "throughput": {"ok_per_s": 100.0}}}

    # full, off, full, off, full: off run 0 against full 0 and 1, off run 1 against full 1 and 2.
    runs = {"full": [run(10.0, 100.0), run(12.0, 90.0), run(14.0, 80.0)],
            "off": [run(10.0, 100.0), run(10.0, 100.0)]}
    r = instrumentation.pair_ratios(runs, "/r")
    assert r["latency_ratio"]["per_repeat"] == [1.1, 1.3] and r["latency_ratio"]["value"] == 1.2
    assert r["throughput_ratio"]["per_repeat"] == [0.95, 0.85]
    # A/A: each full run against the next one.
    assert r["latency_ratio"]["null"]["per_repeat"] == [1.2, 1.167]
    assert r["throughput_ratio"]["null"]["per_repeat"] == [0.9, 0.889]
    per_route = {route: instrumentation.pair_ratios(runs, route) for route in ("/r", "/s")}
    assert instrumentation.worst(per_route, "latency_ratio", max) == [1.1, 1.3]
    assert instrumentation.worst(per_route, "throughput_ratio", min) == [0.95, 0.85]
    assert instrumentation.null_floor(per_route, "latency_ratio") == 0.2  # /r's 12 ms after 10; /s held
    assert instrumentation.null_floor(per_route, "throughput_ratio") == 0.111
    with pytest.raises(ValueError, match="full run on either side"):
        instrumentation.pair_ratios({"full": runs["full"][:2], "off": runs["off"]}, "/r")


def test_instrumentation_table_shows_each_run_and_its_cpu() -> None:
    def run(rps: float, ms: float) -> dict[str, Any]:
        spent = {"ray::ServeReplica:embed:Embedder": ms, "all": ms + 1}
        return {"/r": {"latency": {"p50_ms": 10.0}, "throughput": {"ok_per_s": rps, "cpu_ms": spent}}}

    runs = {"full": [run(100.0, 6.0), run(120.0, 5.0), run(110.0, 7.0)],
            "off": [run(90.0, 8.0), run(100.0, 6.0)]}
    runs["off"][0]["/r"]["throughput"]["cpu_ms"]["ray::ProxyActor"] = 3.0  # busiest in one run only
    per_route = {"/r": instrumentation.pair_ratios(runs, "/r")}
    figure = {"per_route": per_route, "null": {"floor": 0.2}}
    table = instrumentation.markdown(figure)
    assert "| /r | full | 100, 120, 110 | 10, 10, 10 | ServeReplica:embed:Embedder 6.00, all 7.00 |" in table
    assert "| /r | off | 90, 100 | 10, 10 | ServeReplica:embed:Embedder 7.00, all 8.00 |" in table
    doc = {"instrumentation_throughput_ratio": figure,
           "instrumentation_latency_ratio": {"null": {"floor": 0.1}}}
    assert "A/A floor: throughput 0.2, latency 0.1" in results.markdown(doc)


def test_every_goal_names_a_figure_the_bench_fills() -> None:
    owed = {name for names in run.OWES.values() for name in names} | {"gpu_texts_efficiency"}
    assert set(load().bench.goals) <= owed
    assert set(results.FIGURES) - {"texts_efficiency"} <= set(load().bench.goals)


def test_bench_settings_from_env() -> None:
    assert run.settings({}) == ("full", list(run.SECTIONS))
    assert run.settings({"BENCH": "smoke", "ONLY": "llm, embed"}) == ("smoke", ["embed", "llm"])
    # the smoke set restarts nothing and reruns no chaos: make test runs it on the clean stack
    assert run.settings({"BENCH": "smoke"}) == ("smoke", ["embed", "llm", "fuzz"])
    assert run.settings({"BENCH": "smoke", "ONLY": "levers"}) == ("smoke", ["levers"])
    with pytest.raises(SystemExit, match="BENCH"):
        run.settings({"BENCH": "fast"})
    with pytest.raises(SystemExit, match="unknown sections"):
        run.settings({"ONLY": "embed,gpu"})


def test_gpu_figure_only_on_a_gpu() -> None:
    figures = {"texts_efficiency": {"value": 0.8, "inputs": {"concurrency": 4}}}
    assert run.gpu_figure(figures, "cpu", None)["value"] is None
    on_gpu = run.gpu_figure(figures, "cuda", "NVIDIA H100 80GB HBM3")
    assert (on_gpu["value"], on_gpu["card"]) == (0.8, "NVIDIA H100 80GB HBM3")


def test_machine_record() -> None:
    machine = results.machine("cpu")
    assert machine["cores"] >= 1 and machine["memory_gb"] > 0 and machine["cpu"]
    assert "ray" in machine["versions"] and "torch" in machine["versions"]


def test_instrumentation_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    ops = load()
    cluster = ops.profile("cpu").cluster
    assert switch.mode({}) == "full"
    with pytest.raises(ValueError, match="SERVEOPS_INSTRUMENTATION"):
        switch.mode({switch.ENV: "partial"})
    inherited = {switch.ENV: "off", "RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH": "x"}
    off = ray_head.head_env(ops, cluster, base=inherited)
    assert off[switch.ENV] == "off" and "RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH" not in off
    full = ray_head.head_env(ops, cluster, base={})
    assert full[switch.ENV] == "full" and full["RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH"]
    monkeypatch.setenv(switch.ENV, "off")
    serveops_metrics.metrics.cache_clear()
    try:
        m = serveops_metrics.metrics()
        m.requests.inc(tags={"route": "/embed", "outcome": "ok", "error_class": "none"})
        m.input_chars.observe(3, tags={"route": "/embed"})
        assert type(m.requests).__name__ == "_Off"
    finally:
        serveops_metrics.metrics.cache_clear()


def test_prometheus_times_with_nanoseconds() -> None:
    assert prom.parse_time("2026-11-27T21:00:00.123456789Z") == pytest.approx(1795813200.123456789)
    assert prom.parse_time("2026-11-27T21:00:00Z") == 1795813200.0


def test_llm_figures_alternate_and_pin_the_baseline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The section's flow with fake runs: a settle run per side first, who goes first swaps each repeat,
    TTFT runs at concurrency 1, the standalone server gets the engine's threads, and a baseline that did
    not stream has no TTFT."""
    ops = load()
    mode = ops.bench.modes["full"].model_copy(update={"repeats": 2})
    calls: list[tuple[str, int, int]] = []
    seeds: list[tuple[str, int]] = []
    envs: list[dict[str, Any]] = []

    @contextlib.contextmanager
    def standalone(ops: Any, model: Any, env: dict[str, str], log: Path, **kw: Any) -> Iterator[str]:
        envs.append({**env, "nice": str(kw.get("nice")), "binding": kw.get("binding")})
        yield "http://bare"

    def bench(url: str, model: Any, llm_: Any, prompts: int, concurrency: int, out: Path,
              seed: int = 0) -> dict[str, Any]:
        calls.append(("vllm" if url == "http://bare" else "serve", prompts, concurrency))
        seeds.append(("vllm" if url == "http://bare" else "serve", seed))
        serve = url != "http://bare"
        return {"completed": float(prompts), "output_throughput": 90.0 if serve else 100.0,
                "median_ttft_ms": (60.0 if concurrency == 1 else 200.0) if serve else 50.0,
                "median_tpot_ms": 5.0}

    monkeypatch.setattr(llm, "standalone", standalone)
    monkeypatch.setattr(llm, "bench", bench)
    monkeypatch.setattr(llm, "serve_engine_threads", lambda: {"OMP_NUM_THREADS": "1"})
    monkeypatch.setattr(llm, "serve_engine_nice", lambda: 15)
    monkeypatch.setattr(llm, "serve_worker_binding", lambda: {"cores": [0], "GOMP_CPU_AFFINITY": "0",
                                                                  "sched_group": "/autogroup-1 nice 0"})
    doc = llm.figures(ops, "cpu", mode, tmp_path, breakdown=False)
    c, n, n1 = ops.bench.llm.concurrency, mode.llm_prompts, mode.llm_ttft_prompts
    # Each server sees each run's prompts once, and the same ones as the other server.
    for side in ("serve", "vllm"):
        mine = [seed for who, seed in seeds if who == side]
        assert len(set(mine)) == len(mine) == 5
    assert sorted(seed for who, seed in seeds if who == "serve") == sorted(seed for who, seed in seeds
                                                                          if who == "vllm")
    assert envs[0]["binding"] == {"cores": [0], "GOMP_CPU_AFFINITY": "0",  # the worker checked against it
                                  "sched_group": "/autogroup-1 nice 0"}
    # One discarded settle run per side, then the measured ones.
    assert calls == [("serve", n, c), ("vllm", n, c),
                     ("serve", n, c), ("vllm", n, c), ("serve", n1, 1), ("vllm", n1, 1),
                     ("vllm", n, c), ("serve", n, c), ("vllm", n1, 1), ("serve", n1, 1)]
    assert envs[0]["OMP_NUM_THREADS"] == "1" and envs[0]["nice"] == "15"
    ratio, ttft = doc["llm_throughput_ratio"], doc["ttft_overhead_ms"]
    assert (ratio["value"], ratio["per_repeat"], ratio["inputs"]["prompts"]) == (0.9, [0.9, 0.9], n)
    assert (ttft["value"], ttft["per_repeat"], ttft["inputs"]["concurrency"]) == (10.0, [10.0, 10.0], 1)
    assert ttft["at_throughput_concurrency"]["value"] == 150.0

    # A baseline in one burst: no TTFT figure, and why; the throughput ratio still stands.
    monkeypatch.setattr(llm, "bench", lambda *a: {**bench(*a), "median_tpot_ms": 0.001})
    doc = llm.figures(ops, "cpu", mode, tmp_path, breakdown=False)
    assert doc["ttft_overhead_ms"]["value"] is None
    assert re.search(r"vLLM's own server .* did not stream", doc["ttft_overhead_ms"]["error"])
    assert doc["llm_throughput_ratio"]["value"] == 0.9


def test_embed_figures_keep_repeats_and_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    ops = load()
    mode = ops.bench.modes["full"].model_copy(update={"repeats": 2})
    options = ops.profile("cpu").deployment(embed.APP, embed.DEPLOYMENT)
    unbatched = {"on": False}
    raw_threads: list[int] = []

    @contextlib.contextmanager
    def user_config(ops: Any, **values: Any) -> Iterator[None]:
        unbatched["on"] = True
        yield
        unbatched["on"] = False

    def saturate(ops: Any, body: dict[str, Any], connections: int, mode: Any) -> dict[str, Any]:
        rate = 20.0 if unbatched["on"] else (5.0 if isinstance(body["text"], list) else 50.0)
        return {"ok_per_s": rate, "failed": 0, "mean_batch_size": 1.0 if unbatched["on"] else 8.0}

    def throughput(texts: list[str], batch_size: int, seconds: float, threads: int) -> dict[str, Any]:
        raw_threads.append(threads)
        return {"texts_per_s": 100.0 * (2 if batch_size > 1 else 1), "batch_size": batch_size,
                "torch_threads": threads, "device": "cpu"}

    monkeypatch.setattr(embed, "user_config", user_config)
    monkeypatch.setattr(embed, "saturate", saturate)
    monkeypatch.setattr(raw_bert, "throughput", throughput)
    monkeypatch.setattr(raw_bert, "tokens", lambda text: 19)
    doc = embed.figures(ops, "cpu", mode)
    assert set(raw_threads) == {options.torch_threads}
    assert doc["bert_serve_efficiency"]["per_repeat"] == [0.25, 0.25]  # 50 / raw 200 at batch 8
    assert doc["batching_gain"]["per_repeat"] == [2.5, 2.5]
    assert doc["texts_efficiency"]["per_repeat"] == [0.8, 0.8]  # 5 lists/s x 32 texts / 200
    inputs = doc["bert_serve_efficiency"]["inputs"]
    assert inputs["torch_threads_in_replica"] == inputs["torch_threads_raw"] == options.torch_threads
    assert doc["texts_efficiency"]["raw"]["device"] == "cpu"  # run.gpu_figure reads it
    assert run.gpu_figure(doc, "cpu", None)["value"] is None


def test_a_baseline_that_did_not_stream_gives_no_ttft_figure_and_says_why() -> None:
    serve = [{"median_ttft_ms": 70.0}]
    burst = [{"median_ttft_ms": 150.0, "median_tpot_ms": 0.003}]  # the whole answer at once
    streamed = [{"median_ttft_ms": 50.0, "median_tpot_ms": 6.0}]
    got = llm.ttft_or_why_not(serve, burst, serve, burst)
    assert got["value"] is None and "did not stream" in got["error"] and got["vllm_median_tpot_ms"] == [0.003]
    assert llm.ttft_or_why_not(serve, streamed, serve, streamed)["value"] == 20.0


def test_a_detection_bound_is_the_for_of_the_rule_the_alert_comes_from() -> None:
    """Burn-rate pages share a name; the expected labels pick the rule (a run read the 1h page's bound
    as the 1d ticket's 1h + ...: 10,810 s for a 2 m page)."""
    def burn(duration: int, window: str, severity: str) -> dict[str, Any]:
        return {"name": "ServeErrorBudgetBurn", "duration": duration,
                "labels": {"long_window": window, "severity": severity}}

    rules = [burn(120, "1h", "critical"), burn(900, "6h", "critical"), burn(3600, "1d", "warning"),
             {"name": "ServeReplicaRestarts", "duration": 0, "labels": {"severity": "warning"}}]
    assert prom.rule_for_s(rules, "ServeErrorBudgetBurn", {"slo": "embed", "long_window": "1h"}) == 120
    assert prom.rule_for_s(rules, "ServeErrorBudgetBurn", {"long_window": "6h"}) == 900
    assert prom.rule_for_s(rules, "ServeErrorBudgetBurn", {"slo": "embed"}) == 3600  # ambiguous: the longest
    assert prom.rule_for_s(rules, "ServeReplicaRestarts", {"application": "embed"}) == 0
    assert prom.rule_for_s(rules, "NoSuchAlert", {}) is None


def test_every_llm_run_draws_prompts_no_server_has_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run on prompts a server has already cached is answered from its prefix cache, not computed: each
    run gets a seed of its own, which both servers share."""
    seeds = [llm.prompt_seed(kind, r) for r in range(5) for kind in ("at", "c1")]
    seeds += [llm.prompt_seed("settle"), llm.prompt_seed("mp")]
    assert len(set(seeds)) == len(seeds)
    seen: list[list[str]] = []

    def fake_run(args: list[str]) -> dict[str, Any]:
        seen.append(args)
        return {"completed": 4, "failed": 0, "total_output_tokens": 8, "output_throughput": 1.0}

    monkeypatch.setattr(llm.vllm_bench, "run", fake_run)
    ops = load()
    model = ops.profile("cpu").llm.models[0]
    llm.bench("http://127.0.0.1:1", model, ops.bench.llm, 4, 1, Path("/tmp"), seed=23)
    assert seen[0][seen[0].index("--seed") + 1] == "23"
