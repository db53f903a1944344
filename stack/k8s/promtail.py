"""Log shipping for the Ray pods: a Promtail sidecar reading Serve's JSON logs, pushing to Loki.

Ray writes its logs inside the container under /tmp/ray, so, as Ray's own log-persistence guide does,
each Ray pod mounts an emptyDir there and a sidecar reads it. The sidecar mounts the volume at the
same path, so the session_latest symlink (absolute, to /tmp/ray/session_<date>) resolves in it too.
Promtail configs convert to Grafana Alloy with `alloy convert --source-format=promtail`.
"""

from __future__ import annotations

from typing import Any

from stack.k8s import NAMESPACE, metadata

CONFIGMAP = "serveops-promtail"
CONFIG_KEY = "config.yaml"
IMAGE = "grafana/promtail:3.5.0"
# Placeholder: the push endpoint of the cluster's Loki (or Loki gateway).
LOKI_PUSH_URL = "http://loki-gateway.monitoring.svc.cluster.local/loki/api/v1/push"
RAY_LOGS_VOLUME = "ray-logs"
RAY_TMP = "/tmp/ray"
SERVE_LOGS = f"{RAY_TMP}/session_latest/logs/serve/*.log"
CONFIG_DIR = "/etc/promtail"
POSITIONS_DIR = "/run/promtail"

# Extracted name -> field of Serve's JSON log record (JMESPath). Every request line of a replica has
# all of them; lines outside a request (start-up, health checks) lack the request fields and keep going.
JSON_FIELDS = {
    "level": "levelname",
    "application": "application",
    "deployment": "deployment",
    "replica": "replica",
    "component": "component_name",
    "route": "route",
    "request_id": "request_id",
    "trace_id": "trace_id",
    "span_id": "span_id",
    "timestamp_ns": "timestamp_ns",
}
# Index labels: few values each. Per-request and per-replica ids would make a stream per request, so
# they go to structured metadata, still filterable (`{deployment="embed_Embedder"} | trace_id="..."`).
LABELS = ("level", "application", "deployment", "component")
STRUCTURED_METADATA = ("replica", "route", "request_id", "trace_id", "span_id")


def config() -> dict[str, Any]:
    """Promtail's config; ${...} are the sidecar's env, expanded by -config.expand-env."""
    return {
        "server": {"http_listen_port": 9080, "grpc_listen_port": 0},
        "positions": {"filename": f"{POSITIONS_DIR}/positions.yaml"},
        "clients": [{"url": LOKI_PUSH_URL}],
        "scrape_configs": [{
            "job_name": "serve",
            "static_configs": [{
                "targets": ["localhost"],
                "labels": {"job": f"{NAMESPACE}/serve", "namespace": "${POD_NAMESPACE}", "pod": "${POD_NAME}",
                           "ray_node_type": "${RAY_NODE_TYPE}", "__path__": SERVE_LOGS},
            }],
            "pipeline_stages": [
                {"json": {"expressions": dict(JSON_FIELDS)}},
                {"labels": {name: name for name in LABELS}},
                {"structured_metadata": {name: name for name in STRUCTURED_METADATA}},
                {"timestamp": {"source": "timestamp_ns", "format": "UnixNs"}},
            ],
        }],
    }


def configmap(text: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(CONFIGMAP, "logs"),
            "data": {CONFIG_KEY: text}}


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def sidecar() -> dict[str, Any]:
    return {
        "name": "promtail",
        "image": IMAGE,
        "args": [f"-config.file={CONFIG_DIR}/{CONFIG_KEY}", "-config.expand-env=true"],
        "env": [_field_env("POD_NAME", "metadata.name"), _field_env("POD_NAMESPACE", "metadata.namespace"),
                _field_env("RAY_NODE_TYPE", "metadata.labels['ray.io/node-type']")],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                      "limits": {"cpu": "200m", "memory": "256Mi"}},
        "volumeMounts": [{"name": RAY_LOGS_VOLUME, "mountPath": RAY_TMP, "readOnly": True},
                         {"name": "promtail-config", "mountPath": CONFIG_DIR, "readOnly": True},
                         {"name": "promtail-positions", "mountPath": POSITIONS_DIR}],
    }


def volumes() -> list[dict[str, Any]]:
    """The pod's volumes for the sidecar, the shared Ray log directory included."""
    return [{"name": RAY_LOGS_VOLUME, "emptyDir": {}},
            {"name": "promtail-config", "configMap": {"name": CONFIGMAP}},
            {"name": "promtail-positions", "emptyDir": {}}]
