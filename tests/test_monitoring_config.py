"""The generated Prometheus and Alertmanager configs pass their own tools' checks."""

from __future__ import annotations

import subprocess
from pathlib import Path

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
