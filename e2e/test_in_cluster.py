"""What only a real kubelet and kube-proxy show: a model server answering through its
Service's ClusterIP to a pod inside the cluster, and kinfer uninstalled the way a user does.

These run where the operator is installed in-cluster (kind: `make e2e-kind`); on the
local cluster, whose pods are host processes, they are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

from e2e.harness import (
    ISVC_LABEL,
    REPO,
    Cluster,
    Models,
    Operator,
    active_model_path,
    deploy_ready_sample,
    infer_body,
    wait_for,
)
from kinfer_dev.runtime import testmodels

# Any image with python3: the kind cluster loads the Debian-based one `make images` made.
CLIENT_IMAGE = os.environ.get("KINFER_E2E_CLIENT_IMAGE", "localhost/kinfer-e2e-python:latest")
CRD = "inferenceservices.kinfer.dev"
CLIENT = """
import json, sys, urllib.request
request = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(),
                                 headers={"Content-Type": "application/json"})
with urllib.request.urlopen(request, timeout=60) as response:
    print(json.dumps(json.loads(response.read())["outputs"][0]))
"""


def require_installed(operator: Operator) -> None:
    if not operator.installed:
        pytest.skip("needs kinfer installed in a cluster of real containers (make e2e-kind)")


def run_client(cluster: Cluster, namespace: str, url: str, body: dict) -> dict:
    """Run CLIENT in a pod of `namespace` against `url`; its printed output tensor."""
    cluster.kubectl(
        "run", "client", "-n", namespace, f"--image={CLIENT_IMAGE}", "--image-pull-policy=IfNotPresent",
        "--restart=Never", "--command", "--", "python3", "-c", CLIENT, url, json.dumps(body),
    )  # fmt: skip

    def finished() -> str | None:
        phase = cluster.get("pod", "client", "-n", namespace)["status"].get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = wait_for("the client pod to finish", finished, 180)
    logs = cluster.kubectl("logs", "client", "-n", namespace).stdout
    assert phase == "Succeeded", logs
    return dict(json.loads(logs.strip().splitlines()[-1]))


def test_a_sample_answers_through_its_service_from_a_pod_inside_the_cluster(
    cluster: Cluster, operator: Operator, models: Models, namespace: str
) -> None:
    require_installed(operator)
    name = deploy_ready_sample(cluster, "onnxruntime-cpu.yaml", namespace, models)
    isvc = cluster.get("kisvc", name, "-n", namespace)
    service = cluster.get("service", name, "-n", namespace)
    assert service["spec"]["clusterIP"] not in ("", "None")
    batch = testmodels.sample_input(batch=2)
    body = infer_body(batch=2)  # the same rows as `batch`
    model = isvc["spec"]["model"]["name"]
    # The Service's DNS name resolves to its ClusterIP; kube-proxy carries it to the pod.
    url = f"http://{name}.{namespace}.svc:8000/v2/models/{model}/infer"
    output = run_client(cluster, namespace, url, body)
    expected = testmodels.run_reference(active_model_path(isvc, models), batch)
    assert output["shape"] == list(expected.shape)
    np.testing.assert_allclose(
        np.array(output["data"], dtype=np.float32).reshape(expected.shape), expected, atol=1e-4
    )
    # status.url names the same Service, as users are told to call it.
    assert f"{name}.{namespace}.svc" in isvc["status"]["url"]


def test_kubectl_delete_k_manifests_uninstalls_with_nothing_stuck(
    cluster: Cluster, operator: Operator, models: Models, namespace: str
) -> None:
    require_installed(operator)
    name = deploy_ready_sample(cluster, "onnxruntime-cpu.yaml", namespace, models)
    manifests = str(REPO / "manifests")
    try:
        # What a user runs: the CRD goes, and with it every InferenceService.
        cluster.kubectl("delete", "-k", manifests, "--timeout=180s", timeout_s=240)
        wait_for(
            "the CRD gone (no InferenceService left in Terminating)",
            lambda: cluster.kubectl("get", "crd", CRD, check=False).returncode != 0,
            180,
        )
        wait_for(
            "the model-server pods gone",
            lambda: not cluster.items("pods", "-n", namespace, "-l", f"{ISVC_LABEL}={name}"),
            180,
        )
        wait_for(
            "the kinfer-system namespace gone",
            lambda: cluster.kubectl("get", "namespace", "kinfer-system", check=False).returncode,
            180,
        )
    finally:
        # Back as `make kind-up` left it, for the tests after this one.
        subprocess.run([str(REPO / "e2e" / "kind" / "cluster.sh"), "install"], check=True)
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD}", "--timeout=60s")
