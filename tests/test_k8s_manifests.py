"""The Kubernetes manifests (`make k8s`): no drift, valid against the CRDs, and consistent with the local
stack's Serve config, the alert rules, the dashboards, the Serve log format and the runbooks' kubectl steps.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from stack import ROOT, resources, serve_config
from stack.artifacts import DASHBOARDS_DIR, RULES_FILE
from stack.config import DeploymentOptions, load
from stack.k8s import MANIFESTS_DIR, NAMESPACE, PROFILE, RAY_VERSION, RAYSERVICE, promtail, sizing
from stack.local import gcs_store, ray_head
from stack.serving.observability import exemplars
from tests import crd_schema, promtail_stage

FILES = sorted(MANIFESTS_DIR.glob("*.yaml"))
DOCS = [(path.name, doc) for path in FILES for doc in yaml.safe_load_all(path.read_text())]
CUSTOM = [(f, d) for f, d in DOCS if (d["apiVersion"], d["kind"]) in crd_schema.CRD_FILES]
RUNBOOKS = ROOT / "runbooks"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
RAY_V1 = ("ray.io/v1", "RayService")


def objects(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in DOCS if d["kind"] == kind]


def the(kind: str) -> dict[str, Any]:
    (found,) = objects(kind)
    return found


def cluster_config() -> dict[str, Any]:
    return the("RayService")["spec"]["rayClusterConfig"]


def pod_templates() -> dict[str, dict[str, Any]]:
    """Ray pod templates by KubeRay group name (the head's group is `headgroup`)."""
    cfg = cluster_config()
    return {"headgroup": cfg["headGroupSpec"]["template"],
            **{g["groupName"]: g["template"] for g in cfg["workerGroupSpecs"]}}


def kuberay_pod_labels(group: str, template: dict[str, Any]) -> dict[str, str]:
    """The labels KubeRay gives a group's pods: the template's, plus its own ray.io/* labels. The RayCluster
    name gets a random suffix; ray.io/serve is true where a Serve proxy runs (the head: HeadOnly)."""
    head = group == "headgroup"
    return {**template["metadata"].get("labels", {}), "ray.io/node-type": "head" if head else "worker",
            "ray.io/group": group, "ray.io/is-ray-node": "yes", "ray.io/cluster": f"{RAYSERVICE}-x7k2q",
            "ray.io/serve": "true" if head else "false"}


def ray_container(template: dict[str, Any]) -> dict[str, Any]:
    return template["spec"]["containers"][0]  # KubeRay's convention


# --- generation ---------------------------------------------------------------------------------

def test_apply_order_and_namespace() -> None:
    kinds = [d["kind"] for _, d in DOCS]
    assert kinds[0] == "Namespace" and the("Namespace")["metadata"]["name"] == NAMESPACE
    order = {f: i for i, f in enumerate(p.name for p in FILES)}
    file_of = {(d["kind"], d["metadata"]["name"]): f for f, d in DOCS}
    rayservice = order[file_of[("RayService", RAYSERVICE)]]
    # The Ray pods need the Redis (GCS fault tolerance) and mount the Promtail ConfigMap.
    assert order[file_of[("Service", "serveops-redis")]] < rayservice
    assert order[file_of[("ConfigMap", promtail.CONFIGMAP)]] < rayservice
    for f, d in DOCS:
        assert f == "00-namespace.yaml" or d["metadata"]["namespace"] == NAMESPACE, (f, d["metadata"])


@pytest.mark.parametrize(("name", "doc"), DOCS, ids=[f"{d['kind']}:{d['metadata']['name']}" for _, d in DOCS])
def test_object_metadata_and_size(name: str, doc: dict[str, Any]) -> None:
    meta = doc["metadata"]
    assert DNS_LABEL.match(meta["name"]) and len(meta["name"]) <= 63, meta["name"]
    for key, value in meta.get("labels", {}).items():
        assert LABEL_VALUE.match(value) and len(value) <= 63, (key, value)
    # kubectl's client-side apply keeps the whole object in an annotation, limited to 256 KiB.
    assert len(json.dumps(doc)) < 256 * 1024


# --- schemas --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "doc"), CUSTOM, ids=[f"{d['kind']}:{d['metadata']['name']}"
                                                       for _, d in CUSTOM])
