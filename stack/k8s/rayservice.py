"""The RayService: the gpu profile's Serve config on a KubeRay-managed Ray cluster.

KubeRay names the RayCluster it creates `serveops-<suffix>` and labels its pods ray.io/cluster=<that
name>, ray.io/node-type=head|worker, ray.io/group, ray.io/is-ray-node=yes, and ray.io/serve=true on
the pods whose Serve proxy is ready (the head: proxy_location is HeadOnly).
"""

from __future__ import annotations

from typing import Any

from stack import levers, serve_config
from stack.config import OpsConfig
from stack.k8s import IMAGE, PROFILE, RAY_VERSION, RAYSERVICE, labels, metadata, promtail, redis, sizing
from stack.local import gcs_store, ray_head
from stack.serving.observability import exemplars
from stack.serving.observability.tracing import TRACE_DIR_ENV

# Inside a pod the proxy must listen on the pod's address: KubeRay's serve Service sends traffic to the
# pod IP, and a proxy on loopback would never get it. The pod network, not the bind address, is the
# boundary there (a NetworkPolicy; see docs/security.md). Locally every listener stays on 127.0.0.1.
POD_LISTEN_HOST = "0.0.0.0"
CLIENT_PORT = 10001  # Ray client server; KubeRay's default head port
AUTOSCALER_METRICS_PORT = 44217  # Ray's defaults, scraped on the head as KubeRay's docs do
DASHBOARD_METRICS_PORT = 44227
# Local spans go to .run/traces; in a pod, to the Ray volume (set observability.otlp_endpoint for Tempo).
POD_TRACE_DIR = f"{promtail.RAY_TMP}/serveops-traces"
SHM_VOLUME = "dshm"


def serve_config_for_pods(ops: OpsConfig) -> dict[str, Any]:
    """stack.serve_config's gpu config, but for the listeners' host (see POD_LISTEN_HOST): the proxy's and the
    exemplar exporter's, which the head PodMonitor scrapes at the pod's address."""
    config = serve_config.build(ops, PROFILE)
    config["http_options"] = {**config["http_options"], "host": POD_LISTEN_HOST}
    env = config["controller_options"]["runtime_env"]["env_vars"]
    env[exemplars.LISTEN_ENV] = f"{POD_LISTEN_HOST}:{ops.listen.exemplars_port}"
    return config


def ray_env(ops: OpsConfig) -> list[dict[str, str]]:
    """The local head's environment (profile env, tracing, latency buckets) for every Ray container.

    Each pod runs its own raylet, so head and workers get the same env. KubeRay itself sets the GCS
    fault-tolerance variables from gcsFaultToleranceOptions, so the local Redis address is dropped.
    """
    cluster = ops.profile(PROFILE).cluster
    local_only = [n for n in cluster.levers if levers.LEVERS[n].needs_listen_env]
    if local_only:  # the wrapper and Ray's binary are paths on this machine, not in the image
        raise ValueError(f"levers {local_only} are for the local stack only so far; the {PROFILE} profile "
                         "that the manifests use cannot run them")
    env = ray_head.head_env(ops, cluster, base={})
    for key in gcs_store.ray_env(ops):
        env.pop(key, None)
    env[TRACE_DIR_ENV] = POD_TRACE_DIR
    return [{"name": k, "value": v} for k, v in env.items()]


def _port(name: str, port: int) -> dict[str, Any]:
    return {"name": name, "containerPort": port}


def head_ports(ops: OpsConfig) -> list[dict[str, Any]]:
    # KubeRay's default port names: its head and serve Services are built from them.
    listen = ops.listen
    return [_port("gcs-server", listen.gcs_port), _port("dashboard", listen.dashboard_port),
            _port("client", CLIENT_PORT), _port("serve", listen.serve_port),
            _port("metrics", listen.metrics_port), _port("as-metrics", AUTOSCALER_METRICS_PORT),
            _port("dash-metrics", DASHBOARD_METRICS_PORT), _port("exemplars", listen.exemplars_port)]


