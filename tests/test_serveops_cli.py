"""The `serveops` subcommands the runbooks call: what they print, on canned answers, and what
replace-replica refuses to do. No cluster."""

from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from stack.config import OpsConfig, load
from stack.local import serve_deploy
from stack.tools import cli


@pytest.fixture(scope="module")
def ops() -> OpsConfig:
    return load()


def deployment(status: str, message: str = "", running: int = 1, target: int = 1) -> dict[str, Any]:
    return {"status": status, "message": message, "target_num_replicas": target,
            "replicas": [{"state": "RUNNING"}] * running,
            "deployment_config": {"max_ongoing_requests": 8, "autoscaling_config": {"min_replicas": 1,
                                                                                    "max_replicas": 4}}}


def test_deployments_names_the_failed_one_and_serves_message(ops: OpsConfig, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    traceback = "\n".join(f"  line {i}" for i in range(30)) + "\nValueError: model does not fit"
    failed = deployment("DEPLOY_FAILED", f"The deployment failed to start 3 times.\n{traceback}", running=0)
    apps = {"embed": {"status": "RUNNING", "deployments": {"Embedder": deployment("HEALTHY")}},
            "llm": {"status": "DEPLOY_FAILED", "deployments": {"LLMServer:m": failed}},
            "broken": {"status": "DEPLOY_FAILED", "message": "ImportError: no module x", "deployments": {}}}
    monkeypatch.setattr(serve_deploy, "details", lambda _: {"applications": apps})
    assert cli.deployments(ops, None, config=True) == 0
    out = capsys.readouterr().out
    assert "LLMServer:m DEPLOY_FAILED 0/1 running" in out
    assert "ValueError: model does not fit" in out and "line 0\n" not in out  # the message's tail
    assert "ImportError: no module x" in out
    assert "max_ongoing_requests=8 min_replicas=1 max_replicas=4" in out
    assert out.strip().endswith("found: 3 not HEALTHY: broken DEPLOY_FAILED, llm DEPLOY_FAILED, "
                                "llm/LLMServer:m DEPLOY_FAILED")


def test_deployments_all_healthy(ops: OpsConfig, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    apps = {"embed": {"status": "RUNNING", "deployments": {"Embedder": deployment("HEALTHY")}}}
    monkeypatch.setattr(serve_deploy, "details", lambda _: {"applications": apps})
    cli.deployments(ops, "embed")
    assert capsys.readouterr().out.strip().endswith("found: every deployment HEALTHY")


def test_targets_counts_the_down_ones(ops: OpsConfig, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    active = [{"labels": {"job": "ray", "instance": "127.0.0.1:8080"}, "scrapeUrl": "http://127.0.0.1:8080/metrics",
               "health": "down", "lastError": "connection refused"},
              {"labels": {"job": "prometheus", "instance": "127.0.0.1:9090"},
               "scrapeUrl": "http://127.0.0.1:9090/metrics", "health": "up", "lastError": ""}]
    monkeypatch.setattr(cli.prom, "api", lambda *_, **__: {"activeTargets": active})
    cli.targets(ops)
    out = capsys.readouterr().out
    assert "job=ray http://127.0.0.1:8080/metrics down  connection refused" in out
    assert "found: 2 target(s) in jobs prometheus, ray; 1 down" in out


def test_deaths_shows_memory_kills(ops: OpsConfig, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    oom = ("1 worker(s) were killed due to the node running low on memory. Memory on the node "
           "(IP: 10.0.0.1) was 22.55GB used / 23.54GB limit")
    dead = [SimpleNamespace(class_name="ServeReplica:embed:Embedder", pid=1,
                            death_cause={"actor_died_error_context": {"error_message": oom}}),
            SimpleNamespace(class_name="ServeReplica:predict:TenantModels", pid=2,
                            death_cause={"actor_died_error_context": {"error_message": "ray.kill"}})]
    monkeypatch.setattr("ray.util.state.list_actors", lambda **_: dead)
    cli.deaths(ops, last=1)
    out = capsys.readouterr().out
    assert "Embedder pid 1 (memory): 1 worker(s) were killed due to the node running low" in out
    assert "found: 2 dead actor(s) in this Ray session, 1 killed for memory, 0 crashed" in out


# --- --since: logs and deaths leave out what is older than the fault ------------------------------

def local(stamp: float, vllm: bool = False) -> str:
    """A log line's local time as Ray writes it (2026-11-27 16:43:30,568) or as vLLM does (11-27 16:43:30)."""
    when = datetime.fromtimestamp(stamp)
    if vllm:
        return f"{when:%m-%d %H:%M:%S}"
    return f"{when:%Y-%m-%d %H:%M:%S},{when.microsecond // 1000:03d}"


def write_log(path: Path, lines: list[str], last_change: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    os.utime(path, (last_change, last_change))


@pytest.fixture
def ray_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> float:
    """A Ray session's logs with the same failures before and after a fault; returns the fault time."""
    fault = float(int(time.time()) - 3600)  # an hour ago: vLLM's dates have no year
    old, new = fault - 600, fault + 5
    monkeypatch.setattr(cli, "RAY_LOGS", tmp_path)
    json_line = json.loads((Path(__file__).parent / "data" / "serve-replica-log-line.json").read_text())
    serve = [json.dumps({**json_line, "message": f"Replica {name} failed the health check 3 times in a row",
                         "timestamp_ns": int(stamp * 1e9)})
             for name, stamp in (("OLD-json", old), ("NEW-json", new))]
    write_log(tmp_path / "serve" / "controller_1.log", serve, new)
    oom = "1 Workers (tasks / actors) killed due to memory pressure (OOM)"
    write_log(tmp_path / "raylet.out", [f"[{local(old)} W 10 10] node_manager.cc:1: OLD-cpp {oom}",
                                        f"[{local(new + 1)} W 10 10] node_manager.cc:1: NEW-cpp {oom}"],
              new + 1)
    replica = "(ServeReplica:llm:LLMServer pid=7) ERROR"
    write_log(tmp_path / "worker-1.err", [
        f"{replica} {local(old, vllm=True)} [worker.py:3] OLD-vllm failed",
        "torch.OutOfMemoryError: OLD-undated CUDA out of memory",  # dated by the old line below it
        f"{local(old)}\tINFO worker.py:9 -- retrying",
        f"{replica} {local(new + 2, vllm=True)} [worker.py:3] NEW-vllm failed",
        "torch.OutOfMemoryError: NEW-undated CUDA out of memory",  # last: dated by the file's last change
    ], new + 3)
    write_log(tmp_path / "old-worker.err", ["NCCL WARN OLD-file failed"], old)  # not written since
    return fault


PATTERN = "failed|killed due to memory|CUDA out of memory"


def test_logs_leave_out_lines_older_than_since(ray_logs: float, capsys: pytest.CaptureFixture[str]) -> None:
    cli.logs(PATTERN, last=20, since=ray_logs)
    out = capsys.readouterr().out
    for kind in ("json", "cpp", "vllm", "undated"):
        assert f"NEW-{kind}" in out and f"OLD-{kind}" not in out, (kind, out)
    assert "OLD-file" not in out and "1 file(s) last written before it not read" in out
    assert "found: 4 line(s); 4 older line(s) left out" in out
    assert out.index("NEW-json") < out.index("NEW-cpp") < out.index("NEW-vllm") < out.index("NEW-undated")


def test_logs_without_since_find_everything(ray_logs: float, capsys: pytest.CaptureFixture[str]) -> None:
    cli.logs(PATTERN, last=20)
    out = capsys.readouterr().out
    kinds = ("json", "cpp", "vllm", "undated")
    assert all(f"{age}-{kind}" in out for age in ("OLD", "NEW") for kind in kinds)
    assert "OLD-file" in out and "found: 9 line(s)\n" in out and "left out" not in out


@pytest.mark.parametrize(("line", "expected"), [
    ('{"asctime": "x", "message": "m", "timestamp_ns": 1795797810568500667}', 1795797810.5685),
    ("[{t} I 12 34] raylet.cc:10: m", "t"),
    ("{t}\tINFO dashboard.py:1 -- m", "t"),
    ("INFO {t} controller 123 -- m", "t"),
    ("(ServeController pid=9) INFO {t} controller 9 -- m", "t"),
    ("Traceback (most recent call last):", None),
    ("  NCCL WARN host:1:2 [0] m", None),
    (f"ValueError: {'x' * 130} 2020-01-01 00:00:00", None),  # a date deep in the message is not the time
])
def test_line_time_reads_rays_formats(line: str, expected: float | str | None) -> None:
    stamp = 1_795_797_810.568
    if expected == "t":
        line, expected = line.format(t=local(stamp)), stamp
    found = cli.line_time(line)
    assert found == expected if expected is None else found == pytest.approx(expected, abs=1e-3)


def test_vllm_dates_take_the_year_before_when_ahead() -> None:
    now = datetime(2027, 1, 1, 0, 30).timestamp()
    last_year = datetime(2026, 12, 31, 23, 59).timestamp()
    assert cli.line_time("INFO 12-31 23:59:00 [x.py:1] m", now=now) == last_year
    assert cli.line_time("INFO 01-01 00:10:00 [x.py:1] m", now=now) == datetime(2027, 1, 1, 0, 10).timestamp()


def dead_actor(actor_id: str, name: str, message: str) -> SimpleNamespace:
    return SimpleNamespace(actor_id=actor_id, class_name=name, pid=int(actor_id[-1]),
                           death_cause={"actor_died_error_context": {"error_message": message}})


def test_deaths_leave_out_actors_that_died_before_since(ops: OpsConfig, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    dead = [dead_actor("a1", "ServeReplica:embed:Embedder", "The actor died unexpectedly: this run"),
            dead_actor("a2", "ServeReplica:embed:Embedder", "The actor died unexpectedly: an earlier run"),
            dead_actor("a3", "ServeReplica:embed:Embedder", "The actor died unexpectedly: no end time")]
    monkeypatch.setattr("ray.util.state.list_actors", lambda **_: dead)
    monkeypatch.setattr(cli, "_death_times", lambda _: {"a1": 1_700_000_005.0, "a2": 1_699_999_000.0})
    cli.deaths(ops, last=10, since=1_700_000_000.0)
    out = capsys.readouterr().out
    assert "pid 1 (crashed): The actor died unexpectedly: this run" in out
    assert "earlier run" not in out and "no end time" not in out
    assert out.strip().endswith(f"found: 1 dead actor(s) since {cli._when(1_700_000_000.0)}, 0 killed for "
                                "memory, 1 crashed; 1 older left out, 1 with no recorded death time")


def test_death_times_come_from_the_dashboards_actor_table(monkeypatch: pytest.MonkeyPatch) -> None:
    actors = {"a1": {"state": "DEAD", "endTime": 1_700_000_005_250}, "a2": {"state": "ALIVE", "endTime": 0},
              "a3": None}
    answer = SimpleNamespace(raise_for_status=lambda: None, json=lambda: {"data": {"actors": actors}})
    seen: list[str] = []
    monkeypatch.setattr(cli.httpx, "get", lambda url, **_: seen.append(url) or answer)
    assert cli._death_times("http://127.0.0.1:8265") == {"a1": 1_700_000_005.25}
    assert seen == ["http://127.0.0.1:8265/logical/actors"]


@pytest.mark.parametrize(("argv", "env", "expected"), [
    (["logs", "x"], "1700000000", 1_700_000_000.0),  # the chaos engine's fault time
    (["deaths"], "1700000000.5", 1_700_000_000.5),
    (["logs", "x", "--since", "2023-11-14T22:13:20+00:00"], "", 1_700_000_000.0),
    (["deaths", "--since", "1600000000"], "1700000000", 1_600_000_000.0),  # the flag wins
    (["logs", "x"], "", None),  # `make runbook` passes SINCE= when unset: no bound
    (["deaths"], None, None),
])
def test_since_defaults_to_the_environment(argv: list[str], env: str | None, expected: float | None,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    if env is None:
        monkeypatch.delenv("SINCE", raising=False)
    else:
        monkeypatch.setenv("SINCE", env)
    seen: dict[str, Any] = {}
    monkeypatch.setattr(cli, "logs", lambda regex, last, since: seen.update(since=since) or 0)
    monkeypatch.setattr(cli, "deaths", lambda ops, last, since: seen.update(since=since) or 0)
    assert cli.main(argv) == 0
    assert seen["since"] == expected


def test_since_as_a_duration_and_a_bad_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SINCE", "10m")
    before = time.time()
    assert before - 601 < cli.parser().parse_args(["logs", "x"]).since < time.time() - 599
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["deaths", "--since", "last tuesday"])


def test_promql_names_the_session_only_when_two_appear(ops: OpsConfig, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    def series(session: str, value: str) -> dict[str, Any]:
        return {"metric": {"application": "embed", "deployment": "Embedder", "SessionName": session},
                "value": [0, value]}

    two = [series("s_new", "2"), series("s_old", "3")]
    monkeypatch.setattr(cli.prom, "api", lambda *_, **__: {"result": two})
    cli.promql(ops, "q")
    out = capsys.readouterr().out
    assert re.search(r"(?m)^\s+2\s+application=embed, deployment=Embedder, SessionName=s_new$", out)
    monkeypatch.setattr(cli.prom, "api", lambda *_, **__: {"result": [series("s_new", "2")]})
    cli.promql(ops, "q")
    assert re.search(r"(?m)^\s+2\s+application=embed, deployment=Embedder$", capsys.readouterr().out)


# --- stalled replicas: named, and replaced one at a time ----------------------------------------------

def serve_details(*replicas: tuple[str, str], status: str = "HEALTHY", target: int = 2) -> dict[str, Any]:
    """classify/Preprocessor with these (replica_id, state)."""
    listed = [{"replica_id": rid, "state": state, "pid": 100 + i,
               "actor_name": f"SERVE_REPLICA::classify#Preprocessor#{rid}"}
              for i, (rid, state) in enumerate(replicas)]
    return {"applications": {"classify": {"status": "RUNNING", "deployments": {"Preprocessor": {
        "status": status, "target_num_replicas": target, "replicas": listed}}}}}


@pytest.mark.parametrize(("argv", "expected"), [
    (["replace-replica", "classify", "Preprocessor", "pv0b9juu"],
     ("classify", "Preprocessor", "pv0b9juu", 180.0)),
    (["replace-replica", "classify", "Preprocessor", "pv0b9juu", "--wait-s", "0"],
     ("classify", "Preprocessor", "pv0b9juu", 0.0)),
])
def test_replace_replica_arguments(argv: list[str], expected: tuple) -> None:
    args = cli.parser().parse_args(argv)
    assert (args.app, args.deployment, args.replica_id, args.wait_s) == expected


@pytest.mark.parametrize("argv", [["replace-replica", "classify", "Preprocessor"], ["replace-replica"],
                                  ["replace-replica", "a", "b", "c", "--wait-s", "soon"]])
def test_replace_replica_needs_its_three_names(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.parser().parse_args(argv)
    assert done.value.code == 2


@pytest.mark.parametrize(("app", "deployment", "where"), [
    ("classify", "Preprocessor", "classify/Preprocessor; its replicas: a1, b2"),
    ("classify", "Nope", "classify/Nope (no such deployment); its replicas: none"),
    ("nope", "Preprocessor", "nope/Preprocessor (no such deployment); its replicas: none"),
])
def test_replace_replica_refuses_a_replica_serve_does_not_list(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], app: str, deployment: str,
        where: str) -> None:
    two = serve_details(("a1", "RUNNING"), ("b2", "RUNNING"))
    monkeypatch.setattr(serve_deploy, "details", lambda _: two)
    killed: list[str] = []
    monkeypatch.setattr(cli, "_kill_actor", lambda ops, name: killed.append(name))
    assert cli.main(["replace-replica", app, deployment, "zz9"]) == 2
    err = capsys.readouterr().err
    assert f"replace-replica: no replica zz9 in {where}. Nothing killed." in err
    assert killed == []


def test_replace_replica_kills_that_actor_and_waits_for_healthy(
        ops: OpsConfig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    answers = iter([
        serve_details(("a1", "RUNNING"), ("b2", "RUNNING")),  # before
        serve_details(("a1", "STOPPING"), ("b2", "RUNNING"), status="UPDATING"),
        serve_details(("b2", "RUNNING"), ("c3", "STARTING"), status="UPDATING"),
        serve_details(("b2", "RUNNING"), ("c3", "RUNNING")),
    ])
    monkeypatch.setattr(serve_deploy, "details", lambda _: next(answers))
    killed: list[str] = []
    monkeypatch.setattr(cli, "_kill_actor", lambda _, name: killed.append(name))
    assert cli.replace_replica(ops, "classify", "Preprocessor", "a1", wait_s=60, poll_s=0) == 0
    assert killed == ["SERVE_REPLICA::classify#Preprocessor#a1"]
    out = capsys.readouterr().out
    assert "killing SERVE_REPLICA::classify#Preprocessor#a1 (pid 100, RUNNING)" in out
    assert out.strip().endswith(
        "found: classify/Preprocessor HEALTHY, 2/2 running; replica a1 replaced by c3")


def test_replace_replica_says_when_the_deployment_does_not_recover(
        ops: OpsConfig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    answers = iter([serve_details(("a1", "RUNNING"))] + [serve_details(("a1", "STOPPING"), status="UNHEALTHY",
                                                                       target=1)] * 1000)
    monkeypatch.setattr(serve_deploy, "details", lambda _: next(answers))
    monkeypatch.setattr(cli, "_kill_actor", lambda *_: None)
    assert cli.replace_replica(ops, "classify", "Preprocessor", "a1", wait_s=0.05, poll_s=0.01) == 1
    assert capsys.readouterr().out.strip().endswith(
        "found: classify/Preprocessor UNHEALTHY, 0/1 running after 0s; replica a1 still listed")


def test_stalled_asks_what_the_alert_asks_and_names_each_replica(
        ops: OpsConfig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    expr = cli.rule_expr("ServeReplicaStalled")
    assert "quantile_over_time(0.5, ray_serve_replica_processing_queries" in expr
    assert f"[{ops.alerting.stall_window_s}s]" in expr

    def labels(app: str, dep: str, rid: str) -> dict[str, str]:
        return {"application": app, "deployment": dep, "replica": rid}

    stuck = labels("classify", "Preprocessor", "pv0b9juu")
    answers = {
        expr: {"result": [{"metric": stuck, "value": [0, "2"]},
                          {"metric": labels("embed", "Embedder", "e1"), "value": [0, "1"]}]},
        cli.IN_FLIGHT: {"result": [{"metric": stuck, "value": [0, "3"]}]},
    }
    alerts = {"alerts": [{"labels": {"alertname": "ServeReplicaStalled", **stuck}, "state": "firing"}]}

    def api(_: OpsConfig, path: str, **query: str) -> dict[str, Any]:
        return alerts if path == "/api/v1/alerts" else answers[query["query"]]

    monkeypatch.setattr(cli.prom, "api", api)
    assert cli.main(["stalled"]) == 0
    out = capsys.readouterr().out
    assert re.findall(r"stalled: classify/Preprocessor replica (\w+)", out) == ["pv0b9juu"]
    assert ("  stalled: classify/Preprocessor replica pv0b9juu: 3 in flight now (median 2 over 120s), none "
            "completed in 120s; alert firing") in out
    assert ("stalled: embed/Embedder replica e1: ? in flight now (median 1 over 120s), none completed in "
            "120s; alert not pending yet") in out
    assert out.strip().endswith("found: 2 stalled replica(s) of any deployment: "
                                "classify/Preprocessor pv0b9juu, embed/Embedder e1")
    cli.stalled(ops, "classify", "Preprocessor")
    out = capsys.readouterr().out
    assert "e1" not in out and "found: 1 stalled replica(s) of classify/Preprocessor" in out
    cli.stalled(ops, "predict")
    assert capsys.readouterr().out.strip() == "found: no stalled replica of predict"
