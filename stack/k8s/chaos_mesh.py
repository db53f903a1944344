"""The Chaos Mesh form of the chaos experiments: `make k8s` writes stack/k8s/chaos-mesh/<experiment>.yaml.

Each experiment with a Kubernetes equivalent (FORMS) becomes the Chaos Mesh resources that inject the
same fault into the RayService's pods, selected by namespace and KubeRay's ray.io/* labels; each
resource carries the experiment's expectations (alerts, detection bound, runbook) as annotations.
Where the local form has stages (a heal step, several inject steps), a Serial Workflow runs the fault
for a held time, then a Suspend until the recovery bound. The rest are in NO_EQUIVALENT, with why.

The folder is beside manifests/, not in it, so `kubectl apply -f stack/k8s/manifests/` never injects a
fault. The experiments are read as YAML files, not through chaos.experiment: chaos imports stack.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Callable
from typing import Any

import yaml

from stack import ROOT
from stack.k8s import K8S_DIR, labels, sizing

API_VERSION = "chaos-mesh.org/v1alpha1"
CHAOS_MESH_DIR = K8S_DIR / "chaos-mesh"
EXPERIMENTS_DIR = ROOT / "chaos" / "experiments"
# Labels KubeRay gives the Ray pods (stack/k8s/rayservice.py); the cluster's own has a random suffix.
NODE_TYPE, GROUP, IS_RAY_NODE = "ray.io/node-type", "ray.io/group", "ray.io/is-ray-node"
ANNOTATION_PREFIX = "serveops.dev/"
# Several stress workers rather than one: if the kernel's OOM killer acts before Ray's memory monitor, it
# takes one worker (oomScoreAdj below) and the others keep the pod under pressure.
STRESS_WORKERS = 4
STRESS_OOM_SCORE_ADJ = 1000  # the kernel's first pick: a stress worker, never the raylet
NOTE_WIDTH = 106  # the comment lines heading a file, with "# " in front
# A Workflow template's field for each chaos kind it embeds.
TEMPLATE_FIELD = {"PodChaos": "podChaos", "NetworkChaos": "networkChaos", "StressChaos": "stressChaos"}

Resource = dict[str, Any]
Form = tuple[list[Resource], str]  # the resources, and a note on how they differ from the local experiment

NO_EQUIVALENT: dict[str, str] = {
    "hung-replica": "SIGSTOP of one replica's process: Chaos Mesh acts on pods and containers, not on one "
                    "Ray worker process inside a pod (pod-failure would stop every replica on the pod and "
                    "its raylet with them)",
    "half-alive": "the fault hook (.run/faults.json, a local file the replicas read) hangs one replica's "
                  "handler while its health check passes; the gpu profile installs no hook "
                  "(fault_injection is off) and Chaos Mesh cannot hang one handler in a live process",
    "half-alive-unwatched": "the fault hook's hang, as half-alive, after redeploying the local Serve app "
                            "with the watchdog off: neither is a Chaos Mesh fault",
    "slo-burn": "the fault hook's 503 share and delay happen inside Serve; HTTPChaos acts at the pod's "
                "port, outside Serve, so Serve's metrics, which the burn-rate alerts read, would count the "
                "original answers and timings, and it has no per-request share (50%)",
    "metric-missing": "edits the local Prometheus's config (.run/prometheus/prometheus.yml) to drop a metric "
                      "at scrape; on a cluster that is a PodMonitor metricRelabelings change, not a fault",
    "bad-rollout": "a release rolled out to the local Serve app; on a cluster a release is a change to the "
                   "RayService's serveConfigV2 (kubectl apply), which Chaos Mesh does not make",
    "rolling-update": "a good release under load, no fault and no alert; on a cluster a serveConfigV2 change "
                      "to the RayService",
    "oscillation": "redeploys the local Serve app with aggressive autoscaling and sends a square-wave load: "
                   "Chaos Mesh neither changes Serve's config nor generates load",
}


def experiment(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((EXPERIMENTS_DIR / f"{name}.yaml").read_text())
    return data


def annotations(exp: dict[str, Any]) -> dict[str, str]:
    """The experiment's expectations, for whoever reads the verdict (`make runbook`, `make scorecard`)."""
    expected = [{"alert": e["alert"], "labels": e.get("labels", {})} for e in exp["expect"]]
    values = {"experiment": exp["name"], "hypothesis": exp["hypothesis"],
              "expected-alerts": json.dumps(expected), "detect-within-s": f"{exp['detect_within_s']:g}",
              "runbook": exp["runbook"]["name"]}
    return {ANNOTATION_PREFIX + key: value for key, value in values.items()}


