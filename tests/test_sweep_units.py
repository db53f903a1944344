"""The rate sweep (loadtests/sweep) without the stack: arrivals, judges, knee, advice, Prometheus
figures, reports, and the driver end to end against tiny fake servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadtests.settings import resolve as resolve_settings
from loadtests.sweep import plots, report
from loadtests.sweep import run as sweep_run
from loadtests.sweep.advice import recommend
from loadtests.sweep.driver import Record, StepRun
from loadtests.sweep.families import build
from loadtests.sweep.figures import Figures, in_flight, step_figures
from loadtests.sweep.judge import Verdict, find_knee, judge
from loadtests.sweep.plan import Plan, PlanError, arrivals, rates, resolve
from loadtests.sweep.server import ServerFigures, fetch, probes, scalar, window_expr
from loadtests.sweep.sweep import FamilyResult, Step, advise, sweep_family
from stack.config import OpsConfig, load
from stack.serving.settings import Goodput

MODEL = "tiny-llama"


@pytest.fixture(scope="module")
def ops() -> OpsConfig:
    return load()


# --- plan and arrivals ---


def test_arrivals_repeat_for_a_seed_and_stay_inside_the_step() -> None:
    a = arrivals(20, 5, "7/embed/0")
    assert a == arrivals(20, 5, "7/embed/0")
    assert a != arrivals(20, 5, "7/embed/1")
    assert a == sorted(a) and all(0 <= t < 5 for t in a)


def test_arrivals_keep_the_mean_rate() -> None:
    a = arrivals(100, 200, "mean")
    assert abs(len(a) / 200 - 100) < 3  # 20 000 expected, sd ~141: 3/s is four sd
    gaps = [b - x for x, b in itertools.pairwise(a)]
    assert min(gaps) < 0.001 < 0.03 < max(gaps)  # exponential: bunched and sparse, not a metronome


def test_rates_grow_geometrically() -> None:
    assert rates(1, 2, 4) == (1, 2, 4, 8)
    assert rates(20, 1.5, 3) == (20, 30, 45)


def test_plan_from_the_ops_config(ops: OpsConfig) -> None:
    sweep = ops.loadtest.sweep
    full = resolve(ops, {})
    assert full.mode == "full" and full.families == ("llm", "embed", "classify")
    for name, cfg in sweep.families.items():
        assert len(full.rates[name]) == cfg.max_steps and full.rates[name][0] == cfg.start_rate_per_s
        assert full.peaks[name] == cfg.peak_rate_per_s
    short = resolve(ops, {"SWEEP": "short", "FAMILIES": "embed,llm"})
    assert short.families == ("llm", "embed")
    assert all(len(short.rates[f]) == 3 for f in short.families)
    assert short.step_s < full.step_s


def test_peak_rate_overrides(ops: OpsConfig) -> None:
    assert set(resolve(ops, {"PEAK_RATE": "50"}).peaks.values()) == {50}
    plan = resolve(ops, {"PEAK_RATE": "llm=7"})
    assert plan.peaks["llm"] == 7 and plan.peak_sources["llm"] == "PEAK_RATE"
    assert plan.peak_sources["embed"].endswith("embed.peak_rate_per_s")


@pytest.mark.parametrize(("env", "named"), [
    ({"SWEEP": "long"}, "SWEEP"), ({"FAMILIES": "llm,predict"}, "FAMILIES"),
    ({"FAMILIES": ","}, "FAMILIES"), ({"PEAK_RATE": "fast"}, "PEAK_RATE"),
    ({"PEAK_RATE": "predict=3"}, "predict"), ({"PEAK_RATE": "-1"}, "> 0"),
])
def test_bad_overrides_are_named(ops: OpsConfig, env: dict[str, str], named: str) -> None:
    with pytest.raises(PlanError, match=named):
        resolve(ops, env)


def test_shape_sweep_validates(ops: OpsConfig) -> None:
    assert resolve_settings(ops, {"SHAPE": "sweep"}).shape == "sweep"


def test_bodies(ops: OpsConfig) -> None:
    llm = build(ops, "llm", MODEL).body(0)
    assert llm["model"] == MODEL and llm["stream"] and llm["ignore_eos"] and llm["temperature"] == 0
    assert llm["max_tokens"] == ops.loadtest.max_tokens and llm["stream_options"] == {"include_usage": True}
    assert set(build(ops, "embed", MODEL).body(3)) == {"text"} == set(build(ops, "classify", MODEL).body(3))
    assert build(ops, "llm", MODEL).target == ops.goodput_for(MODEL).target
    assert build(ops, "embed", MODEL).target == ops.slo_for("/embed").latency_target


def test_good_follows_each_objective(ops: OpsConfig) -> None:
    embed, llm = build(ops, "embed", MODEL), build(ops, "llm", MODEL)
    bound = ops.slo_for("/embed").latency_objective_ms
    assert embed.good(True, None, bound, 0) and not embed.good(True, None, bound + 1, 0)
    assert not embed.good(False, None, 1, 0)
    g = ops.goodput_for(MODEL)
    assert llm.good(True, g.ttft_ms, g.ttft_ms + 10 * g.tpot_ms, 11)
    assert not llm.good(True, g.ttft_ms + 1, g.ttft_ms + 1, 2)  # first token too late
    assert not llm.good(True, 10, 10 + 10 * (g.tpot_ms + 1), 11)  # tokens too slow


# --- figures, judge, knee ---


def test_in_flight_is_time_weighted() -> None:
    records = [Record(0, 0.0, 1.0, True), Record(0, 0.5, None), Record(0.2)]  # done, open, dropped
    mean, at_end = in_flight(records, 0.0, 2.0)
    assert mean == pytest.approx((1.0 + 1.5) / 2)
    assert at_end == 1


def test_step_figures_from_records(ops: OpsConfig) -> None:
    embed = build(ops, "embed", MODEL)
    records = (
        Record(0.1, 0.1, 0.12, True, 200),  # in the settle part: not judged, ended before the window
        Record(1.0, 1.0, 1.05, True, 200),  # good
        Record(1.5, 1.5, 3.0, True, 200),  # too slow (1.5 s)
        Record(2.0, 2.0, 2.01, False, 500, error="HTTP 500"),
        Record(2.5),  # dropped
        Record(3.0, 3.0, None, error="still open after the drain timeout"),
    )
    f = step_figures(StepRun(4.0, 0.0, 4.0, 0.5, records, 0.1, 4.0), embed)
    assert (f.arrivals, f.good, f.dropped, f.failed) == (5, 1, 1, 2)
    assert f.good_share == 0.2 and f.achieved_per_s == round(5 / 3.5, 3)
    assert f.throughput_per_s == round(2 / 3.5, 3) and f.goodput_per_s == round(1 / 3.5, 3)
    assert f.in_flight_end == 1 and f.e2e_ms["p99"] == 1500 and f.ttft_ms is None


def fig(**changes: Any) -> Figures:
    """A healthy step at 10/s over a 10 s window; each test breaks one thing."""
    base = Figures(offered_per_s=10, arrivals=100, achieved_per_s=10, throughput_per_s=10, goodput_per_s=10,
                   good=100, good_share=1.0, dropped=0, failed=0, mean_in_flight=2, in_flight_end=2,
                   e2e_ms={"p50": 100, "p90": 150, "p99": 200}, mean_e2e_ms=110, ttft_ms=None, tpot_ms=None,
                   output_tokens_per_s=None, generator_cpu_percent=10, send_lag_p99_ms=1)
    return replace(base, **changes)


def codes(v: Verdict) -> set[str]:
    return {r.code for r in v.reasons}


def check(f: Figures, target: float = 0.99) -> Verdict:
    return judge(f, target, window_s=10, throughput_ratio=0.9, backlog_floor=8)


def test_a_healthy_step_passes() -> None:
    v = check(fig())
    assert v.passed and v.line() == "ok" and not v.reasons


@pytest.mark.parametrize(("changes", "code", "saturated"), [
    ({"good_share": 0.989}, "goodput", False),  # just under the target
    ({"dropped": 1}, "dropped", True),
    ({"throughput_per_s": 8.0}, "throughput", True),  # 20 short over 10 s: past the floor
    ({"in_flight_end": 9, "mean_in_flight": 4}, "backlog", True),
    ({"arrivals": 0, "good_share": None}, "empty", False),
])
def test_each_stop_reason(changes: dict[str, Any], code: str, saturated: bool) -> None:
    v = check(fig(**changes))
    assert not v.passed and codes(v) == {code} and v.oversaturated is saturated


@pytest.mark.parametrize("changes", [
    {"good_share": 0.99},  # exactly the target meets it
    {"throughput_per_s": 9.1},  # served above 90% of the arrivals
    {"in_flight_end": 8, "mean_in_flight": 1},  # a backlog at the floor, not above it
    {"in_flight_end": 9, "mean_in_flight": 4.6},  # above the floor, under twice the mean
])
def test_checks_hold_at_their_bounds(changes: dict[str, Any]) -> None:
    assert check(fig(**changes)).passed


def test_small_counts_are_noise_not_saturation() -> None:
    # 30 arrived over the 10 s window and 24 were served: under 90%, but 6 short is under the floor of 8.
    assert check(fig(achieved_per_s=3, throughput_per_s=2.4)).passed
    assert not check(fig(achieved_per_s=3, throughput_per_s=2.1)).passed  # 9 short: past the floor


def test_knee_in_the_middle() -> None:
    ok, bad = check(fig()), check(fig(dropped=3))
    knee = find_knee([ok, ok, bad], 5)
    assert (knee.index, knee.stopped_at, knee.last_rate_reached) == (1, 2, False)
    assert "dropped" in knee.why


def test_a_step_just_under_the_target_is_not_the_knee() -> None:
    ok, under = check(fig()), check(fig(good_share=0.985))
    assert find_knee([ok, under], 4).index == 0


def test_no_knee_when_the_first_rate_fails() -> None:
    knee = find_knee([check(fig(good_share=0.5))], 4)
    assert knee.index is None and knee.stopped_at == 0 and "good share" in knee.why


def test_last_rate_reached() -> None:
    ok = check(fig())
    knee = find_knee([ok, ok, ok], 3)
    assert (knee.index, knee.last_rate_reached) == (2, True)
    with pytest.raises(ValueError, match="cut short"):
        find_knee([ok, ok], 3)


# --- advice ---


def test_advice_arithmetic_and_reasons() -> None:
    a = recommend(160, 2, 50, 400, "PEAK_RATE", "Embedder", knee_is_floor=False)
    assert (a.per_replica_rate_per_s, a.target_ongoing_requests, a.max_replicas) == (80, 4, 5)
    first, ongoing, most = a.reasons
    assert "160 req/s" in first and "2 replica(s) of Embedder" in first and "80 req/s per replica" in first
    assert "ceil(80 req/s per replica x 0.05 s mean E2E at the knee) = ceil(4) = 4" in ongoing
    assert "Little's law" in ongoing
    assert "ceil(400 req/s peak (PEAK_RATE) / 80 req/s per replica) = ceil(5) = 5" in most


def test_advice_rounds_up_and_floors_at_one() -> None:
    assert recommend(160, 1, 50, 160, "p", "E", False).target_ongoing_requests == 8  # not 9 from 8.000...2
    assert recommend(160, 1, 51, 161, "p", "E", False).max_replicas == 2
    low = recommend(2, 1, 50, 10, "p", "E", False)
    assert low.target_ongoing_requests == 1 and "= ceil(0.1) = 1" in low.reasons[1]


def test_advice_with_unknown_replicas_assumes_one_and_says_so() -> None:
    a = recommend(30, None, 200, 90, "p", "LLMServer.*", knee_is_floor=True)
    assert not a.replicas_known and a.replicas == 1 and a.per_replica_rate_per_s == 30
    assert "no replica count" in a.reasons[0] and "assumes 1 replica" in a.reasons[0]
    assert a.max_replicas == 3 and "floor" in a.reasons[-1]


# --- Prometheus figures ---


def test_server_figures_value_nothing_error(ops: OpsConfig) -> None:
    embed = build(ops, "embed", MODEL)
    asked: list[tuple[str, float]] = []

    def query(expr: str, at: float) -> Any:
        asked.append((expr, at))
        if "queued_queries" in expr:
            return {"result": [{"metric": {}, "value": [at, "3"]}]}
        if "replica_healthy" in expr:
            return {"result": []}
        raise httpx.HTTPStatusError("400 bad query", request=httpx.Request("GET", "http://p"), response=None)

    (got,) = fetch(query, embed, [(100.0, 125.0)])
    assert got.values["queue_depth_max"] == 3
    assert got.values["replicas_max"] is None and got.values["deployment_replicas_max"] is None
    assert got.values["ongoing_at_replicas_mean"] is None and "400 bad query" in (got.error or "")
    assert {at for _, at in asked} == {125.0}
    queue = 'max_over_time((sum(ray_serve_deployment_queued_queries{application="embed"}))[25s:1s])'
    assert asked[0][0] == queue
    assert any('deployment=~"Embedder"' in e for e, _ in asked)


def test_unreachable_prometheus_is_asked_once(ops: OpsConfig) -> None:
    calls = []

    def query(expr: str, at: float) -> Any:
        calls.append(expr)
        raise httpx.ConnectError("refused")

    got = fetch(query, build(ops, "llm", MODEL), [(0, 10), (10, 20)])
    assert len(calls) == 1 and all(v is None for s in got for v in s.values.values())
    assert all("unreachable" in (s.error or "") for s in got)


def test_llm_probes_and_scalars(ops: OpsConfig) -> None:
    names = {p.name for p in probes(build(ops, "llm", MODEL))}
    assert {"vllm_running_max", "vllm_waiting_max", "kv_cache_usage_max"} <= names
    assert not names & {p.name for p in probes(build(ops, "embed", MODEL))} - names
    assert scalar({"result": [{"value": [0, "NaN"]}]}) is None and scalar({}) is None
    assert window_expr(probes(build(ops, "embed", MODEL))[3], 0.4).startswith("avg_over_time(") \
        and "[1s:1s]" in window_expr(probes(build(ops, "embed", MODEL))[3], 0.4)


# --- end to end against fake servers ---


class Fake(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and chunked streams

    def log_message(self, *_: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/v1/chat/completions":
            self._chat(body)
            return
        with self.server.gate:  # type: ignore[attr-defined]
            time.sleep(self.server.delay_s)  # type: ignore[attr-defined]
        payload = json.dumps({"ok": True, "n": len(body["text"])}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _chunk(self, event: str) -> None:
        data = f"data: {event}\n\n".encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _chat(self, body: dict[str, Any]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for _ in range(body["max_tokens"]):
            self._chunk(json.dumps({"choices": [{"delta": {"content": "x"}}]}))
            time.sleep(0.002)
        self._chunk(json.dumps({"choices": [], "usage": {"completion_tokens": body["max_tokens"]}}))
        self._chunk("[DONE]")
        self.wfile.write(b"0\r\n\r\n")


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # bursts of new connections must not wait on SYN retries

    def __init__(self, workers: int, delay_s: float) -> None:
        super().__init__(("127.0.0.1", 0), Fake)
        self.gate = threading.Semaphore(workers)  # workers at a time: capacity workers / delay_s
        self.delay_s = delay_s

    def handle_error(self, *_: Any) -> None:
        pass  # the drain cancels requests: their broken pipes are expected

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[FakeServer]:
    srv = FakeServer(*request.param)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def tiny_plan(family: str, family_rates: tuple[float, ...], **changes: Any) -> Plan:
    base = Plan(mode="test", families=(family,), rates={family: family_rates}, peaks={family: 100},
                peak_sources={family: "test"}, step_s=0.5, settle_s=0.0, drain_timeout_s=0.3,
                max_in_flight=32, throughput_ratio=0.9, backlog_floor=3, seed=7)
    return replace(base, **changes)


# Objectives, drain and floor far above what the fakes need: a test process starved on a busy box (nice 19
# under a benchmark gets a sliver of a core) must not fail a step the fake server kept up with.
LOOSE = Goodput(ttft_ms=10_000, tpot_ms=5_000, target=0.95)
LOOSE_PLAN = {"drain_timeout_s": 2.0, "backlog_floor": 10}


def replicas_query(expr: str, at: float) -> Any:
    value = "1" if "replica_healthy" in expr else "0"
    return {"result": [{"metric": {}, "value": [at, value]}]}


@pytest.mark.parametrize("server", [(64, 0.0)], indirect=True)
def test_a_fast_stack_runs_to_the_last_rate(ops: OpsConfig, server: FakeServer, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    llm = replace(build(ops, "llm", MODEL), max_tokens=4, goodput=LOOSE)
    plan = tiny_plan("llm", (6, 12, 24), **LOOSE_PLAN)
    assert all(arrivals(r, plan.step_s, f"7/llm/{k}") for k, r in enumerate(plan.rates["llm"]))
    result = asyncio.run(sweep_family(server.url, llm, plan, replicas_query))
    assert [s.verdict.passed for s in result.steps] == [True, True, True], report.table(result)
    assert result.knee.index == 2 and result.knee.last_rate_reached
    f = result.steps[-1].figures
    assert f.ttft_ms["p50"] is not None and f.tpot_ms["p50"] is not None and f.failed == 0
    assert f.output_tokens_per_s and result.steps[-1].server.values["deployment_replicas_max"] == 1
    assert result.advice is not None and result.advice.knee_is_floor
    print(report.table(result))
    out = capsys.readouterr().out
    assert "knee: 24 req/s (the last configured rate" in out and "ttft p99" in out


@pytest.mark.parametrize("server", [(1, 0.05)], indirect=True)  # 20 requests/s at most
def test_a_slow_stack_stops_with_a_knee(ops: OpsConfig, server: FakeServer, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    embed = replace(build(ops, "embed", MODEL), latency_objective_ms=5_000)
    plan = tiny_plan("embed", (6, 10, 200, 400), step_s=0.6, max_in_flight=16, **LOOSE_PLAN)
    plan = replace(plan, drain_timeout_s=1.0)  # the 200/s step leaves 16 open: 0.8 s of work at 20/s
    result = asyncio.run(sweep_family(server.url, embed, plan, lambda e, t: {"result": []}))
    # Stops at 200/s, the knee before it; 400/s never runs.
    assert [s.verdict.passed for s in result.steps] == [True, True, False], report.table(result)
    assert result.knee.index == 1 and not result.knee.last_rate_reached
    failed = result.steps[-1]
    assert failed.verdict.oversaturated and {"dropped", "throughput"} <= codes(failed.verdict)
    assert failed.figures.dropped > 0 and failed.figures.throughput_per_s < 30
    assert result.advice is not None and not result.advice.replicas_known  # Prometheus gave nothing
    assert result.advice.per_replica_rate_per_s == 10

    sweep_run.write(result, tmp_path / "embed", cpu_warn_percent=90)
    files = {p.name for p in (tmp_path / "embed").iterdir()}
    assert files == {"sweep.json", "sweep.md", "latency.png", "goodput.png"}
    assert all((tmp_path / "embed" / n).stat().st_size > 1000 for n in ("latency.png", "goodput.png"))
    record = json.loads((tmp_path / "embed" / "sweep.json").read_text())
    assert record["knee"] == {"rate_per_s": 10, "step": 1} and len(record["steps"]) == 3
    assert record["steps"][0]["server"]["queue_depth_max"] is None
    assert record["advice"]["max_replicas"] == 10 and record["plots"] == ["latency.png", "goodput.png"]
    md = (tmp_path / "embed" / "sweep.md").read_text()
    assert "knee: 10 req/s (the next rate failed" in md and "assumes 1 replica" in md
    assert "[latency.png](latency.png)" in md and "| knee |" in md
    print(report.table(result))
    print(report.summary([result]))
    out = capsys.readouterr().out
    assert "| embed | 10 | 10 | " in out and " | 10 | 100 | [embed/sweep.md](embed/sweep.md) |" in out


# --- report pieces without a server ---


def canned(ops: OpsConfig, good_shares: list[float]) -> FamilyResult:
    embed = build(ops, "embed", MODEL)
    plan = tiny_plan("embed", tuple(10.0 * 2**k for k in range(len(good_shares))))
    steps = []
    for k, share in enumerate(good_shares):
        f = fig(offered_per_s=plan.rates["embed"][k], good_share=share)
        server = ServerFigures({"deployment_replicas_max": 2})
        steps.append(Step(f.offered_per_s, (0.0, 1.0), f, check(f), server))
    knee = find_knee([s.verdict for s in steps], len(steps))
    return FamilyResult(embed, plan, tuple(steps), knee, advise(embed, plan, tuple(steps), knee))


def test_no_knee_reports_plainly_and_exits_1(ops: OpsConfig, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    result = canned(ops, [0.5])
    assert result.advice is None
    assert report.knee_line(result).startswith("no knee: no rate met the target")
    assert "| embed | none | - | - | - | - |" in report.summary([result])
    paths = plots.draw(result, tmp_path)
    assert all(p.exists() for p in paths)

    async def fake_sweep(*_: Any, **__: Any) -> FamilyResult:
        return result

    monkeypatch.setattr(sweep_run, "sweep_family", fake_sweep)
    monkeypatch.setattr(sweep_run, "warm_up", lambda *_: None)
    monkeypatch.setenv("REPORT_DIR", str(tmp_path / "r"))
    monkeypatch.setenv("FAMILIES", "embed")
    assert sweep_run.main(ops, lambda: None) == 1
    assert (tmp_path / "r" / "sweep.md").exists() and (tmp_path / "r" / "embed" / "sweep.json").exists()


def test_bad_settings_exit_2_before_starting_the_stack(ops: OpsConfig,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWEEP", "forever")
    started = []
    assert sweep_run.main(ops, lambda: started.append(1)) == 2 and not started


def test_report_dir_follows_report_dir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert sweep_run.report_dir({"REPORT_DIR": str(tmp_path / "x")}) == tmp_path / "x"
    monkeypatch.setattr(sweep_run, "ROOT", tmp_path)
    default = sweep_run.report_dir({})
    assert default.parent == tmp_path / "reports" and default.name.startswith("sweep-") and default.is_dir()


def test_advice_uses_the_replicas_at_the_knee(ops: OpsConfig) -> None:
    result = canned(ops, [1.0, 1.0, 0.9])
    assert result.knee.index == 1 and result.advice is not None
    assert result.advice.replicas == 2 and result.advice.per_replica_rate_per_s == 10  # 20/s over 2
