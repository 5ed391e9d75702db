"""Every sample in manifests/samples becomes Ready and answers inference correctly."""

from __future__ import annotations

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

    batch = testmodels.sample_input(batch=3)
    expected = testmodels.run_reference(active_model_path(isvc, models), batch)
    model_name = isvc["spec"]["model"].get("name", name)
    for pod in pods:
        with pod_endpoint(cluster, pod) as (http_url, grpc_url):
            http_out, grpc_out = infer_both_protocols(http_url, grpc_url, model_name, batch)
        np.testing.assert_allclose(http_out, expected, atol=ATOL, rtol=1e-4)
        np.testing.assert_allclose(grpc_out, expected, atol=ATOL, rtol=1e-4)
