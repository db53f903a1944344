"""Prometheus-operator and Grafana objects: PodMonitors for the Ray pods, and the PrometheusRule and
dashboard ConfigMaps built from the committed rule file and dashboard JSON, in our namespace.

They read the artifacts rather than their generators: `make generate` writes the rules and dashboards
first, and each is checked for drift at its own generator, so the manifests follow what is committed.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from stack import cluster_labels
from stack.artifacts import DASHBOARDS_DIR, RULES_FILE
from stack.config import OpsConfig
from stack.k8s import NAMESPACE, metadata

# The job name of the local scrape config (stack/local/monitoring.py); RayMetricsTargetDown and
# RayMetricsAbsent select up{job="ray"}, so the cluster's targets must carry it too.
RAY_JOB = "ray"
# Port names each PodMonitor scrapes; the Ray containers declare them (stack/k8s/rayservice.py).
# "exemplars": serveops_request_latency_ms, from an actor on the head (serving/observability/exemplars.py).
SCRAPED_PORTS = {"head": ("metrics", "as-metrics", "dash-metrics", "exemplars"), "worker": ("metrics",)}


def _relabelings() -> list[dict[str, Any]]:
    return [
        # The operator sets job=<namespace>/<PodMonitor>; user relabelings run after its own.
        {"action": "replace", "targetLabel": "job", "replacement": RAY_JOB},
        # Ray's own Grafana dashboards filter by cluster on this label.
        {"action": "replace", "sourceLabels": ["__meta_kubernetes_pod_label_ray_io_cluster"],
         "targetLabel": cluster_labels.CLUSTER},
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


def prometheus_rule() -> dict[str, Any]:
    """The groups of alerts/serveops.rules.yaml as a prometheus-operator PrometheusRule."""
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": metadata("serveops", "alerts"), "spec": {"groups": groups}}


def dashboard_configmaps() -> list[dict[str, Any]]:
    """One ConfigMap per dashboards/json/<uid>.json, labelled for Grafana's sidecar.

    The JSON goes in minified: the readable copy is dashboards/json/, and this one stays far below
    kubectl's 256 KiB limit on the last-applied annotation as the dashboards grow.
    """
    found = []
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        board = json.dumps(json.loads(path.read_text()), separators=(",", ":"), sort_keys=True) + "\n"
        meta = metadata(f"{path.stem}-dashboard", "dashboards")
        meta["labels"] = {**meta["labels"], "grafana_dashboard": "1"}  # type: ignore[dict-item]
        found.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {path.name: board}})
    return found
