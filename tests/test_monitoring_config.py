"""The generated Prometheus and Alertmanager configs pass their own tools' checks, and the chaos hook
that drops a metric family renders and reverts (no Prometheus needed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from stack.config import load
from stack.local import monitoring


def check(tool: list[str], path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*tool, str(path)], capture_output=True, text=True, timeout=60)


def test_prometheus_config_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(monitoring.prometheus_config(load())))
    out = check(["promtool", "check", "config"], path)
    assert out.returncode == 0, out.stdout + out.stderr


def test_alertmanager_config_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(monitoring.alertmanager_config(load())))
    out = check(["amtool", "check-config"], path)
    assert out.returncode == 0, out.stdout + out.stderr


def test_everything_on_loopback() -> None:
    ops = load()
    prom = monitoring.prometheus_config(ops)
    text = yaml.safe_dump(prom) + yaml.safe_dump(monitoring.alertmanager_config(ops))
    assert "0.0.0.0" not in text and "localhost" not in text
    ray_job = next(j for j in prom["scrape_configs"] if j["job_name"] == "ray")
    rewrite = ray_job["relabel_configs"][-1]
    assert rewrite["target_label"] == "__address__" and rewrite["replacement"] == "127.0.0.1:$1"


def test_the_head_is_scraped_on_loopback_and_a_second_node_where_it_is() -> None:
    """promtool-free check of the relabelling, as Prometheus applies it (RE2 anchored, joined by ';')."""
    import re

    rules = next(j for j in monitoring.prometheus_config(load())["scrape_configs"]
                 if j["job_name"] == "ray")["relabel_configs"]

    def relabel(address: str) -> str:
        labels = {"__address__": address}
        for rule in rules:
            value = ";".join(labels.get(k, "") for k in rule["source_labels"])
            m = re.fullmatch(rule["regex"], value)
            if m:
                labels[rule["target_label"]] = m.expand(rule["replacement"].replace("$1", r"\1"))
        return labels["__address__"]

    assert relabel("192.0.2.2:8080") == "127.0.0.1:8080"
    assert relabel("10.77.0.2:8080") == "10.77.0.2:8080"


def test_the_scrape_timeout_is_the_ops_configs() -> None:
    ops = load()
    config = monitoring.prometheus_config(ops)
    assert config["global"]["scrape_timeout"] == f"{ops.observability.scrape_timeout_s:g}s"
    assert monitoring.duration(2.5) == "2500ms" and monitoring.duration(10.0) == "10s"


def test_a_scrape_timeout_past_the_interval_is_refused() -> None:
    from pydantic import ValidationError

    from stack.config import Observability

    with pytest.raises(ValidationError, match="must not exceed scrape_interval_s"):
        Observability(scrape_interval_s=5, scrape_timeout_s=6, evaluation_interval_s=5,
                      tracing_sampling_ratio=1, runbook_url_base="runbooks")


def test_no_metric_is_dropped_unless_asked() -> None:
    for job in monitoring.prometheus_config(load())["scrape_configs"]:
        assert "metric_relabel_configs" not in job


def test_a_dropped_metric_is_dropped_on_the_ray_job_alone(tmp_path: Path) -> None:
    config = monitoring.prometheus_config(load(), ("ray_serve_deployment_status", "ray_node_mem_used"))
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    both = "ray_node_mem_used|ray_serve_deployment_status"
    assert jobs["ray"]["metric_relabel_configs"] == [{"source_labels": ["__name__"], "action": "drop",
                                                      "regex": both}]
    assert all("metric_relabel_configs" not in j for name, j in jobs.items() if name != "ray")
    assert monitoring.dropped_metrics(config) == ("ray_node_mem_used", "ray_serve_deployment_status")
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    out = check(["promtool", "check", "config"], path)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("name", ["", "ray_x|up", "ray_.*", "9lives", "a b"])
def test_only_a_metric_name_can_be_dropped(name: str) -> None:
    with pytest.raises(ValueError, match="not a metric name"):
        monitoring.prometheus_config(load(), (name,))


def test_drops_add_up_and_restore_takes_them_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """drop_metric and restore_metrics rewrite the local config and reload; no Prometheus here."""
    monkeypatch.setattr(monitoring, "PROM_DIR", tmp_path)
    monkeypatch.setattr(monitoring, "PROM_CONFIG", tmp_path / "prometheus.yml")
    reloads: list[str] = []

    def post(url: str, timeout: float) -> httpx.Response:
        reloads.append(url)
        return httpx.Response(200, request=httpx.Request("POST", url))

    monkeypatch.setattr(monitoring.httpx, "post", post)
    ops = load()
    monitoring.write_prometheus_config(ops)  # what `make up` wrote
    assert monitoring.drop_metric(ops, "ray_serve_deployment_status") == ("ray_serve_deployment_status",)
    both = ("ray_node_mem_used", "ray_serve_deployment_status")
    assert monitoring.drop_metric(ops, "ray_node_mem_used") == both
    written = yaml.safe_load((tmp_path / "prometheus.yml").read_text())
    assert monitoring.dropped_metrics(written) == ("ray_node_mem_used", "ray_serve_deployment_status")
    monitoring.restore_metrics(ops)
    restored = yaml.safe_load((tmp_path / "prometheus.yml").read_text())
    assert restored == monitoring.prometheus_config(ops) and monitoring.dropped_metrics(restored) == ()
    assert reloads == [f"{ops.listen.url(ops.listen.prometheus_port)}/-/reload"] * 3
    assert list(tmp_path.iterdir()) == [tmp_path / "prometheus.yml"]  # no temporary file left


def test_a_refused_reload_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(monitoring, "PROM_DIR", tmp_path)
    monkeypatch.setattr(monitoring, "PROM_CONFIG", tmp_path / "prometheus.yml")
    monkeypatch.setattr(monitoring.httpx, "post", lambda url, timeout: httpx.Response(
        500, text="error loading config", request=httpx.Request("POST", url)))
    with pytest.raises(httpx.HTTPStatusError):
        monitoring.drop_metric(load(), "ray_serve_deployment_status")
