"""Every sample in manifests/samples becomes Ready and answers inference correctly.

The samples are applied as written but for their model URIs (harness `load_sample`): the
models.example.com placeholder becomes the e2e model store, and a public model's URL its
stand-in there (the same signature: harness PUBLIC_MODEL_STANDINS)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from e2e.harness import (
    SAMPLES,
    Cluster,
    Models,
    Operator,
    active_model_path,
    infer_both_protocols,
    load_sample,
    pod_endpoint,
    serves_on_gpu,
)
from kinfer_dev.runtime import testmodels

SAMPLE_FILES = sorted(p.name for p in SAMPLES.glob("*.yaml"))
# int8/fp16 tiers are compared to their own model file, so tolerances stay tight.
ATOL = 1e-4


def request_for(isvc: dict[str, Any]) -> tuple[tuple[str, str], np.ndarray]:
    """(input and output names, a request) fitting the sample's model: the signature its
    spec gives (the MNIST sample), else the test MLP's."""
    model = isvc["spec"]["model"]
    if model.get("inputs"):
        [tensor_in], [tensor_out] = model["inputs"], model["outputs"]
        assert (tensor_in["name"], tuple(tensor_in["shape"])) == testmodels.MNIST_INPUT
        return (tensor_in["name"], tensor_out["name"]), testmodels.mnist_input()
    return (testmodels.INPUT_NAME, testmodels.OUTPUT_NAME), testmodels.sample_input(batch=3)


@pytest.mark.parametrize("sample", SAMPLE_FILES)
def test_sample_becomes_ready_and_serves_the_right_answer(
    cluster: Cluster, operator: Operator, models: Models, namespace: str, sample: str
) -> None:
    isvc = load_sample(sample, namespace, models)
    name = isvc["metadata"]["name"]
    reason = serves_on_gpu(cluster, isvc)
    if reason:
        pytest.skip(reason)
    cluster.apply(isvc)
    cluster.wait_ready(namespace, name)

    status = cluster.get("kisvc", name, "-n", namespace)["status"]
    desired = isvc["spec"].get("replicas", 1)
    assert status["readyReplicas"] == desired
    pods = cluster.ready_pods(namespace, name)
    assert len(pods) == desired

    tensors, batch = request_for(isvc)
    expected = testmodels.run_reference_io(active_model_path(isvc, models), *tensors, batch)
    model_name = isvc["spec"]["model"].get("name", name)
    for pod in pods:
        with pod_endpoint(cluster, pod) as (http_url, grpc_url):
            http_out, grpc_out = infer_both_protocols(
                http_url, grpc_url, model_name, batch, tensors
            )
        np.testing.assert_allclose(http_out, expected, atol=ATOL, rtol=1e-4)
        np.testing.assert_allclose(grpc_out, expected, atol=ATOL, rtol=1e-4)
