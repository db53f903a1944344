"""The generated Prometheus and Alertmanager configs pass their own tools' checks."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from stack import monitoring
from stack.config import load


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
    assert ray_job["relabel_configs"][0]["replacement"] == "127.0.0.1:$1"
