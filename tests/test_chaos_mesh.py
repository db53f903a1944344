"""The Chaos Mesh form of the chaos experiments (stack/k8s/chaos-mesh/, `make k8s`): valid against Chaos
Mesh's CRDs, the faults and expectations of the experiments they stand for, aimed at the generated
RayService's pods, covered by the drift check, and never among the manifests a plain apply applies.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from chaos import experiment as chaos_experiment
from stack import ROOT
from stack.artifacts import RULES_FILE, drifted, header
from stack.config import load
from stack.k8s import MANIFESTS_DIR, PROFILE, chaos_mesh, generate, sizing
from tests import crd_schema

FILES = sorted(chaos_mesh.CHAOS_MESH_DIR.glob("*.yaml"))
DOCS = [(path.stem, doc) for path in FILES for doc in yaml.safe_load_all(path.read_text())]
# What each experiment with a Kubernetes equivalent becomes: its resources' kinds, and the chaos kinds its
# Workflow's steps run.
EXPECTED = {
    "replica-crash": (["PodChaos"], []),
    "head-partition": (["Workflow"], ["NetworkChaos"]),
    "oom": (["Workflow"], ["StressChaos"]),
}
ANNOTATIONS = {f"serveops.dev/{key}" for key in
               ("experiment", "hypothesis", "expected-alerts", "detect-within-s", "runbook")}
# Workflow templates that are not a chaos; the others embed one under their kind, first letter lowered.
FLOW_TEMPLATES = {"Serial", "Parallel", "Suspend", "Task", "Schedule", "StatusCheck"}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
BYTES = {"Mi": 2**20, "MiB": 2**20, "Gi": 2**30, "GiB": 2**30}


def resources(name: str) -> list[dict[str, Any]]:
    return [doc for stem, doc in DOCS if stem == name]


def chaos_steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in workflow["spec"]["templates"] if t["templateType"] not in FLOW_TEMPLATES]


def created(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The chaos objects a Workflow's steps create (none for a chaos object itself)."""
    if doc["kind"] != "Workflow":
        return []
    meta = doc["metadata"]
    return [{"apiVersion": doc["apiVersion"], "kind": t["templateType"],
             "metadata": {"name": f"{meta['name']}-{t['name']}", "namespace": meta["namespace"]},
             "spec": t[t["templateType"][0].lower() + t["templateType"][1:]]} for t in chaos_steps(doc)]


# Every resource, and every chaos a Workflow of them creates, by experiment.
ALL = [(name, obj) for name, doc in DOCS for obj in [doc, *created(doc)]]


def one(name: str, kind: str) -> dict[str, Any]:
    """The experiment's resource, or the chaos its Workflow runs, of that kind."""
    (found,) = [obj for n, obj in ALL if n == name and obj["kind"] == kind]
    return found


@functools.cache
def ray_service() -> dict[str, Any]:
    manifests = [yaml.safe_load_all(path.read_text()) for path in sorted(MANIFESTS_DIR.glob("*.yaml"))]
    (found,) = [doc for docs in manifests for doc in docs if doc["kind"] == "RayService"]
    return found


@functools.cache
def generated() -> dict[Path, str]:
    return generate.rendered(load())


def pod_templates() -> dict[str, dict[str, Any]]:
    """The RayService's pod templates by KubeRay group (the head's group is `headgroup`)."""
    cfg = ray_service()["spec"]["rayClusterConfig"]
    return {"headgroup": cfg["headGroupSpec"]["template"],
            **{g["groupName"]: g["template"] for g in cfg["workerGroupSpecs"]}}


def pod_labels() -> dict[str, dict[str, str]]:
    """The labels KubeRay gives each group's pods: the template's, plus its own ray.io/* labels (the
    RayCluster's name gets a random suffix)."""
    cluster = f"{ray_service()['metadata']['name']}-x7k2q"
    return {group: {**t["metadata"].get("labels", {}), "ray.io/group": group, "ray.io/is-ray-node": "yes",
                    "ray.io/node-type": "head" if group == "headgroup" else "worker",
                    "ray.io/cluster": cluster}
            for group, t in pod_templates().items()}


