"""Every listener serveops configures is on loopback, never on all interfaces."""

from __future__ import annotations

import subprocess

import pytest

from stack.config import OpsConfig

pytestmark = pytest.mark.live
WILDCARDS = ("0.0.0.0", "*", "[::]", "::")


def listening() -> list[tuple[str, int]]:
    out = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout
    pairs = []
    for line in out.splitlines():
        local = line.split()[3]
        host, _, port = local.rpartition(":")
        pairs.append((host, int(port)))
    return pairs


def test_our_listeners_on_loopback_only(live_stack: OpsConfig) -> None:
    listen = live_stack.listen
    bound = listening()
    for port in (listen.serve_port, listen.dashboard_port, listen.prometheus_port, listen.alertmanager_port,
                 listen.alert_receiver_port, listen.redis_port, listen.exemplars_port):
        hosts = {h for h, p in bound if p == port}
        assert hosts, f"nothing listens on :{port}"
        assert hosts <= {"127.0.0.1", "[::ffff:127.0.0.1]"}, f":{port} bound on {hosts}"


def test_no_project_port_on_wildcard(live_stack: OpsConfig) -> None:
    listen = live_stack.listen
    # 9094: Alertmanager's HA gossip
    ours = {listen.serve_port, listen.dashboard_port, listen.prometheus_port, listen.alertmanager_port,
            listen.alert_receiver_port, listen.gpu_exporter_port, listen.redis_port, listen.exemplars_port,
            9094,
            listen.haproxy_stats_port, listen.haproxy_metrics_port}  # HAProxy's, with haproxy_ingress
    exposed = [(h, p) for h, p in listening() if p in ours and h in WILDCARDS]
    assert exposed == []


def test_haproxy_listeners_on_loopback_where_it_runs(live_stack: OpsConfig) -> None:
    """With the haproxy_ingress lever, Ray renders HAProxy's stats and metrics listeners on every
    interface; stack/local/haproxy_loopback.sh moves them. Without the lever nothing listens there."""
    from stack import levers
    from stack.local import instrumentation

    listen = live_stack.listen
    bound = listening()
    running = levers.parse(instrumentation.running_levers())
    for port in (listen.haproxy_stats_port, listen.haproxy_metrics_port):
        hosts = {h for h, p in bound if p == port}
        if "haproxy_ingress" in running:
            assert hosts and hosts <= {"127.0.0.1", "[::ffff:127.0.0.1]"}, f":{port} bound on {hosts}"
        else:
            assert not hosts & set(WILDCARDS), f":{port} bound on {hosts}"
