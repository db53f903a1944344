"""The Redis that keeps the GCS's state (GCS fault tolerance), as KubeRay's external-Redis setup has it.

Locally Redis listens on listen.redis_port (6380) because the GCS holds 6379 on the same host; in the
cluster each has its own pod, so Redis keeps its standard port. One replica without replication: a
production cluster should point gcsFaultToleranceOptions.redisAddress at an HA Redis instead.
"""

from __future__ import annotations

from typing import Any

from stack.k8s import labels, metadata

NAME = "serveops-redis"
PORT = 6379
IMAGE = "redis:7.2-alpine"
COMPONENT = "gcs-store"
ADDRESS = f"redis://{NAME}:{PORT}"  # the Service below, resolved in the RayService's namespace


def deployment() -> dict[str, Any]:
    selector = labels(COMPONENT)
    container = {
        "name": "redis",
        "image": IMAGE,
        # Append-only file on the pod's volume: a restarted Redis container keeps the GCS's state.
        "args": ["--appendonly", "yes", "--dir", "/data"],
        "ports": [{"name": "redis", "containerPort": PORT}],
        "readinessProbe": {"exec": {"command": ["redis-cli", "ping"]}, "periodSeconds": 5},
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"},
                      "limits": {"cpu": "500m", "memory": "1Gi"}},
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(NAME, COMPONENT),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},  # never two writers on one append-only file
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": selector},
                         "spec": {"containers": [container], "volumes": [{"name": "data", "emptyDir": {}}]}},
        },
    }


def service() -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": metadata(NAME, COMPONENT),
        "spec": {"selector": labels(COMPONENT),
                 "ports": [{"name": "redis", "port": PORT, "targetPort": "redis"}]},
    }
