"""The real API server rejects invalid specs with the field path; restricted PSS accepts kinfer's pods."""

from __future__ import annotations

import copy

import pytest
import yaml

from e2e.harness import Cluster, Models, Operator, load_sample, runnable_here, wait_for
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
    if not cluster.is_local:
        pytest.skip(
            "the API server's own validation: the local cluster's (the same v1.37.2 build, "
            "the same CRD) runs this table in make test"
        )
    obj = apply_change(copy.deepcopy(MINIMAL), change)
    obj["metadata"]["namespace"] = namespace
    result = cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(obj), check=False)
    assert result.returncode != 0, f"accepted: {obj['spec']}"
    assert path in result.stderr, result.stderr


@pytest.mark.kind_covered
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
    # The admission plugin enforces the level: a pod that breaks it is refused.
    privileged = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "breaks-restricted", "namespace": namespace},
        "spec": {
            "containers": [{"name": "c", "image": "any", "securityContext": {"privileged": True}}]
        },
    }
    refused = cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(privileged), check=False)
    assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr, refused.stderr
    for sample in ("onnxruntime-cpu.yaml", "triton-gpu.yaml"):
        isvc = runnable_here(cluster, load_sample(sample, namespace, models))
        cluster.apply(isvc)
        cluster.wait_ready(namespace, isvc["metadata"]["name"])
    # The ReplicaSet controller would report pods PodSecurity forbade.
    events = cluster.items("events", "-n", namespace)
    forbidden = [e["message"] for e in events if "violates PodSecurity" in (e.get("message") or "")]
    assert not forbidden, forbidden
    wait_for("pods in the restricted namespace", lambda: cluster.items("pods", "-n", namespace), 5)
