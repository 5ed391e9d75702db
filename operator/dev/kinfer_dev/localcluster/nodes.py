"""Node objects of the simulated GPU, MIG and CPU nodes, labelled as GPU Feature Discovery does."""

from __future__ import annotations

from typing import Any

from kinfer_dev.localcluster.config import ANNOTATION_KWOK_NODE, NVIDIA_TAINT, NodeSpec

GPU_RESOURCE = "nvidia.com/gpu"


def node_labels(node: NodeSpec) -> dict[str, str]:
    labels = {
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        "kinfer.dev/simulated-node": "true",
    }
    if not node.has_gpus:
        return labels
    # The labels NVIDIA's GPU Feature Discovery puts on a node.
    labels.update(
        {
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": node.gpu_product or "NVIDIA-GPU",
            "nvidia.com/gpu.count": str(node.gpu_count if node.gpu_count else 1),
            "nvidia.com/gpu.memory": str(node.gpu_memory_mib),
            "nvidia.com/gpu.family": node.gpu_family or "unknown",
            "nvidia.com/gpu.compute.major": str(node.gpu_compute[0]),
            "nvidia.com/gpu.compute.minor": str(node.gpu_compute[1]),
            "nvidia.com/cuda.driver.major": "550",
            "nvidia.com/cuda.runtime.major": "12",
            "nvidia.com/mig.capable": "true" if node.mig else "false",
        }
    )
    if node.mig:
        labels["nvidia.com/mig.strategy"] = "mixed"
        for profile, count in node.mig.items():
            labels[f"nvidia.com/mig-{profile}.count"] = str(count)
            labels[f"nvidia.com/mig-{profile}.product"] = f"{node.gpu_product}-MIG-{profile}"
    return labels


def node_resources(node: NodeSpec) -> dict[str, str]:
    resources = {"cpu": node.cpu, "memory": node.memory, "pods": str(node.pods)}
    if node.gpu_count:
        resources[GPU_RESOURCE] = str(node.gpu_count)
    for profile, count in node.mig.items():
        resources[f"nvidia.com/mig-{profile}"] = str(count)
    return resources


def node_object(node: NodeSpec, node_ip: str, pod_cidr: str) -> dict[str, Any]:
    """A Node that KWOK manages: its capacity, GFD labels, taint, loopback address and pod range."""
    resources = node_resources(node)
    spec: dict[str, Any] = {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]}
    if node.has_gpus:
        spec["taints"] = [dict(NVIDIA_TAINT)]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": node_labels(node),
            "annotations": {ANNOTATION_KWOK_NODE: "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": spec,
        "status": {
            "capacity": resources,
            "allocatable": dict(resources),
            # Loopback: whatever dials a node address (the API server for
            # logs) stays on this machine.
            "addresses": [
                {"type": "InternalIP", "address": node_ip},
                {"type": "Hostname", "address": node.name},
            ],
        },
    }
