"""The labels that say which Ray cluster a series came from; every dashboard query filters on them and
every rule keeps them, so one cluster's burn never hides in another's traffic.

KubeRay's pods carry ray.io/cluster: our PodMonitors (stack/k8s/monitoring.py) copy it to
ray_io_cluster, the label Ray's own dashboards filter on, and prometheus-operator adds the pod's
namespace. The local stack's series carry neither: an empty label, which the dashboards' All value
(`=~".*"`) matches and `by (...)` leaves out, so queries and rules read the same there as before.
"""

from __future__ import annotations

CLUSTER = "ray_io_cluster"
NAMESPACE = "namespace"
LABELS = (CLUSTER, NAMESPACE)
BY = ", ".join(LABELS)  # for `by (...)` and `on (...)` clauses
