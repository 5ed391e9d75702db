"""The real API server rejects invalid specs with the field path; restricted PSS accepts kinfer's pods."""

from __future__ import annotations

import copy

import pytest
import yaml

from e2e.harness import Cluster, Models, Operator, load_sample, serves_on_gpu, wait_for
from tests.api.test_validation import INVALID_SPECS, apply_change

MINIMAL = {
    "apiVersion": "kinfer.dev/v1alpha1",
    "kind": "InferenceService",
    "metadata": {"name": "invalid"},
    "spec": {
        "runtime": "onnxruntime",
        "model": {"storageUri": "https://models.example.com/mlp/model.onnx"},
    },
}


@pytest.mark.parametrize(
    ("change", "path"),
    [pytest.param(change, path, id=description) for description, change, path in INVALID_SPECS],
)
def test_invalid_spec_is_rejected_by_the_api_server_with_its_field_path(
    cluster: Cluster, crd: None, namespace: str, change: dict, path: str
) -> None:
    obj = apply_change(copy.deepcopy(MINIMAL), change)
    obj["metadata"]["namespace"] = namespace
    result = cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(obj), check=False)
    assert result.returncode != 0, f"accepted: {obj['spec']}"
    assert path in result.stderr, result.stderr


def test_restricted_pod_security_namespace_accepts_kinfers_pods(
    cluster: Cluster, operator: Operator, models: Models, namespace: str
) -> None:
    cluster.kubectl(
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
        "pod-security.kubernetes.io/warn=restricted",
    )
    for sample in ("onnxruntime-cpu.yaml", "triton-gpu.yaml"):
        isvc = load_sample(sample, namespace, models)
        if serves_on_gpu(cluster, isvc):
            continue
        cluster.apply(isvc)
        cluster.wait_ready(namespace, isvc["metadata"]["name"])
    # The ReplicaSet controller would report pods PodSecurity forbade.
    events = cluster.items("events", "-n", namespace)
    forbidden = [e["message"] for e in events if "violates PodSecurity" in (e.get("message") or "")]
    assert not forbidden, forbidden
    wait_for("pods in the restricted namespace", lambda: cluster.items("pods", "-n", namespace), 5)
