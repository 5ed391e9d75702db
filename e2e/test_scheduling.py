"""GPU placement: product and MIG profile honoured by the real scheduler; over-asking is reported."""

from __future__ import annotations

from e2e.harness import Cluster, Models, Operator, condition_of, load_sample, wait_for

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"


def _node(cluster: Cluster, name: str) -> dict:
    return cluster.get("node", name)


def _scheduled(cluster: Cluster, namespace: str, name: str, replicas: int) -> list[dict]:
    """The pods once the real scheduler has bound all of them (placement needs no serving)."""

    def bound() -> list[dict]:
        pods = [p for p in cluster.pods(namespace, name) if p["spec"].get("nodeName")]
        return pods if len(pods) >= replicas else []

    return list(wait_for(f"{replicas} scheduled pods of {name}", bound, 180))


def test_gpu_pods_land_only_on_nodes_of_the_requested_product(
    cluster: Cluster, operator: Operator, models: Models, namespace: str
) -> None:
    placed = {}
    for sample in ("triton-gpu.yaml", "tiers-gpu.yaml"):
        isvc = load_sample(sample, namespace, models)
        cluster.apply(isvc)
        placed[isvc["metadata"]["name"]] = (
            isvc["spec"]["resources"]["gpuProduct"],
            isvc["spec"].get("replicas", 1),
        )
    for name, (product, replicas) in placed.items():
        for pod in _scheduled(cluster, namespace, name, replicas):
            node = _node(cluster, pod["spec"]["nodeName"])
            assert node["metadata"]["labels"].get(GPU_PRODUCT_LABEL) == product, (
                f"pod {pod['metadata']['name']} of {name} asked for {product}, "
                f"landed on {node['metadata']['name']}"
            )
            limits = pod["spec"]["containers"][0]["resources"]["limits"]
            assert int(limits["nvidia.com/gpu"]) >= 1


def test_mig_pods_land_on_a_node_with_that_mig_profile(
    cluster: Cluster, operator: Operator, models: Models, namespace: str
) -> None:
    isvc = load_sample("mig.yaml", namespace, models)
    name = isvc["metadata"]["name"]
    profile = isvc["spec"]["resources"]["migProfile"]
    cluster.apply(isvc)
    for pod in _scheduled(cluster, namespace, name, isvc["spec"].get("replicas", 1)):
        limits = pod["spec"]["containers"][0]["resources"]["limits"]
        assert f"nvidia.com/mig-{profile}" in limits
        node = _node(cluster, pod["spec"]["nodeName"])
        assert int(node["status"]["allocatable"].get(f"nvidia.com/mig-{profile}", "0")) >= 1


def test_asking_more_gpus_than_the_cluster_has_gives_a_condition(
    cluster: Cluster, operator: Operator, models: Models, namespace: str
) -> None:
    isvc = load_sample("triton-gpu.yaml", namespace, models)
    isvc["metadata"]["name"] = "too-big"
    isvc["spec"]["resources"]["gpus"] = 8  # the A100 node has 4
    cluster.apply(isvc)

    def capacity_condition() -> dict | None:
        obj = cluster.get("kisvc", "too-big", "-n", namespace)
        found = condition_of(obj, "GPUCapacityAvailable")
        return found if found and found["status"] == "False" else None

    found = wait_for("GPUCapacityAvailable=False on kisvc/too-big", capacity_condition, 120)
    assert found["reason"], found
    assert found["message"], found
    ready = condition_of(cluster.get("kisvc", "too-big", "-n", namespace), "Ready")
    assert ready is None or ready["status"] != "True"
    # Nothing may run: no node has 8 GPUs of that product.
    assert not cluster.ready_pods(namespace, "too-big")
