"""The ops config's targets (stack/targets.py): the local stack by default, each entry overridden by the
environment, auth headers sent only to their own target and never printed, and mutations refused while
any target points elsewhere. The live proof, a stack in a network namespace, is
tests/live/test_remote_target.py."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from chaos import safety
from loadtests import stack_client
from runbooks import execute
from runbooks.book import load as load_book
from scorecard import run as scorecard_run
from stack import prom, targets
from stack.config import OPS_PATH, parse
from stack.local import cluster, test_host
from stack.tools import cli
from tests.fake_http import serve

SECRET = "Bearer s3cr3t-value"
APPS = {"applications": {"embed": {"status": "RUNNING", "deployments": {"Embedder": {
    "status": "HEALTHY", "replicas": [{"state": "RUNNING"}], "target_num_replicas": 1}}}}}
NODES = {"data": {"result": {"result": [{"state": "ALIVE", "resources_total": {"CPU": 2.0, "GPU": 1.0}},
                                        {"state": "DEAD", "resources_total": {"CPU": 8.0}}]}}}
NO_ALERTS = {"status": "success", "data": {"alerts": []}}


def env_for(**urls: str) -> dict[str, str]:
    return {targets.URL_ENV[kind]: url for kind, url in urls.items()}  # type: ignore[index]


def test_the_default_targets_are_the_local_stacks_listeners() -> None:
    ops = parse(OPS_PATH, env={})
    assert ops.targets.serve_url == ops.listen.serve_url
    assert ops.targets.prometheus_url == ops.listen.url(ops.listen.prometheus_port)
    assert ops.targets.alertmanager_url == ops.listen.url(ops.listen.alertmanager_port)
    assert ops.targets.ray_dashboard_url == ops.listen.dashboard_url
    assert targets.remote(ops) == {}


def test_the_environment_overrides_each_entry() -> None:
    env = {**env_for(serve="http://10.9.0.2:8000", prometheus="https://prom.example:443/",
                     alertmanager="http://10.9.0.2:9093", ray_dashboard="http://10.9.0.2:8265"),
           "K8S_CONTEXT": "prod-east", "K8S_NAMESPACE": "ml-serving"}
    t = parse(OPS_PATH, env=env).targets
    assert (t.serve_url, t.prometheus_url, t.alertmanager_url, t.ray_dashboard_url) == (
        "http://10.9.0.2:8000", "https://prom.example:443", "http://10.9.0.2:9093", "http://10.9.0.2:8265")
    assert (t.kube_context, t.kube_namespace) == ("prod-east", "ml-serving")
    only_prom = parse(OPS_PATH, env=env_for(prometheus="http://10.9.0.2:9090"))
    assert set(targets.remote(only_prom)) == {"prometheus"}


@pytest.mark.parametrize("url", ["10.9.0.2:9090", "prom.example", "http://prom/?x=1", "ftp://prom"])
def test_a_target_that_is_not_an_http_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="http\\(s\\):// URL"):
        parse(OPS_PATH, env=env_for(prometheus=url))


@pytest.mark.parametrize(("url", "local"), [
    ("http://127.0.0.1:9090", True), ("http://localhost:9090", True),
    ("http://127.0.0.1:19090", False),  # kubectl port-forward to a cluster's Prometheus
    ("http://10.9.0.2:9090", False), ("https://127.0.0.1:9090", False)])
def test_local_means_the_local_stacks_listener(url: str, local: bool) -> None:
    assert targets.is_local(url, "http://127.0.0.1:9090") is local


def test_headers_parse_and_a_malformed_entry_names_the_variable_not_the_value() -> None:
    var = targets.HEADERS_ENV["prometheus"]
    assert targets.headers("prometheus", {var: f"Authorization: {SECRET}; X-Scope-OrgID: team-a"}) == {
        "Authorization": SECRET, "X-Scope-OrgID": "team-a"}
    assert targets.headers("prometheus", {}) == {}
    with pytest.raises(targets.TargetError) as err:
        targets.headers("prometheus", {var: f"Authorization {SECRET}"})
    assert var in str(err.value) and "s3cr3t" not in str(err.value)


def test_a_targets_headers_go_to_it_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    with serve({"/api/v1/query": lambda q: (200, {"status": "success", "data": {"result": []}})}) as p, \
            serve({"/api/v2/alerts": lambda q: (200, [])}) as am:
        monkeypatch.setenv(targets.HEADERS_ENV["prometheus"], f"Authorization: {SECRET}")
        ops = parse(OPS_PATH, env=env_for(prometheus=p.url, alertmanager=am.url))
        prom.api(ops, "/api/v1/query", query="up")
        prom.alertmanager_alerts(ops)
    assert p.headers_of("/api/v1/query")[0]["authorization"] == SECRET
    assert "authorization" not in am.headers_of("/api/v2/alerts")[0]


def test_status_reads_a_remote_cluster_and_prints_its_addresses_never_its_token(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def no_local_ray(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"status ran {args} against a remote target")

    monkeypatch.setattr(cluster.subprocess, "run", no_local_ray)
    monkeypatch.setattr(cluster.ray_head, "is_running", no_local_ray)
    monkeypatch.setenv(targets.HEADERS_ENV["ray_dashboard"], f"Authorization: {SECRET}")
    dashboard = {"/api/v0/nodes": lambda q: (200, NODES), "/api/serve/applications/": lambda q: (200, APPS),
                 "/api/ray/version": lambda q: (200, {"ray_version": "2.60.0"})}
    with serve(dashboard) as ray, serve({"/api/v1/alerts": lambda q: (200, NO_ALERTS)}) as p:
        ops = parse(OPS_PATH, env=env_for(ray_dashboard=ray.url, prometheus=p.url))
        assert cluster.status(ops) == 0
    out = capsys.readouterr().out
    assert f"Ray dashboard {ray.url}" in out and f"Prometheus {p.url}" in out and "not the local stack" in out
    assert "Ray nodes alive: 1 (2 CPU, 1 GPU)" in out and "Embedder" in out
    assert all(h.get("authorization") == SECRET for h in ray.headers_of("/api/serve/applications/"))
    assert ray.headers_of("/api/v0/nodes") and "authorization" not in p.headers_of("/api/v1/alerts")[0]
    assert "s3cr3t" not in out


def test_a_remote_serve_that_does_not_answer_starts_no_local_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack_client.cluster, "up", lambda *a, **k: pytest.fail("started a local stack"))
    ops = parse(OPS_PATH, env=env_for(serve="http://127.0.0.1:9"))
    with pytest.raises(SystemExit, match="lists no model"):
        stack_client.ensure_up(ops)


def test_mutations_refuse_while_a_target_points_elsewhere(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    ops = parse(OPS_PATH, env=env_for(prometheus="http://10.9.0.2:9090"))
    monkeypatch.setattr(cli, "_rollout", lambda: pytest.fail("tune reached the rollout"))
    for action in (lambda: cli.tune(ops, "embed", "Embedder", ["max_ongoing_requests=2"]),
                   lambda: cli.rollback(ops), lambda: cli.replace_replica(ops, "embed", "Embedder", "r1"),
                   lambda: safety.check(ops)):
        with pytest.raises(SystemExit) as stop:
            action()
        assert stop.value.code == 2
    assert capsys.readouterr().err.count("SERVEOPS_PROMETHEUS_URL=http://10.9.0.2:9090") == 4


def test_a_runbook_against_a_remote_target_skips_local_mitigations_and_passes_the_namespace() -> None:
    ops = parse(OPS_PATH, env={**env_for(prometheus="http://10.9.0.2:9090", ray_dashboard="http://10.9.0.2:8265"),
                               "K8S_NAMESPACE": "ml-serving"})
    env = execute.step_env(ops, base={"PATH": "/usr/bin"})
    assert env["SERVEOPS_PROMETHEUS_URL"] == env["PROMETHEUS_URL"] == "http://10.9.0.2:9090"
    assert env["RAY_DASHBOARD_ADDRESS"] == "http://10.9.0.2:8265" and env["K8S_NAMESPACE"] == "ml-serving"
    book = load_book("OOMFailureSpiral")
    local_fix = next(s for s in book.steps if s.mutates and not s.kubernetes)
    diagnose = next(s for s in book.steps if not s.mutates and not s.kubernetes)
    assert "targets point elsewhere" in execute.skip_reason(local_fix, True, env, remote="prometheus x")
    assert execute.skip_reason(local_fix, True, env, remote="") == ""
    assert execute.skip_reason(diagnose, False, env, remote="prometheus x") == ""


def test_logs_against_a_remote_cluster_say_they_were_not_searched(capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(targets.URL_ENV["ray_dashboard"], "http://10.9.0.2:8265")
    monkeypatch.setattr(cli, "load", lambda: parse(OPS_PATH))
    monkeypatch.setattr(cli, "logs", lambda *a: pytest.fail("searched this machine's logs"))
    assert cli.main(["logs", "OOM"]) == 0
    assert "not searched" in capsys.readouterr().out


def test_the_promql_fast_path_sends_the_headers_and_never_prints_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with serve({"/api/v1/query": lambda q: (200, {"status": "success", "data": {"result": []}})}) as p:
        env = {"PATH": "/usr/bin:/bin", targets.URL_ENV["prometheus"]: p.url,
               targets.HEADERS_ENV["prometheus"]: f"Authorization: {SECRET}"}
        done = subprocess.run([str(execute.VENV_BIN / "serveops"), "promql", "up"], env=env,
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert p.headers_of("/api/v1/query")[0]["authorization"] == SECRET
    assert "s3cr3t" not in done.stdout + done.stderr


def test_the_test_hosts_config_moves_every_listener_and_its_env_reads_as_remote(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(test_host, "CONFIG", tmp_path / "ops.yaml")
    test_host.write_config()
    assert test_host.host_ops().listen.host == test_host.LINK.ns_ip
    env = test_host.env()
    assert sorted(env) == sorted(targets.URL_ENV.values())
    assert all(url.startswith(f"http://{test_host.LINK.ns_ip}:") for url in env.values())
    assert set(targets.remote(parse(OPS_PATH, env=env))) == set(targets.KINDS)


def test_the_scorecard_against_a_remote_target_runs_only_its_read_only_parts(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    monkeypatch.setenv(targets.URL_ENV["prometheus"], "http://10.9.0.2:9090")
    monkeypatch.setattr(scorecard_run, "load", lambda: parse(OPS_PATH))
    monkeypatch.setattr(scorecard_run, "ensure_up", lambda ops: pytest.fail("went on to soak and chaos"))
    assert scorecard_run.main(["--out", str(tmp_path)]) == 2
    assert "SOAK_ONLY=1" in capsys.readouterr().err


def test_the_haproxy_lever_is_refused_on_a_listen_host_off_loopback(tmp_path: Path) -> None:
    """Ray's HAProxy dials same-node replicas at 127.0.0.1; ours listen on listen.host (found on the test
    host: every request a 500)."""
    data = yaml.safe_load(OPS_PATH.read_text())
    data["listen"]["host"] = "10.78.0.2"
    assert "haproxy_ingress" in data["profiles"]["cpu"]["cluster"]["levers"]
    copy = tmp_path / "ops.yaml"
    copy.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=r"haproxy_ingress lever, which needs listen\.host on loopback"):
        parse(copy, env={})