def resource(kind: str, exp: dict[str, Any], namespace: str, spec: dict[str, Any]) -> Resource:
    meta = {"name": exp["name"], "namespace": namespace, "labels": labels("chaos"),
            "annotations": annotations(exp)}
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": meta, "spec": spec}


def ray_pods(namespace: str, node_type: str, group: str | None = None) -> dict[str, Any]:
    """A Chaos Mesh selector: the Ray pods of a node type (and worker group), by KubeRay's labels."""
    found = {NODE_TYPE: node_type, IS_RAY_NODE: "yes"}
    if group:
        found[GROUP] = group
    return {"namespaces": [namespace], "labelSelectors": found}


def duration(seconds: float) -> str:
    return f"{seconds:g}s"


def group_of(exp: dict[str, Any], groups: list[sizing.GroupSize]) -> sizing.GroupSize:
    """The worker group the experiment's target runs on: where sizing places the deployment, or, for an app
    the experiment adds itself (the memory hog), the group its ray_actor_options would put it on."""
    app, name = exp["target"]["app"], exp["target"]["deployment"]
    for group in groups:
        if any(d.app == app and d.deployment == name for d in group.deployments):
            return group
    for step in exp.get("setup", []):
        if step["name"] == "add_app" and step["args"]["name"] == app:
            for d in step["args"]["deployments"]:
                if d["name"] == name:
                    gpus = d.get("ray_actor_options", {}).get("num_gpus", 0)
                    return next(g for g in groups if bool(g.shape.gpus) == bool(gpus))
    raise ValueError(f"{exp['name']}: {app}/{name} is neither in a worker group nor added by its setup")


def ray_container(ray_service: Resource, group: str) -> str:
    """The name of a worker group's Ray container (KubeRay's convention: the first)."""
    specs = ray_service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    (spec,) = [g for g in specs if g["groupName"] == group]
    name: str = spec["template"]["spec"]["containers"][0]["name"]
    return name


def workflow(exp: dict[str, Any], namespace: str, step: str, kind: str, chaos: dict[str, Any],
             held_s: float) -> Resource:
    """The fault held for held_s (a chaos template's deadline is its duration), then a Suspend until the
    experiment's recovery bound: the Workflow accomplished is the time to read the verdict."""
    total = exp["recover_within_s"]
    if not 0 < held_s < total:
        raise ValueError(f"{exp['name']}: the fault must end within recover_within_s ({total}s), "
                         f"not after {held_s}s")
    templates = [
        {"name": exp["name"], "templateType": "Serial", "deadline": duration(total),
         "children": [step, "recover"]},
        {"name": step, "templateType": kind, "deadline": duration(held_s), TEMPLATE_FIELD[kind]: chaos},
        {"name": "recover", "templateType": "Suspend", "deadline": duration(total - held_s)},
    ]
    return resource("Workflow", exp, namespace, {"entry": exp["name"], "templates": templates})


