"""The GPU capacity an InferenceService can use, read from the cluster: what the reconcile
reports in GPUCapacityAvailable and what caps the autoscaler's scale-up."""

from __future__ import annotations

from kinfer.api.model import InferenceService
from kinfer.capacity import CapacityReport, gpu_capacity
from kinfer.controller.kube import Kube
from kinfer.render import scheduling
from kinfer.render.deployment import effective_replicas


def observe_capacity(kube: Kube, isvc: InferenceService) -> CapacityReport:
    resources = isvc.spec.resources
    desired, _ = effective_replicas(isvc)
    if resources.gpu_resource_name is None:
        return gpu_capacity(
            resource=None,
            per_replica=0,
            node_selector={},
            tolerations=[],
            nodes=[],
            pods=[],
            own_pod_labels=isvc.selector,
            wanted_replicas=desired,
        )
    # All nodes, and the pods of every namespace that hold extended resources (GPUs on a node
    # are taken by pods of any namespace): from the watch caches when the operator runs.
    nodes, pods = kube.gpu_view()
    return gpu_capacity(
        resource=resources.gpu_resource_name,
        per_replica=resources.gpu_count,
        node_selector=scheduling.node_selector(isvc),
        tolerations=scheduling.tolerations(isvc),
        nodes=nodes,
        pods=pods,
        own_pod_labels=isvc.selector,
        wanted_replicas=desired,
    )
