"""Prometheus-operator and Grafana objects: PodMonitors for the Ray pods, and the PrometheusRule and
dashboard ConfigMaps exactly as `make alerts` and `make dashboards` generate them, in our namespace."""

from __future__ import annotations

from typing import Any

import yaml

from stack.config import OpsConfig
from stack.k8s import NAMESPACE, metadata

# The job name of the local scrape config (stack/local/monitoring.py); RayMetricsTargetDown and
# RayMetricsAbsent select up{job="ray"}, so the cluster's targets must carry it too.
RAY_JOB = "ray"
# Port names each PodMonitor scrapes; the Ray containers declare them (stack/k8s/rayservice.py).
SCRAPED_PORTS = {"head": ("metrics", "as-metrics", "dash-metrics"), "worker": ("metrics",)}


def _relabelings() -> list[dict[str, Any]]:
    return [
        # The operator sets job=<namespace>/<PodMonitor>; user relabelings run after its own.
        {"action": "replace", "targetLabel": "job", "replacement": RAY_JOB},
        # Ray's own Grafana dashboards filter by cluster on this label.
        {"action": "replace", "sourceLabels": ["__meta_kubernetes_pod_label_ray_io_cluster"],
         "targetLabel": "ray_io_cluster"},
    ]


def pod_monitor(ops: OpsConfig, node_type: str) -> dict[str, Any]:
    """KubeRay's recommended PodMonitor: the Ray pods of one node type, by KubeRay's labels."""
    interval = f"{ops.observability.scrape_interval_s}s"
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": metadata(f"serveops-ray-{node_type}", "monitoring"),
        "spec": {
            "namespaceSelector": {"matchNames": [NAMESPACE]},
            "selector": {"matchLabels": {"ray.io/node-type": node_type, "ray.io/is-ray-node": "yes"}},
            "podMetricsEndpoints": [{"port": port, "interval": interval, "relabelings": _relabelings()}
                                    for port in SCRAPED_PORTS[node_type]],
        },
    }


def prometheus_rule(ops: OpsConfig) -> dict[str, Any]:
    """alerts/k8s/serveops-prometheusrule.yaml, from its own generator, in our namespace."""
    from alerts import generate as alerts

    rule = yaml.safe_load(alerts.prometheus_rule(ops))
    rule["metadata"] = {"name": rule["metadata"]["name"], "namespace": NAMESPACE, **rule["metadata"]}
    return rule


def dashboard_configmaps(ops: OpsConfig) -> list[dict[str, Any]]:
    """dashboards/k8s/*-configmap.yaml, from their own generator, in our namespace."""
    from dashboards import generate as dashboards

    found = []
    for path, text in sorted(dashboards.rendered(ops).items()):
        if path.parent == dashboards.OUT / "k8s":
            cm = yaml.safe_load(text)
            cm["metadata"] = {"name": cm["metadata"]["name"], "namespace": NAMESPACE, **cm["metadata"]}
            found.append(cm)
    return found