def pod_template(ops: OpsConfig, container: str, shape: sizing.PodShape, ports: list[dict[str, Any]],
                 component: str) -> dict[str, Any]:
    ray = {
        "name": container,  # KubeRay takes the first container as Ray's
        "image": IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "env": ray_env(ops),
        "ports": ports,
        "resources": shape.resources(),
        "volumeMounts": [{"name": promtail.RAY_LOGS_VOLUME, "mountPath": promtail.RAY_TMP},
                         {"name": SHM_VOLUME, "mountPath": "/dev/shm"}],
    }
    spec: dict[str, Any] = {
        "containers": [ray, promtail.sidecar()],
        # Ray's object store and vLLM's workers use /dev/shm; a container's default is 64 MiB.
        "volumes": [*promtail.volumes(), {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}}],
    }
    if shape.gpus:
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return {
        # kubectl exec and kubectl logs (the runbooks' k8s steps) reach Ray's container, not the sidecar.
        "metadata": {"labels": labels(component),
                     "annotations": {"kubectl.kubernetes.io/default-container": container}},
        "spec": spec,
    }


def worker_group(ops: OpsConfig, size: sizing.GroupSize) -> dict[str, Any]:
    return {
        "groupName": size.name,
        # Set although the autoscaler owns it, so `kubectl patch .../workerGroupSpecs/0/replicas` applies.
        "replicas": size.min_pods,
        "minReplicas": size.min_pods,
        "maxReplicas": size.max_pods,
        "rayStartParams": {"metrics-export-port": str(ops.listen.metrics_port)},
        "template": pod_template(ops, "ray-worker", size.shape, [_port("metrics", ops.listen.metrics_port)],
                                 size.name),
    }


def rayservice(ops: OpsConfig, groups: list[sizing.GroupSize]) -> dict[str, Any]:
    cluster_config: dict[str, Any] = {
        "rayVersion": RAY_VERSION,
        # Serve's autoscaler asks for replicas; the Ray autoscaler adds worker pods for those that do
        # not fit, between each group's minReplicas and maxReplicas, and removes idle ones.
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": {
            "upscalingMode": "Default",
            "idleTimeoutSeconds": 60,
            "resources": {"requests": {"cpu": "500m", "memory": "512Mi"},
                          "limits": {"cpu": "500m", "memory": "512Mi"}},
        },
        "headGroupSpec": {
            "rayStartParams": {
                "dashboard-host": POD_LISTEN_HOST,  # KubeRay submits serveConfigV2 through the dashboard
                "num-cpus": "0",  # no replicas on the head: a replica's OOM must not take the GCS down
                "metrics-export-port": str(ops.listen.metrics_port),
            },
            "template": pod_template(ops, "ray-head", sizing.HEAD, head_ports(ops), "ray-head"),
        },
        "workerGroupSpecs": [worker_group(ops, g) for g in groups],
    }
    if ops.profile(PROFILE).cluster.gcs_fault_tolerance:
        # KubeRay's GCS fault tolerance: the GCS keeps its tables in this Redis, so a restarted head pod
        # recovers the cluster and Serve's applications while the workers keep serving. KubeRay sets
        # RAY_REDIS_ADDRESS and the storage namespace on the head, as stack.local.gcs_store does locally.
        cluster_config["gcsFaultToleranceOptions"] = {"redisAddress": redis.ADDRESS,
                                                      "externalStorageNamespace": gcs_store.NAMESPACE}
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": metadata(RAYSERVICE, "ray"),
        "spec": {"serveConfigV2": serve_config.render(serve_config_for_pods(ops)),
                 "rayClusterConfig": cluster_config},
    }


def sizing_notes(groups: list[sizing.GroupSize]) -> list[str]:
    """Comment lines for the generated file: how each group's bounds follow from the ops config."""
    lines = ["Worker groups, from the deployments' autoscaling bounds (stack/resources.py):"]
    for g in groups:
        lo, hi, s = g.demand("min"), g.demand("max"), g.shape
        gpus = (f", {s.gpus} GPU", f", {lo.gpus:g}-{hi.gpus:g} GPU") if s.gpus else ("", "")
        lines.append(
            f"  {g.name}: {g.min_pods}-{g.max_pods} pods of {s.cpus} CPU, {s.memory_gib}Gi{gpus[0]}; "
            f"replicas at min-max need {lo.cpus:g}-{hi.cpus:g} CPU{gpus[1]}, "
            f"{lo.memory_bytes / sizing.GIB:.1f}-{hi.memory_bytes / sizing.GIB:.1f} GiB of Ray memory "
            f"({1 - sizing.OBJECT_STORE_SHARE:g} of a pod's)")
        lines.append(f"    ({', '.join(d.name for d in g.deployments)})")
    return lines
