"""Worker-group bounds from the deployments' autoscaling bounds in the ops config.

Each Serve replica asks Ray for logical resources (CPU, GPU, memory). Replicas that ask for a GPU
run on the GPU group, the rest on the CPU group. A group's minReplicas is the fewest pods whose
resources hold every deployment at min_replicas, its maxReplicas the fewest that hold every deployment
at max_replicas: per resource, ceil(total demand / one pod's capacity), the largest of the three.
That is a lower bound of bin packing; it is exact while fractional GPUs pack among themselves (four
0.25 replicas share one GPU) and a pod's CPUs and memory are not the tighter limit. Between the
bounds the Ray autoscaler adds and removes pods as Serve's autoscaler adds and removes replicas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from stack.config import DeploymentOptions, LLMModel, Profile

GIB = 1024**3
# Share of a pod's memory Ray keeps for the object store (Ray's default, 0.3); the rest is the logical
# `memory` resource replicas reserve from.
OBJECT_STORE_SHARE = 0.3
SERVE_DEFAULT_NUM_CPUS = 1.0  # what Serve reserves for a replica that names no num_cpus


@dataclass(frozen=True)
class PodShape:
    """Requests and limits of one Ray container; KubeRay passes them to `ray start` as its resources."""

    cpus: int
    memory_gib: int
    gpus: int = 0

    @property
    def ray_memory_bytes(self) -> float:
        return self.memory_gib * GIB * (1 - OBJECT_STORE_SHARE)

    def resources(self) -> dict[str, dict[str, str | int]]:
        limits: dict[str, str | int] = {"cpu": str(self.cpus), "memory": f"{self.memory_gib}Gi"}
        if self.gpus:
            limits["nvidia.com/gpu"] = self.gpus
        # Requests equal to limits: the Guaranteed QoS class, so the kubelet evicts Ray pods last.
        return {"requests": dict(limits), "limits": limits}


# Node shapes to adjust to the cluster's instance types. The head runs the GCS, the Serve controller
# and the HTTP proxy (proxy_location: HeadOnly) and no replicas (num-cpus 0).
HEAD = PodShape(cpus=4, memory_gib=16)
CPU_WORKER = PodShape(cpus=8, memory_gib=16)
GPU_WORKER = PodShape(cpus=8, memory_gib=48, gpus=1)


@dataclass(frozen=True)
class Demand:
    """Logical resources of one replica."""

    cpus: float
    gpus: float
    memory_bytes: float

    def __add__(self, other: Demand) -> Demand:
        return Demand(self.cpus + other.cpus, self.gpus + other.gpus, self.memory_bytes + other.memory_bytes)

    def __mul__(self, n: int) -> Demand:
        return Demand(self.cpus * n, self.gpus * n, self.memory_bytes * n)


NONE = Demand(0, 0, 0)


@dataclass(frozen=True)
class Deployment:
    name: str
    replica: Demand
    min_replicas: int
    max_replicas: int


@dataclass(frozen=True)
class GroupSize:
    name: str
    shape: PodShape
    deployments: tuple[Deployment, ...]
    min_pods: int
    max_pods: int

    def demand(self, bound: str) -> Demand:
        return sum((d.replica * getattr(d, f"{bound}_replicas") for d in self.deployments), NONE)


def replica_bounds(opts: DeploymentOptions) -> tuple[int, int]:
    if opts.autoscaling_config is not None:
        # Serve's AutoscalingConfig defaults: min 1, max 1.
        return (int(opts.autoscaling_config.get("min_replicas", 1)),
                int(opts.autoscaling_config.get("max_replicas", 1)))
    n = opts.num_replicas if opts.num_replicas is not None else 1
    return n, n


def actor_demand(opts: DeploymentOptions) -> Demand:
    actor = opts.ray_actor_options or {}
    return Demand(float(actor.get("num_cpus", SERVE_DEFAULT_NUM_CPUS)), float(actor.get("num_gpus", 0)),
                  float(actor.get("memory", 0)))


def llm_replica_demand(model: LLMModel) -> Demand:
    """ray.serve.llm reserves a placement group per replica: the engine's bundles (one GPU per tensor- and
    pipeline-parallel worker, or placement_group_config), with the replica actor in the first bundle."""
    from ray.serve.llm import LLMConfig  # heavy: only when generating

    bundles = LLMConfig.model_validate(model.to_llm_config()).get_engine_config().placement_bundles
    engine = sum((Demand(float(b.get("CPU", 0)), float(b.get("GPU", 0)), float(b.get("memory", 0)))
                  for b in bundles), NONE)
    return engine + actor_demand(model.deployment)


def deployments(profile: Profile) -> list[Deployment]:
    ingress = profile.llm.ingress
    found = [Deployment("OpenAiIngress", actor_demand(ingress), *replica_bounds(ingress))]
    for model in profile.llm.models:
        found.append(Deployment(f"LLMServer:{model.model_id}", llm_replica_demand(model),
                                *replica_bounds(model.deployment)))
    for app, deps in profile.apps.items():
        for name, opts in deps.items():
            found.append(Deployment(f"{app}/{name}", actor_demand(opts), *replica_bounds(opts)))
    return found


def pods_for(demand: Demand, shape: PodShape) -> int:
    needs = [demand.cpus / shape.cpus, demand.memory_bytes / shape.ray_memory_bytes]
    if shape.gpus:
        needs.append(demand.gpus / shape.gpus)
    # Round before ceil: 4 x 0.25 GPUs must be 1 pod, not 2 from a float's last bit.
    return max(math.ceil(round(n, 9)) for n in needs)


def group(name: str, shape: PodShape, members: list[Deployment]) -> GroupSize:
    for d in members:
        if pods_for(d.replica, shape) > 1:
            raise ValueError(f"{d.name} needs {d.replica}, more than one {name} pod ({shape}) has")
    sized = GroupSize(name, shape, tuple(members), 0, 0)
    return GroupSize(name, shape, tuple(members), pods_for(sized.demand("min"), shape),
                     pods_for(sized.demand("max"), shape))


def worker_groups(profile: Profile) -> list[GroupSize]:
    """The GPU group first: runbooks that add workers patch workerGroupSpecs/0, the group the LLM runs on."""
    found = deployments(profile)
    return [group("gpu-workers", GPU_WORKER, [d for d in found if d.replica.gpus > 0]),
            group("cpu-workers", CPU_WORKER, [d for d in found if d.replica.gpus == 0])]
