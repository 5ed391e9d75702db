"""GPU capacity: what fits where, as the scheduler would see it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kinfer.capacity import gpu_capacity, parse_quantity

GPU_TOLERATION = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def node(
    name, product, gpus, *, tainted=True, ready=True, unschedulable=False, resource="nvidia.com/gpu"
):
    return {
        "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": product}},
        "spec": {
            "unschedulable": unschedulable,
            "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
            if tainted
            else [],
        },
        "status": {
            "allocatable": {resource: str(gpus), "cpu": "32"},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def pod(node_name, gpus, *, owner="other", phase="Running", resource="nvidia.com/gpu"):
    return {
        "metadata": {"labels": {"kinfer.dev/inferenceservice": owner}},
        "spec": {
            "nodeName": node_name,
            "containers": [{"resources": {"limits": {resource: str(gpus)}}}],
        },
        "status": {"phase": phase},
    }


def capacity(nodes, pods, *, per_replica=1, wanted=1, selector=None, tolerations=GPU_TOLERATION):
    return gpu_capacity(
        resource="nvidia.com/gpu",
        per_replica=per_replica,
        node_selector=selector if selector is not None else {"nvidia.com/gpu.product": "A100"},
        tolerations=tolerations,
        nodes=nodes,
        pods=pods,
        own_pod_labels={"kinfer.dev/inferenceservice": "mine"},
        wanted_replicas=wanted,
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [("2", 2), ("500m", Decimal("0.5")), ("4Gi", 4 * 2**30), ("1k", 1000), ("junk", 0)],
)
def test_parse_quantity(text, value):
    assert parse_quantity(text) == value


def test_free_gpus_on_matching_nodes_only():
    nodes = [node("a1", "A100", 4), node("a2", "A100", 2), node("l1", "L4", 8)]
    report = capacity(nodes, [pod("a1", 3)], wanted=3)
    assert (report.matching_nodes, report.free_units, report.placeable_replicas) == (2, 3, 3)
    assert report.sufficient


def test_a_replica_needs_all_its_gpus_on_one_node():
    nodes = [node("a1", "A100", 2), node("a2", "A100", 2)]
    report = capacity(nodes, [pod("a1", 1), pod("a2", 1)], per_replica=2, wanted=1)
    assert report.free_units == 2 and report.placeable_replicas == 0
    assert not report.sufficient
    assert "not enough GPUs" in report.message({"nvidia.com/gpu.product": "A100"})


def test_own_scheduled_pods_count_toward_the_wanted_replicas():
    nodes = [node("a1", "A100", 2)]
    pods = [pod("a1", 1, owner="mine"), pod("a1", 1, owner="mine")]
    assert capacity(nodes, pods, wanted=2).sufficient
    assert not capacity(nodes, pods, wanted=3).sufficient


def test_finished_pods_free_their_gpus():
    nodes = [node("a1", "A100", 1)]
    assert capacity(nodes, [pod("a1", 1, phase="Succeeded")]).placeable_replicas == 1


def test_untolerated_taint_unready_and_cordoned_nodes_do_not_count():
    nodes = [
        node("a1", "A100", 4, ready=False),
        node("a2", "A100", 4, unschedulable=True),
        node("a3", "A100", 4),
    ]
    assert capacity(nodes, []).matching_nodes == 1
    assert capacity(nodes, [], tolerations=[]).matching_nodes == 0


def test_mig_slices_are_their_own_resource():
    nodes = [node("m1", "A100", 7, resource="nvidia.com/mig-1g.10gb")]
    report = gpu_capacity(
        resource="nvidia.com/mig-1g.10gb",
        per_replica=1,
        node_selector={},
        tolerations=GPU_TOLERATION,
        nodes=nodes,
        pods=[pod("m1", 2, resource="nvidia.com/mig-1g.10gb")],
        own_pod_labels={"kinfer.dev/inferenceservice": "mine"},
        wanted_replicas=5,
    )
    assert report.placeable_replicas == 5 and report.sufficient


def test_cpu_only_is_always_sufficient():
    report = gpu_capacity(
        resource=None,
        per_replica=0,
        node_selector={},
        tolerations=[],
        nodes=[],
        pods=[],
        own_pod_labels={},
        wanted_replicas=100,
    )
    assert report.sufficient