def selected(selector: dict[str, Any]) -> set[str]:
    """The groups whose pods a Chaos Mesh selector of namespaces and labels picks."""
    assert set(selector) == {"namespaces", "labelSelectors"}, selector
    if ray_service()["metadata"]["namespace"] not in selector["namespaces"]:
        return set()
    want = selector["labelSelectors"].items()
    return {group for group, found in pod_labels().items() if want <= found.items()}


def quantity(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([A-Za-z]+)", text).groups()  # type: ignore[union-attr]
    return int(number) * BYTES[unit]


def placed_group(app: str, deployment: str) -> str:
    (found,) = [g.name for g in sizing.worker_groups(load().profile(PROFILE))
                if any((d.app, d.deployment) == (app, deployment) for d in g.deployments)]
    return found


def errors(doc: dict[str, Any]) -> list[str]:
    return crd_schema.errors(crd_schema.crd_schema(doc["apiVersion"], doc["kind"]), doc)


# --- which experiments, where -----------------------------------------------------------------------

def test_one_file_per_experiment_with_a_kubernetes_form() -> None:
    assert {p.stem for p in FILES} == set(EXPECTED) == set(chaos_mesh.FORMS)


def test_every_experiment_has_a_form_or_a_reason() -> None:
    forms, without = set(chaos_mesh.FORMS), set(chaos_mesh.NO_EQUIVALENT)
    assert not forms & without
    assert forms | without == set(chaos_experiment.names())
    for name, reason in chaos_mesh.NO_EQUIVALENT.items():
        assert len(reason.split()) >= 8, (name, reason)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_experiment_has_exactly_its_resources(name: str) -> None:
    kinds, steps = EXPECTED[name]
    docs = resources(name)
    assert [d["kind"] for d in docs] == kinds
    assert [o["kind"] for d in docs for o in created(d)] == steps


def test_no_chaos_among_the_manifests() -> None:
    # `kubectl apply -f stack/k8s/manifests/` must not inject a fault; it does not recurse into folders.
    assert MANIFESTS_DIR not in chaos_mesh.CHAOS_MESH_DIR.parents
    manifests = [d for p in MANIFESTS_DIR.glob("*.yaml") for d in yaml.safe_load_all(p.read_text())]
    assert manifests and not [d["kind"] for d in manifests if d["apiVersion"].startswith("chaos-mesh.org/")]
    assert all(d["apiVersion"].startswith("chaos-mesh.org/") for _, d in DOCS)


# --- generation and drift -----------------------------------------------------------------------------

def test_files_are_the_generators_and_carry_the_header() -> None:
    written = {p: t for p, t in generated().items() if p.parent == chaos_mesh.CHAOS_MESH_DIR}
    assert written == {p: p.read_text() for p in FILES}
    for text in written.values():
        assert text.startswith(header("stack/k8s/generate.py"))


def test_the_drift_check_owns_the_folder(tmp_path: Path) -> None:
    assert chaos_mesh.CHAOS_MESH_DIR in generate.OWNED
    assert {p.parent for p in generated()} <= set(generate.OWNED)
    # What the check then names in that folder: an edited file and one the generator does not write.
    outputs = {tmp_path / p.name: p.read_text() for p in FILES}
    for path, text in outputs.items():
        path.write_text(text)
    assert drifted(outputs, tmp_path) == []
    edited = tmp_path / "replica-crash.yaml"
    edited.write_text(edited.read_text().replace("pod-kill", "pod-failure"))
    (tmp_path / "left-over.yaml").write_text("kind: PodChaos\n")
    assert sorted(p.name for p in drifted(outputs, tmp_path)) == ["left-over.yaml", "replica-crash.yaml"]


# --- schemas --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "doc"), ALL, ids=[f"{n}:{d['kind']}" for n, d in ALL])
def test_resource_validates_against_its_crd(name: str, doc: dict[str, Any]) -> None:
    path = crd_schema.crd_path(doc["apiVersion"], doc["kind"])
    if not path.exists():  # copied into tests/data/crds/
        pytest.fail(f"missing {path}")
    assert errors(doc) == []


def _step(doc: dict[str, Any]) -> dict[str, Any]:
    (step,) = chaos_steps(doc)
    return step


BROKEN: dict[str, tuple[str, str, Callable[[dict[str, Any]], object]]] = {
    "pod-chaos-wrong-action": ("replica-crash", "PodChaos", lambda d: d["spec"].update(action="pod-delete")),
    "pod-chaos-negative-grace": ("replica-crash", "PodChaos", lambda d: d["spec"].update(gracePeriod=-1)),
    "pod-chaos-wrong-mode": ("replica-crash", "PodChaos", lambda d: d["spec"].update(mode="single")),
    "pod-chaos-selector-typo": ("replica-crash", "PodChaos",
                                lambda d: d["spec"]["selector"].update(labelSelector={"a": "b"})),
    "network-chaos-no-selector": ("head-partition", "NetworkChaos", lambda d: d["spec"].pop("selector")),
    "network-chaos-bad-direction": ("head-partition", "NetworkChaos",
                                    lambda d: d["spec"].update(direction="up")),
    "network-chaos-target-no-mode": ("head-partition", "NetworkChaos",
                                     lambda d: d["spec"]["target"].pop("mode")),
    "stress-chaos-size-not-a-string": ("oom", "StressChaos",
                                       lambda d: d["spec"]["stressors"]["memory"].update(size=4096)),
    "stress-chaos-too-many-workers": ("oom", "StressChaos",
                                      lambda d: d["spec"]["stressors"]["memory"].update(workers=9000)),
    "workflow-no-entry": ("oom", "Workflow", lambda d: d["spec"].pop("entry")),
    "workflow-deadline-not-a-string": ("head-partition", "Workflow",
                                       lambda d: d["spec"]["templates"][0].update(deadline=300)),
    "workflow-step-no-selector": ("head-partition", "Workflow",
                                  lambda d: _step(d)["networkChaos"].pop("selector")),
    "workflow-step-bad-size": ("oom", "Workflow",
                               lambda d: _step(d)["stressChaos"]["stressors"]["memory"].update(size=4096)),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_validation_rejects_a_broken_copy(case: str) -> None:
    name, kind, breaks = BROKEN[case]
    doc = copy.deepcopy(one(name, kind))
    assert errors(doc) == []
    breaks(doc)
    assert errors(doc) != []


# --- what each one injects, where, and expects --------------------------------------------------------

@pytest.mark.parametrize(("name", "doc"), DOCS, ids=[f"{n}:{d['kind']}" for n, d in DOCS])
def test_annotations_are_the_experiments_expectations(name: str, doc: dict[str, Any]) -> None:
    exp = chaos_experiment.load(name)
    meta = doc["metadata"]
    assert meta["name"] == name and meta["namespace"] == ray_service()["metadata"]["namespace"]
    notes = meta["annotations"]
    assert set(notes) == ANNOTATIONS and all(isinstance(v, str) for v in notes.values())
    assert notes["serveops.dev/experiment"] == exp.name
    assert notes["serveops.dev/hypothesis"] == exp.hypothesis
    assert json.loads(notes["serveops.dev/expected-alerts"]) == [{"alert": e.alert, "labels": e.labels}
                                                                 for e in exp.expect]
    assert float(notes["serveops.dev/detect-within-s"]) == exp.detect_within_s
    assert exp.runbook is not None and notes["serveops.dev/runbook"] == exp.runbook.name
    # Names a reader can act on: a runbook `make runbook NAME=` runs, alerts the rule file defines.
    assert (ROOT / "runbooks" / f"{exp.runbook.name}.md").is_file()
    rules = yaml.safe_load(RULES_FILE.read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert {e.alert for e in exp.expect} <= alerts and exp.expect
    assert DNS_LABEL.match(meta["name"]) and len(meta["name"]) <= 63
    assert len(json.dumps(notes)) < 256 * 1024  # the API's limit on an object's annotations


def test_replica_crash_kills_one_pod_of_the_targets_group() -> None:
    exp = chaos_experiment.load("replica-crash")
    spec = one("replica-crash", "PodChaos")["spec"]
    # One pod, no grace period: its processes get SIGKILL, as the local replica does.
    assert (spec["action"], spec["mode"], spec["gracePeriod"]) == ("pod-kill", "one", 0)
    assert selected(spec["selector"]) == {placed_group(exp.target.app, exp.target.deployment)}


def test_head_partition_cuts_the_head_from_every_worker() -> None:
    spec = one("head-partition", "NetworkChaos")["spec"]
    assert (spec["action"], spec["direction"]) == ("partition", "both")
    assert selected(spec["selector"]) == {"headgroup"}
    workers = set(pod_templates()) - {"headgroup"}
    assert workers and selected(spec["target"]["selector"]) == workers
    assert spec["mode"] == spec["target"]["mode"] == "all"


def test_partition_ends_before_the_workers_give_up_on_the_gcs() -> None:
    # Past the reconnect timeout the workers exit: a different experiment from the one the YAML states.
    timeout = float(load().profile(PROFILE).cluster.env["RAY_gcs_rpc_server_reconnect_timeout_s"])
    held = _step(one("head-partition", "Workflow"))["deadline"]
    assert float(held.removesuffix("s")) < timeout


def test_memory_stress_fills_the_limit_of_a_pod_the_hog_would_run_on() -> None:
    spec = one("oom", "StressChaos")["spec"]
    (group,) = selected(spec["selector"])
    template = pod_templates()[group]
    ray = template["spec"]["containers"][0]  # KubeRay's convention: Ray's container first
    # The hog asks for no GPU, so sizing would place it on a group without one.
    assert "nvidia.com/gpu" not in ray["resources"]["limits"]
    assert spec["mode"] == "one" and spec["containerNames"] == [ray["name"]]
    memory = spec["stressors"]["memory"]
    assert memory["workers"] * quantity(memory["size"]) >= quantity(ray["resources"]["limits"]["memory"])
    assert memory["oomScoreAdj"] > 0  # the kernel takes a stress worker before the raylet


@pytest.mark.parametrize("name", [n for n, d in DOCS if d["kind"] == "Workflow"])
def test_workflow_holds_the_fault_then_waits_out_the_recovery(name: str) -> None:
    exp = chaos_experiment.load(name)
    assert exp.heal or len(exp.inject) > 1  # a local form with stages
    spec = one(name, "Workflow")["spec"]
    templates = {t["name"]: t for t in spec["templates"]}
    entry = templates[spec["entry"]]
    assert entry["templateType"] == "Serial"
    fault, recover = (templates[c] for c in entry["children"])
    assert fault["templateType"] not in FLOW_TEMPLATES and recover["templateType"] == "Suspend"

    def seconds(t: dict[str, Any]) -> float:
        return float(t["deadline"].removesuffix("s"))

    assert seconds(fault) == exp.detect_within_s
    assert seconds(fault) + seconds(recover) == seconds(entry) == exp.recover_within_s


def test_forms_refuse_what_they_cannot_place_or_time() -> None:
    groups = sizing.worker_groups(load().profile(PROFILE))
    with pytest.raises(ValueError, match="nope/Nope"):
        chaos_mesh.group_of({"name": "x", "target": {"app": "nope", "deployment": "Nope"}}, groups)
    exp = chaos_mesh.experiment("head-partition")
    with pytest.raises(ValueError, match="recover_within_s"):
        chaos_mesh.workflow(exp, "serveops", "partition", "NetworkChaos", {}, exp["recover_within_s"])
