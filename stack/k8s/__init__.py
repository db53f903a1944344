"""Kubernetes manifests generated from the ops config (`make k8s`): KubeRay, monitoring and logs.

The local stack runs the cpu or gpu profile on one machine; on a cluster the gpu profile runs as a
KubeRay RayService. Names here are a contract the runbooks' kubectl steps rely on.
"""

from __future__ import annotations

from stack import ROOT

K8S_DIR = ROOT / "stack" / "k8s"
MANIFESTS_DIR = K8S_DIR / "manifests"
PROFILE = "gpu"  # a cluster runs the guide's production values
NAMESPACE = "serveops"
RAYSERVICE = "serveops"
# Placeholder: an image built from this repo (see docs/kubernetes.md, "The image"); the Serve
# apps import stack.* and the tracing hook, so the stock rayproject/ray image cannot run them.
IMAGE = "serveops:latest"
# The pin in requirements/*.txt; tests check the installed Ray agrees.
RAY_VERSION = "2.60.0"


def labels(component: str) -> dict[str, str]:
    """Labels of every object serveops creates (KubeRay adds its own ray.io/* labels to the Ray pods)."""
    return {"app.kubernetes.io/name": "serveops", "app.kubernetes.io/part-of": "serveops",
            "app.kubernetes.io/component": component}


def metadata(name: str, component: str) -> dict[str, object]:
    return {"name": name, "namespace": NAMESPACE, "labels": labels(component)}