def replica_crash(exp: dict[str, Any], ray_service: Resource, groups: list[sizing.GroupSize]) -> Form:
    group = group_of(exp, groups)
    namespace = ray_service["metadata"]["namespace"]
    # No grace period: the pod's processes get SIGKILL, as the local engine's replica does.
    spec = {"action": "pod-kill", "mode": "one", "gracePeriod": 0,
            "selector": ray_pods(namespace, "worker", group.name)}
    target = f"{exp['target']['app']}/{exp['target']['deployment']}"
    note = (f"{exp['name']}: locally one {target} replica is killed (SIGKILL); here one {group.name} pod, "
            f"the group sizing places {target} on, with every replica on it. Ray pods carry no per-replica "
            f"label: with more than one {group.name} pod, the one killed may hold no {target} replica.")
    return [resource("PodChaos", exp, namespace, spec)], note


def head_partition(exp: dict[str, Any], ray_service: Resource, groups: list[sizing.GroupSize]) -> Form:
    namespace = ray_service["metadata"]["namespace"]
    # Held through the detection bound, as the local SIGSTOP lasts until the alert and the diagnosis.
    held = exp["detect_within_s"]
    partition = {"action": "partition", "mode": "all", "selector": ray_pods(namespace, "head"),
                 "direction": "both", "target": {"mode": "all", "selector": ray_pods(namespace, "worker")}}
    note = (f"{exp['name']}: locally the GCS is stopped (SIGSTOP); here the head pod is cut from every "
            f"worker pod, both ways, for {duration(held)} (the detection bound), then the Workflow waits out "
            "the recovery bound. Differs on the cluster: the Serve proxy runs on the head (HeadOnly), so "
            "requests fail while the workers are cut off, and the head's own clients keep calling the GCS, "
            "so RayGCSUnreachable (its request rate) may not fire. The expectations are the local "
            "experiment's: check them on a cluster before trusting a verdict.")
    return [workflow(exp, namespace, "partition", "NetworkChaos", partition, held)], note


def oom(exp: dict[str, Any], ray_service: Resource, groups: list[sizing.GroupSize]) -> Form:
    group = group_of(exp, groups)
    namespace = ray_service["metadata"]["namespace"]
    # Together the pod's whole memory limit: with Ray's own use on top it passes Ray's memory-monitor
    # threshold (0.95 of the limit, read from the container's cgroup) whatever the pod already held.
    per_worker_mib = math.ceil(group.shape.memory_gib * 1024 / STRESS_WORKERS)
    memory = {"workers": STRESS_WORKERS, "size": f"{per_worker_mib}MiB", "oomScoreAdj": STRESS_OOM_SCORE_ADJ}
    stress = {"mode": "one", "selector": ray_pods(namespace, "worker", group.name),
              "containerNames": [ray_container(ray_service, group.name)], "stressors": {"memory": memory}}
    held = exp["detect_within_s"]  # the surge lasts until the kill, at most the detection bound
    target = f"{exp['target']['app']}/{exp['target']['deployment']}"
    note = (f"{exp['name']}: locally {target}, an app the experiment adds, grows until Ray's memory monitor "
            f"kills it; here a memory stress stands in for it in one {group.name} pod, where sizing would "
            f"place it: {STRESS_WORKERS} x {per_worker_mib}MiB, the pod's {group.shape.memory_gib}Gi limit, "
            f"for {duration(held)}. The monitor kills a replica on the pod (Ray picks which), so the loss "
            "falls on that replica's route.")
    return [workflow(exp, namespace, "stress", "StressChaos", stress, held)], note


FORMS: dict[str, Callable[[dict[str, Any], Resource, list[sizing.GroupSize]], Form]] = {
    "replica-crash": replica_crash, "head-partition": head_partition, "oom": oom}


def rendered(ray_service: Resource,
             groups: list[sizing.GroupSize]) -> dict[str, tuple[list[Resource], list[str]]]:
    """Per experiment with a Kubernetes equivalent: its resources and the comment lines heading its file."""
    found = {}
    for name, form in FORMS.items():
        objects, note = form(experiment(name), ray_service, groups)
        found[name] = (objects, textwrap.wrap(note, NOTE_WIDTH))
    return found
