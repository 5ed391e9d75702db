"""The operator: killed mid-reconcile it converges without duplicates; idle, it writes nothing."""

from __future__ import annotations

import json
import time

import pytest

from e2e.harness import (
    ISVC_LABEL,
    Cluster,
    Models,
    Operator,
    deploy_ready_sample,
    load_sample,
    runnable_here,
    wait_for,
)
from kinfer.controller.handlers import RESYNC_INTERVAL_S

# Longer than the operator's resync interval, so a periodic reconcile happens inside the
# window.
QUIET_PERIOD_S = RESYNC_INTERVAL_S + 15.0
OWNED_KINDS = "deployments,services,configmaps"


def _labelled(cluster: Cluster, namespace: str, name: str, kinds: str) -> list[dict]:
    return cluster.items(kinds, "-n", namespace, "-l", f"{ISVC_LABEL}={name}")


@pytest.mark.kind_covered
def test_operator_killed_mid_reconcile_converges_without_duplicates_or_orphans(
    cluster: Cluster, operator: Operator, models: Models, namespace: str
) -> None:
    # Installed in-cluster, "kill" force-deletes the operator's pod.
    isvc = runnable_here(cluster, load_sample("tiers-gpu.yaml", namespace, models))
    name = isvc["metadata"]["name"]
    operator.kill()
    try:
        cluster.apply(isvc)
        operator.start()
        # Kill it as soon as it has written its first child: mid-reconcile.
        wait_for(
            "the operator's first child object",
            lambda: _labelled(cluster, namespace, name, OWNED_KINDS),
            120,
            interval_s=0.05,
        )
        operator.kill()
        first = {
            (o["kind"], o["metadata"]["name"]): o["metadata"]["uid"]
            for o in _labelled(cluster, namespace, name, OWNED_KINDS)
        }
    finally:
        if not operator.alive():
            operator.start()
    cluster.wait_ready(namespace, name)

    uid = cluster.get("kisvc", name, "-n", namespace)["metadata"]["uid"]
    owned = _labelled(cluster, namespace, name, OWNED_KINDS)
    kinds = sorted(o["kind"] for o in owned)
    assert kinds == ["ConfigMap", "Deployment", "Service"], kinds
    for obj in owned:
        owners = [o["uid"] for o in obj["metadata"].get("ownerReferences") or []]
        assert owners == [uid], obj["metadata"]
        key = (obj["kind"], obj["metadata"]["name"])
        if key in first:
            assert first[key] == obj["metadata"]["uid"], f"{key} was recreated"
    desired = isvc["spec"]["replicas"]
    wait_for(
        f"exactly {desired} pods",
        lambda: len(cluster.pods(namespace, name)) == desired,
        180,
    )
    # Nothing kinfer-labelled in the namespace belongs to no InferenceService.
    everything = cluster.items("deployments,services,configmaps", "-n", namespace)
    orphans = [
        o["metadata"]["name"] for o in everything if not o["metadata"].get("ownerReferences")
    ]
    assert not [n for n in orphans if n != "kube-root-ca.crt"], orphans


def _versions(cluster: Cluster, namespace: str, name: str) -> dict[tuple[str, str], str]:
    objects = [cluster.get("kisvc", name, "-n", namespace)]
    objects += _labelled(
        cluster, namespace, name, "deployments,replicasets,services,configmaps,pods"
    )
    return {(o["kind"], o["metadata"]["name"]): o["metadata"]["resourceVersion"] for o in objects}


@pytest.mark.kind_covered
def test_no_api_writes_while_nothing_changes(
    cluster: Cluster, operator: Operator, models: Models, namespace: str
) -> None:
    name = deploy_ready_sample(cluster, "onnxruntime-cpu.yaml", namespace, models)
    # Settled: the same resourceVersions twice, a few seconds apart.
    previous: dict = {}

    def settled() -> bool:
        nonlocal previous
        current = _versions(cluster, namespace, name)
        stable = current == previous
        previous = current
        return stable

    wait_for("the InferenceService and its children to settle", settled, 120, interval_s=5)
    before = previous
    deadline = time.monotonic() + QUIET_PERIOD_S
    while time.monotonic() < deadline:
        current = _versions(cluster, namespace, name)
        changed = {k: (before.get(k), v) for k, v in current.items() if before.get(k) != v}
        gone = set(before) - set(current)
        assert not changed and not gone, f"written while nothing changed: {changed} {gone}"
        time.sleep(3)


@pytest.mark.kind_covered
def test_a_child_deleted_or_edited_by_hand_is_put_right_before_any_resync(
    cluster: Cluster, operator: Operator, models: Models, namespace: str
) -> None:
    # The child's watch event brings the reconcile, not the periodic resync: well within
    # its interval (the bound is generous for a loaded machine, and still below it).
    name = deploy_ready_sample(cluster, "onnxruntime-cpu.yaml", namespace, models)
    bound_s = RESYNC_INTERVAL_S / 2
    service = cluster.get("service", name, "-n", namespace)
    cluster.kubectl("delete", "service", name, "-n", namespace)
    wait_for(
        "the deleted Service to be created again",
        lambda: (
            cluster.get("service", name, "-n", namespace)["metadata"]["uid"]
            != service["metadata"]["uid"]
        ),
        bound_s,
    )
    config_maps = _labelled(cluster, namespace, name, "configmaps")
    assert len(config_maps) == 1, config_maps
    config_map = config_maps[0]
    cm_name = config_map["metadata"]["name"]
    key = sorted(config_map["data"])[0]
    patch = json.dumps({"data": {key: "edited by hand"}})
    cluster.kubectl("patch", "configmap", cm_name, "-n", namespace, "--type=merge", "-p", patch)
    wait_for(
        "the edited ConfigMap to be put back",
        lambda: (
            cluster.get("configmap", cm_name, "-n", namespace).get("data") == config_map.get("data")
        ),
        bound_s,
    )
