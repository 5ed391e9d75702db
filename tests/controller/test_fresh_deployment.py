"""A Deployment's watch event can arrive before the operator's cache has it: the status
refresh reads the newer of the two copies."""

from __future__ import annotations

from typing import Any

from kinfer.config import RenderOptions
from kinfer.controller.reconcile import newer, refresh_status
from tests.conftest import load_sample


def deployment(version: str, ready: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "mlp-cpu", "namespace": "team-a", "resourceVersion": version},
        "spec": {"replicas": 1},
        "status": {"replicas": 1, "readyReplicas": ready, "updatedReplicas": 1},
    }


def test_the_later_copy_wins_and_the_cache_when_versions_cannot_be_compared():
    old, new = deployment("100", 0), deployment("101", 1)
    assert newer(old, new) is new
    assert newer(new, old) is new
    assert newer(old, None) is old and newer(None, new) is new
    assert newer(deployment("abc", 0), new)["metadata"]["resourceVersion"] == "abc"


class TrailingCache:
    """The operator's cache, one event behind: its Deployment has no Ready replica yet."""

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return deployment("100", 0)

    def list(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return []

    peek_list = list

    def gpu_view(self) -> tuple[list, list]:
        return [], []


def test_a_deployment_event_ahead_of_the_cache_makes_the_service_ready_now():
    body = load_sample("onnxruntime-cpu.yaml")
    body["metadata"].update(namespace="team-a", uid="u-fresh", generation=1)
    body["spec"]["replicas"] = 1
    body["status"] = {"observedGeneration": 1, "readyReplicas": 0}
    stale = refresh_status(body, TrailingCache(), RenderOptions())
    assert stale.status_patch.get("readyReplicas", 0) == 0
    fresh = refresh_status(body, TrailingCache(), RenderOptions(), deployment("101", 1))
    assert fresh.status_patch["readyReplicas"] == 1
