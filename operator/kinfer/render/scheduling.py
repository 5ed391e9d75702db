"""Scheduling of a model server pod: GPU resources, node selection, tolerations, affinity,
topology spread and priority."""

from __future__ import annotations

from typing import Any

from kinfer.api.model import InferenceService

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_TAINT_KEY = "nvidia.com/gpu"


def container_resources(isvc: InferenceService) -> dict[str, Any]:
    """Requests = limits (Guaranteed QoS); GPUs are extended resources, set as limits."""
    res = isvc.spec.resources
    amounts: dict[str, Any] = {"cpu": res.cpu, "memory": res.memory}
    limits = dict(amounts)
    if res.gpu_resource_name:
        limits[res.gpu_resource_name] = res.gpu_count
    return {"requests": amounts, "limits": limits}


def node_selector(isvc: InferenceService) -> dict[str, str]:
    selector: dict[str, str] = {}
    if isvc.spec.resources.gpu_product:
        selector[GPU_PRODUCT_LABEL] = isvc.spec.resources.gpu_product
    # The user's selector wins on a conflict: it is the more specific wish.
    selector.update(isvc.spec.node_selector)
    return selector


def tolerations(isvc: InferenceService) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    if isvc.spec.resources.gpu_resource_name:
        result.append({"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"})
    result.extend(t for t in isvc.spec.tolerations if t not in result)
    return result


def topology_spread_constraints(isvc: InferenceService) -> list[dict[str, Any]]:
    """spec.topologySpreadConstraints; one without labelSelector counts this service's pods."""
    return [
        {**constraint, "labelSelector": {"matchLabels": isvc.selector}}
        if "labelSelector" not in constraint
        else dict(constraint)
        for constraint in isvc.spec.topology_spread_constraints
    ]


def pod_scheduling(isvc: InferenceService) -> dict[str, Any]:
    """The pod spec's placement fields. The merge rule: kinfer's GPU placement (the
    gpu.product node selector, the GPU toleration) and the user's nodeSelector, tolerations,
    affinity and topology spread all apply at once: the scheduler requires the node selector
    and the affinity both, and a pod tolerates the union of tolerations."""
    fields: dict[str, Any] = {
        "nodeSelector": node_selector(isvc),
        "tolerations": tolerations(isvc),
        "affinity": dict(isvc.spec.affinity),
        "topologySpreadConstraints": topology_spread_constraints(isvc),
        "priorityClassName": isvc.spec.priority_class_name,
    }
    return {key: value for key, value in fields.items() if value}