def test_custom_resource_validates_against_its_crd(name: str, doc: dict[str, Any]) -> None:
    path = crd_schema.crd_path(doc["apiVersion"], doc["kind"])
    if not path.exists():  # copied into tests/data/crds/
        pytest.fail(f"missing {path}")
    assert crd_schema.errors(crd_schema.crd_schema(doc["apiVersion"], doc["kind"]), doc) == []


def _worker(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]


def _head_container(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]


BROKEN: dict[str, tuple[str, Callable[[dict[str, Any]], object]]] = {
    "unknown-field": ("RayService", lambda d: _worker(d).update(minReplica=1)),
    "wrong-type": ("RayService", lambda d: _worker(d).update(maxReplicas="five")),
    "missing-required": ("RayService", lambda d: _worker(d).pop("groupName")),
    "non-string-start-param": ("RayService",
                               lambda d: d["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]
                               .update({"num-cpus": 0})),
    "bad-quantity": ("RayService", lambda d: _head_container(d)["resources"]["limits"].update(cpu="four")),
    "duplicate-port": ("RayService", lambda d: _head_container(d)["ports"].append({"containerPort": 8080})),
    "container-typo": ("RayService", lambda d: _head_container(d).update(envv=[])),
    "port-number-as-name": ("PodMonitor", lambda d: d["spec"]["podMetricsEndpoints"][0].update(port=8080)),
    "bad-interval": ("PodMonitor", lambda d: d["spec"]["podMetricsEndpoints"][0].update(interval="5 sec")),
    "no-selector": ("PodMonitor", lambda d: d["spec"].pop("selector")),
    "bad-for": ("PrometheusRule", lambda d: d["spec"]["groups"][1]["rules"][0].update({"for": "1 hour"})),
    "duplicate-group": ("PrometheusRule", lambda d: d["spec"]["groups"].append(d["spec"]["groups"][0])),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_validation_rejects_a_broken_copy(case: str) -> None:
    kind, breaks = BROKEN[case]
    doc = copy.deepcopy(objects(kind)[0])
    breaks(doc)
    assert crd_schema.errors(crd_schema.crd_schema(doc["apiVersion"], doc["kind"]), doc) != []


def test_redis_validates_against_the_core_schemas_kuberay_embeds() -> None:
    # The RayService CRD embeds core/v1 PodTemplateSpec and Service: the same schemas as a Deployment's
    # template and a Service's spec.
    deployment, service = the("Deployment"), the("Service")
    template = crd_schema.subschema(*RAY_V1, "spec", "rayClusterConfig", "headGroupSpec", "template")
    service_spec = crd_schema.subschema(*RAY_V1, "spec", "rayClusterConfig", "headGroupSpec", "headService",
                                        "spec")
    assert crd_schema.errors(template, deployment["spec"]["template"]) == []
    assert crd_schema.errors(service_spec, service["spec"]) == []
    broken = copy.deepcopy(deployment["spec"]["template"])
    broken["spec"]["containers"][0]["imagePullPolicy"] = 3
    assert crd_schema.errors(template, broken) != []
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    port_names = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names


def test_configmaps() -> None:
    for cm in objects("ConfigMap"):
        assert set(cm) == {"apiVersion", "kind", "metadata", "data"}
        for key, value in cm["data"].items():
            assert re.fullmatch(r"[-._a-zA-Z0-9]+", key) and isinstance(value, str)
        assert sum(len(v.encode()) for v in cm["data"].values()) < 1024 * 1024  # the API's limit


# --- the RayService -------------------------------------------------------------------------------

def test_serve_config_v2_is_the_gpu_serve_config_on_pod_networking() -> None:
    text = the("RayService")["spec"]["serveConfigV2"]
    raw = yaml.safe_load(text)
    schema = ServeDeploySchema.model_validate(raw)
    assert schema.http_options.host == "0.0.0.0"
    gpu = yaml.safe_load(serve_config.serve_config_path(PROFILE).read_text())
    assert raw["http_options"] == {**gpu["http_options"], "host": "0.0.0.0"}
    # The exemplar exporter listens on the pod's address too, for the head PodMonitor's `exemplars` port.
    port = load().listen.exemplars_port
    envs = [c["controller_options"]["runtime_env"]["env_vars"] for c in (raw, gpu)]
    listen = [env.pop(exemplars.LISTEN_ENV) for env in envs]
    assert listen == [f"0.0.0.0:{port}", f"127.0.0.1:{port}"]
    assert {k: v for k, v in raw.items() if k != "http_options"} == {k: v for k, v in gpu.items()
                                                                       if k != "http_options"}


def test_ray_version_matches_the_pin() -> None:
    assert cluster_config()["rayVersion"] == RAY_VERSION == importlib.metadata.version("ray")
    for req in ("cpu.txt", "gpu.txt"):
        assert f"ray[serve]=={RAY_VERSION}" in (ROOT / "requirements" / req).read_text()


def test_head_takes_no_replicas_and_serves_the_dashboard_on_the_pod() -> None:
    params = cluster_config()["headGroupSpec"]["rayStartParams"]
    assert params["num-cpus"] == "0"
    assert params["dashboard-host"] == "0.0.0.0"
    assert cluster_config()["enableInTreeAutoscaling"] is True


def test_metrics_port_everywhere() -> None:
    port = load().listen.metrics_port
    cfg = cluster_config()
    for spec in [cfg["headGroupSpec"], *cfg["workerGroupSpecs"]]:
        assert spec["rayStartParams"]["metrics-export-port"] == str(port)
    for group, template in pod_templates().items():
        ports = {p["name"]: p["containerPort"] for p in ray_container(template)["ports"]}
        assert ports["metrics"] == port, group


def test_worker_groups_follow_the_autoscaling_bounds() -> None:
    groups = {g.name: g for g in sizing.worker_groups(load().profile(PROFILE))}
    specs = cluster_config()["workerGroupSpecs"]
    assert [s["groupName"] for s in specs] == list(groups)
    for spec in specs:
        size = groups[spec["groupName"]]
        assert (spec["minReplicas"], spec["replicas"], spec["maxReplicas"]) == \
            (size.min_pods, size.min_pods, size.max_pods)
        assert 0 <= size.min_pods <= size.max_pods and size.max_pods >= 1
        limits = ray_container(spec["template"])["resources"]["limits"]
        assert limits.get("nvidia.com/gpu", 0) == size.shape.gpus
    # Every deployment of the one resource model is placed, the LLM ingress too; GPU replicas on the GPU
    # group only.
    placed = sorted(d.name for g in groups.values() for d in g.deployments)
    assert placed == sorted(d.name for d in resources.deployments(load().profile(PROFILE)))
    bounds = {n: (g.min_pods, g.max_pods) for n, g in groups.items()}
    assert bounds == {"gpu-workers": (2, 5), "cpu-workers": (1, 3)}
    assert all(d.replica.gpus > 0 for d in groups["gpu-workers"].deployments)


def test_group_bounds_arithmetic() -> None:
    quarter = resources.Demand(cpus=1, gpus=0.25, memory_bytes=resources.GIB)
    shape = sizing.PodShape(cpus=8, memory_gib=48, gpus=1)
    assert sizing.pods_for(quarter * 4, shape) == 1  # four 0.25-GPU replicas share one GPU
    assert sizing.pods_for(quarter * 5, shape) == 2
    assert sizing.pods_for(resources.Demand(cpus=17, gpus=0, memory_bytes=0), shape) == 3  # CPU-bound
    assert sizing.pods_for(resources.NONE, shape) == 0
    nine = resources.Demand(cpus=9, gpus=0, memory_bytes=0)
    huge = resources.Deployment("app", "huge", DeploymentOptions(), nine, 1, 1)
    with pytest.raises(ValueError, match="app/huge"):
        sizing.group("cpu", shape, [huge])


def test_env_is_the_local_heads() -> None:
    ops = load()
    cluster = ops.profile(PROFILE).cluster
    local = ray_head.head_env(ops, cluster, base={})
    for group, template in pod_templates().items():
        env = {e["name"]: e["value"] for e in ray_container(template)["env"]}
        assert cluster.env.items() <= env.items(), group
        buckets = [float(b) for b in env["RAY_SERVE_REQUEST_LATENCY_BUCKETS_MS"].split(",")]
        assert buckets == ops.latency_buckets_ms
        for key in ("RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH", "RAY_SERVE_TRACING_SAMPLING_RATIO"):
            assert env[key] == local[key]
        # KubeRay sets the GCS fault-tolerance variables itself, from gcsFaultToleranceOptions.
        assert not set(gcs_store.ray_env(ops)) & set(env)


def test_gcs_fault_tolerance_points_at_the_redis_service() -> None:
    assert load().profile(PROFILE).cluster.gcs_fault_tolerance
    ft = cluster_config()["gcsFaultToleranceOptions"]
    url = urlparse(ft["redisAddress"])
    service = the("Service")
    assert url.scheme == "redis" and url.hostname == service["metadata"]["name"]
    assert url.port in {p["port"] for p in service["spec"]["ports"]}
    assert service["metadata"]["namespace"] == the("RayService")["metadata"]["namespace"]
    assert ft["externalStorageNamespace"] == gcs_store.NAMESPACE


def test_kubectl_reaches_the_ray_container() -> None:
    for group, template in pod_templates().items():
        annotation = template["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"]
        assert annotation == ray_container(template)["name"], group


# --- monitoring -----------------------------------------------------------------------------------

def test_pod_monitors_select_the_ray_pods_and_their_ports() -> None:
    monitors = {m["metadata"]["name"]: m for m in objects("PodMonitor")}
    selected_types = set()
    for name, monitor in monitors.items():
        spec = monitor["spec"]
        assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        want = spec["selector"]["matchLabels"]
        selected = {g: t for g, t in pod_templates().items()
                    if want.items() <= kuberay_pod_labels(g, t).items()}
        assert selected, f"{name} selects no Ray pod"
        selected_types.add(want["ray.io/node-type"])
        for group, template in selected.items():
            declared = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
            for endpoint in spec["podMetricsEndpoints"]:
                assert endpoint["port"] in declared, (name, group, endpoint["port"])
    assert selected_types == {"head", "worker"}


def test_scraped_jobs_are_the_ones_the_alerts_read() -> None:
    rules = yaml.safe_load(RULES_FILE.read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    jobs_read = {job for expr in exprs for job in re.findall(r'job="([^"]+)"', expr)}
    assert jobs_read
    for monitor in objects("PodMonitor"):
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            jobs = [r["replacement"] for r in endpoint["relabelings"] if r.get("targetLabel") == "job"]
            assert jobs and set(jobs) <= jobs_read, (monitor["metadata"]["name"], jobs, jobs_read)


def _names(groups: list[dict[str, Any]], key: str) -> list[str]:
    return sorted(r[key] for g in groups for r in g["rules"] if key in r)


def test_prometheus_rule_holds_the_alert_rules() -> None:
    rule = the("PrometheusRule")
    rules = yaml.safe_load(RULES_FILE.read_text())
    assert _names(rule["spec"]["groups"], "alert") == _names(rules["groups"], "alert")
    assert _names(rule["spec"]["groups"], "record") == _names(rules["groups"], "record")
    assert rule["spec"]["groups"] == rules["groups"]
    assert rule["metadata"]["namespace"] == NAMESPACE


def test_dashboard_configmaps_hold_the_dashboard_json() -> None:
    boards = {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS_DIR.glob("*.json"))}
    bundled = {}
    for cm in objects("ConfigMap"):
        if cm["metadata"]["labels"].get("grafana_dashboard") == "1":
            assert cm["metadata"]["namespace"] == NAMESPACE
            ((key, text),) = cm["data"].items()
            assert text.count("\n") == 1, "one minified line per dashboard"
            bundled[key] = json.loads(text)
    assert boards and bundled == boards


# --- logs -----------------------------------------------------------------------------------------

def test_promtail_pipeline_is_consistent() -> None:
    cfg = promtail_stage.config()
    stages = promtail_stage.stages(cfg)
    extracted = set(promtail_stage.expressions(cfg))
    assert promtail_stage.extracted_names_read(cfg) <= extracted
    assert {"deployment", "replica", "level", "trace_id", "request_id", "route"} <= extracted
    # Index labels stay low-cardinality: ids per request or replica are structured metadata.
    assert {"deployment", "level"} <= set(stages["labels"])
    assert not {"trace_id", "request_id", "span_id", "replica"} & set(stages["labels"])
    assert stages["timestamp"]["format"] == "UnixNs"


def test_promtail_reads_the_ray_pods_logs() -> None:
    cfg = promtail_stage.config()
    (job,) = cfg["scrape_configs"]
    (static,) = job["static_configs"]
    path = static["labels"]["__path__"]
    env_used = set(re.findall(r"\$\{(\w+)\}", json.dumps(cfg)))
    for group, template in pod_templates().items():
        containers = {c["name"]: c for c in template["spec"]["containers"]}
        sidecar = containers["promtail"]
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        ray_mounts = {m["name"]: m["mountPath"] for m in ray_container(template)["volumeMounts"]}
        side_mounts = {m["name"]: m["mountPath"] for m in sidecar["volumeMounts"]}
        logs = promtail.RAY_LOGS_VOLUME
        assert ray_mounts[logs] == side_mounts[logs] and path.startswith(ray_mounts[logs] + "/"), group
        assert "emptyDir" in volumes[logs]
        config_volume = next(n for n, v in volumes.items() if "configMap" in v)
        assert volumes[config_volume]["configMap"]["name"] == promtail.CONFIGMAP
        assert f"-config.file={side_mounts[config_volume]}/{promtail.CONFIG_KEY}" in sidecar["args"]
        assert env_used <= {e["name"] for e in sidecar["env"]}, group


def test_promtail_extracts_every_field_of_a_recorded_request_line() -> None:
    # Recorded from a replica of the local stack; tests/live/test_k8s_logs.py checks a fresh one.
    line = (Path(__file__).parent / "data" / "serve-replica-log-line.json").read_text().strip()
    cfg = promtail_stage.config()
    assert promtail_stage.extract(cfg, line).keys() == promtail_stage.expressions(cfg).keys()


# --- the runbooks' kubectl steps ----------------------------------------------------------------------

def kubectl_lines() -> list[tuple[str, str]]:
    """Every kubectl command in the runbooks' fenced sh blocks."""
    found = []
    for path in sorted(RUNBOOKS.glob("*.md")):
        fenced = False
        for line in path.read_text().splitlines():
            if line.startswith("```"):
                fenced = not fenced and line.startswith("```sh")
            elif fenced and re.search(r"\bkubectl\s", line):
                found.append((path.name, line.strip()))
    return found


def _resolves(doc: Any, pointer: str) -> bool:
    for part in pointer.strip("/").split("/"):
        if isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        elif isinstance(doc, dict) and part in doc:
            doc = doc[part]
        else:
            return False
    return True


def runbook_mismatches(lines: list[tuple[str, str]]) -> list[str]:
    templates = pod_templates()
    labels = [kuberay_pod_labels(g, t) for g, t in templates.items()]
    bad = []
    for name, line in lines:
        for ns in re.findall(r"(?:\s-n|--namespace)[\s=]+([\w.-]+)", line):
            if ns != NAMESPACE:
                bad.append(f"{name}: namespace {ns!r} is not {NAMESPACE!r}: {line}")
        for svc in re.findall(r"\brayservices?(?:\.ray\.io)?\s+([\w-]+)", line):
            if svc != RAYSERVICE:
                bad.append(f"{name}: RayService {svc!r} is not {RAYSERVICE!r}: {line}")
        for selector in re.findall(r"(?:\s-l|--selector)[\s=]+['\"]?([^\s'\"]+)", line):
            for term in selector.split(","):
                key, _, value = term.partition("=")
                if not any(key in pod and (not value or pod[key] == value) for pod in labels):
                    bad.append(f"{name}: no Ray pod is labelled {term!r}: {line}")
        for pointer in re.findall(r'\\?"path\\?"\s*:\s*\\?"(/[^"\\]+)', line):
            if not _resolves(the("RayService"), pointer):
                bad.append(f"{name}: {pointer} is not in the RayService: {line}")
    return bad


def test_runbooks_kubectl_steps_match_the_manifests() -> None:
    lines = kubectl_lines()
    assert lines, "no kubectl step in the runbooks"
    assert runbook_mismatches(lines) == []


def test_runbook_check_catches_a_mismatch() -> None:
    wrong = [("X.md", "kubectl get pods -n ray-system -l ray.io/node-type=headnode"),
             ("X.md", "kubectl get rayservice serve -n serveops"),
             ("X.md", 'kubectl patch rayservice serveops -n serveops --type json -p "[{\\"op\\": '
                      '\\"replace\\", \\"path\\": \\"/spec/rayClusterConfig/workerGroupSpecs/9/replicas\\"'
                      '}]"')]
    assert len(runbook_mismatches(wrong)) == 4
