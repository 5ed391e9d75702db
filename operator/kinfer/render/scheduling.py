"""GPU scheduling of a model server pod: resources, node selection, tolerations."""

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
