"""`make k8s`: write the Kubernetes manifests under stack/k8s/manifests/ from the ops config.

Numbered files, so `kubectl apply -f stack/k8s/manifests/` applies them in order: the namespace, the
Redis behind GCS fault tolerance, the Promtail config the Ray pods mount, the RayService, then the
monitoring objects, whose rules and dashboards come from the committed alerts/serveops.rules.yaml and
dashboards/json/. Also the Chaos Mesh form of the chaos experiments, one file each under
stack/k8s/chaos-mesh/: not under manifests/, so applying manifests/ injects no fault. Committed; `--check`
fails when a file in either folder drifts from this generator, or is one it no longer writes.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from stack import artifacts
from stack.artifacts import MANIFESTS_DIR
from stack.config import OpsConfig, load
from stack.k8s import (
    NAMESPACE,
    PROFILE,
    chaos_mesh,
    labels,
    monitoring,
    promtail,
    rayservice,
    redis,
    sizing,
)

HEADER = artifacts.header("stack/k8s/generate.py")
# Folders whose every file is this generator's: the drift check also names a file it no longer writes.
OWNED = (MANIFESTS_DIR, chaos_mesh.CHAOS_MESH_DIR)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the Serve config, dashboards, Promtail's config) as readable literal blocks,
    and no anchors: a reader of a manifest should not have to resolve `*id001`."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(objects: list[dict[str, Any]], notes: Sequence[str] = ()) -> str:
    comments = "".join(f"# {line}\n" for line in notes)
    body = "---\n".join(yaml.dump(o, Dumper=_Dumper, sort_keys=False, width=120) for o in objects)
    return HEADER + comments + body


def namespace() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": NAMESPACE, "labels": labels("namespace")}}


def rendered(ops: OpsConfig) -> dict[Path, str]:
    """Every file `make k8s` writes, by path."""
    groups = sizing.worker_groups(ops.profile(PROFILE))
    promtail_config = yaml.dump(promtail.config(), Dumper=_Dumper, sort_keys=False)
    host = rayservice.POD_LISTEN_HOST
    ray_service = rayservice.rayservice(ops, groups)
    manifests = {
        "00-namespace.yaml": dump([namespace()]),
        "10-redis.yaml": dump([redis.deployment(), redis.service()],
                              ["Redis for the GCS's state: KubeRay's GCS fault tolerance."]),
        # Before the RayService: its pods mount this ConfigMap and would wait for it.
        "20-promtail.yaml": dump([promtail.configmap(promtail_config)],
                                 ["Promtail sidecar config (stack/k8s/promtail.py)."]),
        "30-rayservice.yaml": dump(
            [ray_service],
            [f"The {PROFILE} profile's Serve config on KubeRay; http_options.host is {host} in the pods "
             "(see stack/k8s/rayservice.py).", *rayservice.sizing_notes(groups)]),
        "40-podmonitors.yaml": dump([monitoring.pod_monitor(ops, t) for t in ("head", "worker")]),
        "50-prometheusrule.yaml": dump([monitoring.prometheus_rule()],
                                       ["The rules of alerts/serveops.rules.yaml."]),
        "60-dashboards.yaml": dump(monitoring.dashboard_configmaps(),
                                   ["dashboards/json/, minified; Grafana's sidecar loads ConfigMaps "
                                    "labelled grafana_dashboard."]),
    }
    chaos = {chaos_mesh.CHAOS_MESH_DIR / f"{name}.yaml": dump(objects, notes)
             for name, (objects, notes) in chaos_mesh.rendered(ray_service, groups).items()}
    return {**{MANIFESTS_DIR / name: text for name, text in manifests.items()}, **chaos}


def main(argv: list[str] | None = None) -> int:
    ops = load()
    return artifacts.emit("k8s", lambda: rendered(ops), owned=OWNED, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
