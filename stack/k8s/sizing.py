"""Worker-group bounds from the deployments' autoscaling bounds in the ops config.

Each Serve replica asks Ray for logical resources (CPU, GPU, memory): stack.resources says how much, and
between which replica bounds, for every deployment, the LLM ingress included. Replicas that ask for a GPU
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

from stack import resources
from stack.config import Profile
from stack.resources import GIB, NONE, Demand, Deployment

# Share of a pod's memory Ray keeps for the object store (Ray's default, 0.3); the rest is the logical
# `memory` resource replicas reserve from.
OBJECT_STORE_SHARE = 0.3


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
class GroupSize:
    name: str
    shape: PodShape
    deployments: tuple[Deployment, ...]
    min_pods: int
    max_pods: int

    def demand(self, bound: str) -> Demand:
        return sum((d.replica * getattr(d, f"{bound}_replicas") for d in self.deployments), NONE)


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
    found = resources.deployments(profile)
    return [group("gpu-workers", GPU_WORKER, [d for d in found if d.replica.gpus > 0]),
            group("cpu-workers", CPU_WORKER, [d for d in found if d.replica.gpus == 0])]
