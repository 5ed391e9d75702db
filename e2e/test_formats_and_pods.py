"""Model formats and pod customization on a cluster: a shipped config.pbtxt is what the server
runs, a GPU server on an image without CUDA says so in Ready=False, and a platform team's pod
fields (priority, affinity, spread, pull secrets, labels, annotations) reach the running pod,
enforced by the real API server and kube-scheduler."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from e2e.harness import (
    Cluster,
    Models,
    Operator,
    condition_of,
    load_sample,
    pod_endpoint,
    runnable_here,
    wait_for,
)
from kinfer_dev.runtime import testmodels

SHIPPED_CONFIG = """name: "mlp"
max_batch_size: 2
input { name: "input" data_type: TYPE_FP32 dims: [ %d ] }
output { name: "output" data_type: TYPE_FP32 dims: [ %d ] }
"""


def _infer_status(http_url: str, batch: int) -> int:
    body = {
        "inputs": [
            {
                "name": testmodels.INPUT_NAME,
                "shape": [batch, testmodels.MLPShape().in_features],
                "datatype": "FP32",
                "data": testmodels.sample_input(batch).flatten().tolist(),
            }
        ]
    }
    request = urllib.request.Request(
        f"http://{http_url}/v2/models/mlp/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


@pytest.mark.kind_covered
def test_a_shipped_config_is_the_one_the_server_runs(
    cluster: Cluster, operator: Operator, models: Models, namespace: str
) -> None:
    shape = testmodels.MLPShape()
    model_dir = models.local("shipped/mlp")
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "1" / "model.onnx").write_bytes(models.local(models.tiers["fp32"]).read_bytes())
    (model_dir / "config.pbtxt").write_text(
        SHIPPED_CONFIG % (shape.in_features, shape.out_features)
    )
    models.publish("shipped/mlp/config.pbtxt", "shipped/mlp/1/model.onnx")
    isvc = runnable_here(cluster, load_sample("onnxruntime-cpu.yaml", namespace, models))
    isvc["spec"]["model"].update(config="shipped", storageUri=models.uri("shipped/mlp/"))
    name = isvc["metadata"]["name"]
    cluster.apply(isvc)
    cluster.wait_ready(namespace, name)

    [pod] = cluster.ready_pods(namespace, name)
    with pod_endpoint(cluster, pod) as (http_url, _):
        # The shipped max_batch_size (2), not the spec's default (8), bounds a request.
        assert _infer_status(http_url, 2) == 200
        assert _infer_status(http_url, 3) == 400


def test_a_gpu_server_on_an_image_without_cuda_refuses_and_says_so(
    cluster: Cluster, operator: Operator, models: Models, namespace: str
) -> None:
    if not cluster.is_local:
        pytest.skip("kind's GPU nodes are simulated by KWOK: their pods never run a server")
    isvc = load_sample("onnxruntime-cpu.yaml", namespace, models)
    isvc["spec"]["resources"]["gpus"] = 1
    # The local cluster's simulated GPU stands for one with CUDA unless told it has none.
    isvc["spec"]["podMetadata"] = {"annotations": {"kinfer.dev/simulated-cuda": "false"}}
    name = isvc["metadata"]["name"]
    cluster.apply(isvc)

    def refused() -> dict[str, Any] | None:
        ready = condition_of(cluster.get("kisvc", name, "-n", namespace), "Ready") or {}
        return ready if "CUDAExecutionProvider" in ready.get("message", "") else None

    # The first resync (RESYNC_INTERVAL_S, 120 s) at the latest reads the crashed pod.
    ready = wait_for("Ready=False naming the missing CUDA provider", refused, 300)
    assert ready["status"] == "False"
    assert ready["reason"] == "ServerFailing", ready
    assert "exited 2" in ready["message"], ready["message"]
    deployment = cluster.get("deployment", name, "-n", namespace)
    [server] = deployment["spec"]["template"]["spec"]["containers"]
    assert server["image"].endswith("-cuda")
    assert "--require-execution-provider=cuda" in server["args"]
    [pod] = cluster.pods(namespace, name)
    [status] = pod["status"]["containerStatuses"]
    assert status["lastState"]["terminated"]["exitCode"] == 2


@pytest.fixture
def priority_class(cluster: Cluster, namespace: str) -> Any:
    name = f"{namespace}-high"
    cluster.apply(
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": name},
            "value": 100000,
            "description": "e2e: a platform team's inference priority",
        }
    )
    yield name
    cluster.kubectl("delete", "priorityclass", name, "--ignore-not-found", check=False)


def _schedulable_node(cluster: Cluster) -> str:
    """A node a CPU pod may run on: untainted, not a KWOK-simulated GPU node."""
    for node in cluster.items("nodes"):
        if not node["spec"].get("taints") and not node["spec"].get("unschedulable"):
            labels = node["metadata"].get("labels") or {}
            if "nvidia.com/gpu.product" not in labels:
                return str(node["metadata"]["name"])
    raise AssertionError("no untainted CPU node")


def test_pod_customization_reaches_the_running_pod(
    cluster: Cluster,
    operator: Operator,
    models: Models,
    namespace: str,
    priority_class: str,
) -> None:
    node = _schedulable_node(cluster)
    cluster.kubectl(
        "create", "secret", "docker-registry", "registry", "-n", namespace,
        "--docker-server=registry.example.com", "--docker-username=u", "--docker-password=p",
    )  # fmt: skip
    isvc = runnable_here(cluster, load_sample("onnxruntime-cpu.yaml", namespace, models))
    name = isvc["metadata"]["name"]
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
                        ]
                    }
                ]
            }
        }
    }
    isvc["spec"].update(
        imagePullSecrets=["registry"],
        priorityClassName=priority_class,
        affinity=affinity,
        topologySpreadConstraints=[
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
            }
        ],
        podMetadata={
            "labels": {"team": "e2e"},
            "annotations": {"example.com/owner": "team-e2e"},
        },
    )
    cluster.apply(isvc)
    cluster.wait_ready(namespace, name)

    [pod] = cluster.ready_pods(namespace, name)
    spec, meta = pod["spec"], pod["metadata"]
    # The API server resolved the class into the pod's priority; the scheduler kept the
    # required affinity.
    assert spec["priorityClassName"] == priority_class
    assert spec["priority"] == 100000
    assert spec["nodeName"] == node
    assert spec["affinity"] == affinity
    assert spec["imagePullSecrets"] == [{"name": "registry"}]
    [spread] = spec["topologySpreadConstraints"]
    assert spread["labelSelector"] == {"matchLabels": {"kinfer.dev/inferenceservice": name}}
    assert meta["labels"]["team"] == "e2e"
    assert meta["labels"]["kinfer.dev/inferenceservice"] == name
    assert meta["annotations"]["example.com/owner"] == "team-e2e"


@pytest.mark.kind_covered
def test_an_affinity_the_api_server_refuses_is_said_with_its_spec_field(
    cluster: Cluster, operator: Operator, models: Models, namespace: str
) -> None:
    """spec.affinity passes through (preserve-unknown-fields): the API server checks it when
    the Deployment is applied, and its refusal reaches SpecValid=False naming spec.affinity."""
    isvc = runnable_here(cluster, load_sample("onnxruntime-cpu.yaml", namespace, models))
    term = {"matchExpressions": [{"key": "zone", "operator": "Near", "values": ["a"]}]}
    isvc["spec"]["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
        }
    }
    name = isvc["metadata"]["name"]
    cluster.apply(isvc)

    def refused() -> dict[str, Any] | None:
        valid = condition_of(cluster.get("kisvc", name, "-n", namespace), "SpecValid") or {}
        return valid if valid.get("status") == "False" else None

    valid = wait_for("SpecValid=False", refused, 180)
    assert "spec.affinity" in valid["message"], valid["message"]
    assert "Near" in valid["message"], valid["message"]
