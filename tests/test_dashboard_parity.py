"""Parity with Ray's own Grafana dashboards: ours can replace them without losing a signal.

Every metric family that Ray's Serve, Serve Deployment, Serve LLM and default dashboards chart, and that
the stack exports (the pinned contract, tests/data/metrics/contract.json), is read by some serveops
panel, or is left out in dashboards/spec.py (LEFT_OUT_OF_RAY_DASHBOARDS) with its reason. Ray's panels
are read from the installed package, so a Ray upgrade that charts something new shows up here.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
from collections.abc import Iterable
from functools import cache
from typing import Any

import pytest

from alerts.metric_contract import FIXTURE
from alerts.required_metrics import metric_names
from dashboards.catalog import all_dashboards
from dashboards.spec import LEFT_OUT_OF_RAY_DASHBOARDS, DashboardSpec, PanelSpec
from stack.config import load

RAY_PANELS = "ray.dashboard.modules.metrics.dashboards."
RAY_BOARDS = ("serve_dashboard_panels", "serve_deployment_dashboard_panels", "serve_llm_dashboard_panels",
              "default_dashboard_panels")
HISTOGRAM_SAMPLE = re.compile(r"_(bucket|count|sum)$")
# A bare selector by name, as Ray writes for HTTP and gRPC at once: {__name__=~"ray_serve_(http|grpc)_..."}
NAME_MATCHER = re.compile(r'__name__\s*=~\s*"([^"]+)"')


@cache
def contract() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text())


def families(samples: dict[str, Any]) -> dict[str, str]:
    """Sample name -> family: a histogram's _bucket/_count/_sum are one family; a gauge named *_count is
    its own (ray_node_disk_io_read_count)."""
    return {n: HISTOGRAM_SAMPLE.sub("", n) if s["type"] in ("histogram", "summary") else n
            for n, s in samples.items()}


def family(name: str, exported: dict[str, str]) -> str:
    """The family a PromQL name reads. Ray's panels name most metrics with the ray_ prefix its export
    adds, but not all (autoscaler_*): a name the export has only with the prefix is that family."""
    for candidate in (name, f"ray_{name}"):
        if candidate in exported:
            return exported[candidate]
    return HISTOGRAM_SAMPLE.sub("", name)  # not exported: vLLM's histograms before LLM traffic, say


def read(expr: str, exported: dict[str, str]) -> set[str]:
    """Every family an expression charts, a {__name__=~...} selector's matches included."""
    found = {family(n, exported) for n in metric_names(expr)}
    for pattern in NAME_MATCHER.findall(expr):
        found |= {f for n, f in exported.items() if re.fullmatch(pattern, n)}
    return found


@cache
def ray_charted() -> dict[str, str]:
    """Family -> the first Ray panel that charts it, over the four dashboards ours replace."""
    exported = families(contract()["samples"])
    charted: dict[str, str] = {}
    for module in RAY_BOARDS:
        mod = importlib.import_module(RAY_PANELS + module)
        config = next(v for v in vars(mod).values() if type(v).__name__ == "DashboardConfig")
        filters = ",".join(config.standard_global_filters)
        for panel in [*config.panels, *(p for row in config.rows for p in row.panels)]:
            for target in panel.targets:
                # As Ray renders them: its dashboard's filters in place of {global_filters}.
                for name in sorted(read(target.expr.format(global_filters=filters), exported)):
                    charted.setdefault(name, f"Ray {config.name}: {panel.title}")
    return charted


def ours(boards: Iterable[DashboardSpec]) -> set[str]:
    exported = families(contract()["samples"])
    return {f for b in boards for p in b.panels for query in p.queries for f in read(query.expr, exported)}


def left_out(name: str) -> str | None:
    return next((why for pattern, why in LEFT_OUT_OF_RAY_DASHBOARDS.items() if re.fullmatch(pattern, name)),
                None)


def gaps(boards: Iterable[DashboardSpec]) -> dict[str, str]:
    """Families Ray charts and the stack exports that no serveops panel reads and none is left out."""
    exported = set(families(contract()["samples"]).values())
    charted = ours(boards)
    return {f: where for f, where in sorted(ray_charted().items())
            if f in exported and f not in charted and left_out(f) is None}


def test_rays_panels_are_read() -> None:
    charted = ray_charted()
    # One family from each dashboard, and one without the ray_ prefix (autoscaler_*).
    assert {"ray_serve_num_http_requests_total", "ray_serve_replica_processing_queries",
            "ray_vllm_time_to_first_token_seconds", "ray_node_cpu_utilization",
            "autoscaler_active_nodes"} <= set(charted)
    assert len(charted) > 80, len(charted)


def test_every_family_ray_charts_and_we_export_is_charted_or_left_out_with_a_reason() -> None:
    missing = gaps(all_dashboards(load()))
    assert missing == {}, "\n".join(f"{f} ({where}): chart it, or list it in LEFT_OUT_OF_RAY_DASHBOARDS"
                                    for f, where in missing.items())


def test_what_is_left_out_is_charted_by_ray_and_not_by_us() -> None:
    charted, mine = ray_charted(), ours(all_dashboards(load()))
    for pattern, why in LEFT_OUT_OF_RAY_DASHBOARDS.items():
        matched = [f for f in charted if re.fullmatch(pattern, f)]
        assert matched, f"{pattern}: no Ray panel charts it any more; drop it"
        assert why
        assert not [f for f in matched if f in mine], f"{pattern}: left out, yet a serveops panel reads it"


@pytest.mark.parametrize("name", ["ray_node_network_receive_speed", "ray_object_store_memory",
                                  "ray_serve_controller_control_loop_duration_s",
                                  "ray_serve_replica_processing_queries"])
def test_a_catalog_without_the_panel_fails_naming_the_family(name: str) -> None:
    boards = all_dashboards(load())
    exported = families(contract()["samples"])

    def reads(panel: PanelSpec) -> bool:
        return any(name in read(query.expr, exported) for query in panel.queries)

    without = [dataclasses.replace(b, panels=tuple(p for p in b.panels if not reads(p))) for b in boards]
    assert sum(len(b.panels) for b in without) < sum(len(b.panels) for b in boards)
    assert name in gaps(without) and gaps(without)[name].startswith("Ray ")


def test_families_follow_the_export() -> None:
    exported = families(contract()["samples"])
    assert family("ray_serve_http_request_latency_ms_bucket", exported) == "ray_serve_http_request_latency_ms"
    assert family("ray_node_disk_io_read_count", exported) == "ray_node_disk_io_read_count"  # a gauge
    assert family("serve_num_http_requests_total", exported) == "ray_serve_num_http_requests_total"
    assert family("ray_vllm_request_prompt_tokens_sum", exported) == "ray_vllm_request_prompt_tokens"
    selector = 'sum(rate({__name__=~"ray_serve_(http|grpc)_request_latency_ms_bucket"}[5m]))'
    assert "ray_serve_http_request_latency_ms" in read(selector, exported)
