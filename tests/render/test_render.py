"""Rendering: every field of the spec lands where Kubernetes and the runtime expect it."""

from __future__ import annotations

import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from kinfer.api import constants as c
from kinfer.api.model import parse
from kinfer.config import Images, RenderOptions
from kinfer.render import render
from kinfer.render.deployment import effective_replicas
from tests.conftest import load_sample

OPTIONS = RenderOptions(
    images=Images(triton="triton:test", onnxruntime="ort:test", storage_initializer="rclone:test"),
    cluster_domain="cluster.local",
)


def objects_by_kind(obj):
    return {o["kind"]: o for o in render(parse(obj), OPTIONS)}


def pod_spec(obj):
    return objects_by_kind(obj)["Deployment"]["spec"]["template"]["spec"]


def server(obj):
    [container] = pod_spec(obj)["containers"]
    return container


def test_children_are_a_configmap_a_service_and_a_deployment(minimal):
    assert [o["kind"] for o in render(parse(minimal), OPTIONS)] == [
        "ConfigMap",
        "Service",
        "Deployment",
    ]


def test_every_child_is_labelled_and_owned(minimal):
    for obj in render(parse(minimal), OPTIONS):
        meta = obj["metadata"]
        assert meta["namespace"] == "team-a"
        assert meta["labels"][c.LABEL_ISVC] == "mlp"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "kinfer.dev/v1alpha1",
                "kind": "InferenceService",
                "name": "mlp",
                "uid": "u-1",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]


def test_no_owner_reference_without_a_uid(minimal):
    del minimal["metadata"]["uid"]
    assert all("ownerReferences" not in o["metadata"] for o in render(parse(minimal), OPTIONS))


def test_deployment_selects_its_pods_by_the_isvc_label(minimal):
    deployment = objects_by_kind(minimal)["Deployment"]
    assert deployment["spec"]["selector"] == {"matchLabels": {c.LABEL_ISVC: "mlp"}}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels[c.LABEL_ISVC] == "mlp" and labels[c.LABEL_RUNTIME] == "onnxruntime"


def test_service_exposes_http_grpc_metrics(minimal):
    service = objects_by_kind(minimal)["Service"]
    assert service["spec"]["selector"] == {c.LABEL_ISVC: "mlp"}
    assert {(p["name"], p["port"]) for p in service["spec"]["ports"]} == {
        ("http", 8000),
        ("grpc", 8001),
        ("metrics", 8002),
    }


def test_triton_container_runs_explicit_mode_with_the_model_loaded(minimal):
    minimal["spec"]["runtime"] = "triton"
    container = server(minimal)
    assert container["image"] == "triton:test"
    assert container["command"] == ["tritonserver"]
    args = container["args"]
    for flag in (
        "--model-repository=/mnt/models",
        "--model-control-mode=explicit",
        "--load-model=mlp",
        "--http-port=8000",
        "--grpc-port=8001",
        "--metrics-port=8002",
        "--metrics-config=summary_latencies=true",
    ):
        assert flag in args
    assert {v["name"] for v in pod_spec(minimal)["volumes"]} >= {"dshm", "model-repository"}


def test_onnxruntime_container_runs_kinfer_server_with_the_same_ports_and_probes(minimal):
    container = server(minimal)
    assert container["image"] == "ort:test"
    assert container["command"] == ["kinfer-ort-server"]
    assert "--model-control-mode=explicit" in container["args"]
    assert {(p["name"], p["containerPort"]) for p in container["ports"]} == {
        ("http", 8000),
        ("grpc", 8001),
        ("metrics", 8002),
    }
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert (
        container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"]
        >= 300
    )


def test_image_override(minimal):
    minimal["spec"]["image"] = "registry.local/ort:9"
    assert server(minimal)["image"] == "registry.local/ort:9"


def test_pods_meet_the_restricted_pod_security_standard(minimal):
    spec = pod_spec(minimal)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    for container in spec["containers"] + spec["initContainers"]:
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["capabilities"] == {"drop": ["ALL"]}
        assert ctx["runAsNonRoot"] is True
    # Read-only root: every writable path is a volume.
    mounts = {m["mountPath"] for m in server(minimal)["volumeMounts"]}
    assert "/tmp" in mounts


def test_cpu_only_has_no_gpu_limit_toleration_or_selector(minimal):
    spec = pod_spec(minimal)
    limits = server(minimal)["resources"]["limits"]
    assert not any(key.startswith("nvidia.com/") for key in limits)
    assert "tolerations" not in spec and "nodeSelector" not in spec


def test_gpus_request_whole_gpus_on_the_product_with_the_toleration(minimal):
    minimal["spec"]["resources"] = {"gpus": 2, "gpuProduct": "NVIDIA-H100-80GB-HBM3"}
    spec = pod_spec(minimal)
    resources = server(minimal)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 2
    assert resources["requests"] == {"cpu": "1", "memory": "2Gi"}
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]


def test_mig_profile_requests_one_mig_slice_and_no_whole_gpu():
    spec = parse(load_sample("mig.yaml"))
    [container] = render(spec, OPTIONS)[2]["spec"]["template"]["spec"]["containers"]
    limits = container["resources"]["limits"]
    assert limits["nvidia.com/mig-1g.10gb"] == 1
    assert "nvidia.com/gpu" not in limits


def test_user_node_selector_and_tolerations_are_merged(minimal):
    minimal["spec"]["resources"] = {"gpus": 1, "gpuProduct": "NVIDIA-L4"}
    minimal["spec"]["nodeSelector"] = {"pool": "inference"}
    extra = {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
    minimal["spec"]["tolerations"] = [extra]
    spec = pod_spec(minimal)
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4", "pool": "inference"}
    assert extra in spec["tolerations"] and len(spec["tolerations"]) == 2


def test_env_and_service_account_reach_the_pod(minimal):
    minimal["spec"]["env"] = [{"name": "OMP_NUM_THREADS", "value": "4"}]
    minimal["spec"]["serviceAccountName"] = "model-reader"
    spec = pod_spec(minimal)
    assert spec["serviceAccountName"] == "model-reader"
    assert {"name": "OMP_NUM_THREADS", "value": "4"} in spec["containers"][0]["env"]
    # Storage credentials given as env reach the fetch too.
    assert {"name": "OMP_NUM_THREADS", "value": "4"} in spec["initContainers"][0]["env"]


def test_one_fetch_init_container_per_tier_into_its_version_directory():
    spec = pod_spec(load_sample("tiers-gpu.yaml"))
    fetches = spec["initContainers"]
    assert [f["name"] for f in fetches] == ["fetch-fp32", "fetch-fp16", "fetch-int8"]
    assert fetches[1]["args"][:3] == [
        "copyto",
        ":http:mlp/fp16/model.onnx",
        "/mnt/models/mlp/2/model.onnx",
    ]
    assert "--http-url=https://models.example.com" in fetches[1]["args"]


@pytest.mark.parametrize("sample", ["tiers-gpu.yaml", "triton-gpu.yaml", "onnxruntime-cpu.yaml"])
def test_no_subpath_mount_sits_inside_a_read_only_mount(sample):
    # The runtime creates a subPath mount's target file inside the mount around it; a
    # real kubelet fails the container (StartError) when that one is read-only.
    for container in pod_spec(load_sample(sample))["containers"]:
        mounts = container["volumeMounts"]
        for inner in (m for m in mounts if m.get("subPath")):
            outer = [
                m
                for m in mounts
                if m is not inner
                and inner["mountPath"].startswith(m["mountPath"].rstrip("/") + "/")
            ]
            assert outer and not any(m.get("readOnly") for m in outer), (inner, outer)


@pytest.mark.parametrize("sample", ["tiers-gpu.yaml", "triton-gpu.yaml", "onnxruntime-cpu.yaml"])
def test_every_container_falls_back_to_its_log_for_the_termination_message(sample):
    # A real kubelet leaves terminated.message empty otherwise: a failed fetch or
    # server would reach the InferenceService's condition with no words of its own.
    spec = pod_spec(load_sample(sample))
    containers = spec["initContainers"] + spec["containers"]
    assert len(containers) >= 2
    assert {c["name"]: c.get("terminationMessagePolicy") for c in containers} == {
        c["name"]: "FallbackToLogsOnError" for c in containers
    }


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/models/mlp/", ["copy", ":s3:bucket/models/mlp/", "/mnt/models/mlp/1/"]),
        ("gs://bucket/mlp/model.onnx", ["copyto", ":gcs:bucket/mlp/model.onnx"]),
        ("pvc://store/mlp/v1", ["copy", "/mnt/pvc/store/mlp/v1", "/mnt/models/mlp/1/"]),
    ],
)
def test_storage_schemes_map_to_rclone(minimal, uri, expected):
    minimal["spec"]["model"]["storageUri"] = uri
    fetch = pod_spec(minimal)["initContainers"][0]
    assert fetch["args"][: len(expected)] == expected


def test_pvc_source_is_mounted_read_only(minimal):
    minimal["spec"]["model"]["storageUri"] = "pvc://store/mlp/v1"
    spec = pod_spec(minimal)
    assert {
        "name": "pvc-store",
        "persistentVolumeClaim": {"claimName": "store", "readOnly": True},
    } in spec["volumes"]
    mount = next(m for m in spec["initContainers"][0]["volumeMounts"] if m["name"] == "pvc-store")
    assert mount == {"name": "pvc-store", "mountPath": "/mnt/pvc/store", "readOnly": True}


def _config(obj):
    text = objects_by_kind(obj)["ConfigMap"]["data"]["config.pbtxt"]
    message = text_format.Parse(text, model_config_pb2.ModelConfig())
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def test_model_config_is_valid_triton_config_for_the_first_tier():
    config = _config(load_sample("tiers-gpu.yaml"))
    assert config["name"] == "mlp"
    assert config["backend"] == "onnxruntime"
    # int64 fields come back as strings from MessageToDict.
    assert config["version_policy"] == {"specific": {"versions": ["1"]}}
    assert config["parameters"]["kinfer.tiers"] == {"string_value": "fp32,fp16,int8"}
    assert config["instance_group"] == [{"count": 1, "kind": "KIND_GPU"}]
    assert config["dynamic_batching"] == {"max_queue_delay_microseconds": "500"}


def test_pinning_a_tier_does_not_roll_the_pods():
    # Pods start on the first tier; the control loop switches them to the pinned one.
    obj = load_sample("tiers-gpu.yaml")
    before = objects_by_kind(obj)
    obj["spec"]["precision"]["pinned"] = "int8"
    after = objects_by_kind(obj)
    assert _config(obj)["version_policy"] == {"specific": {"versions": ["1"]}}
    assert before["Deployment"] == after["Deployment"]


def test_config_change_rolls_the_pods(minimal):
    before = objects_by_kind(minimal)["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    minimal["spec"]["batching"] = {"maxBatchSize": 32}
    after = objects_by_kind(minimal)["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert before[c.ANNOTATION_CONFIG_DIGEST] != after[c.ANNOTATION_CONFIG_DIGEST]
    assert after["prometheus.io/scrape"] == "true" and after["prometheus.io/port"] == "8002"


def test_replicas_follow_spec_and_are_bounded_only_when_autoscaling(minimal):
    minimal["spec"]["replicas"] = 25
    assert effective_replicas(parse(minimal)) == (25, None)
    minimal["spec"]["scaling"] = {"maxReplicas": 4, "targetQPSPerReplica": 10}
    replicas, note = effective_replicas(parse(minimal))
    assert replicas == 4 and "outside" in note
    assert objects_by_kind(minimal)["Deployment"]["spec"]["replicas"] == 4


def test_render_returns_fresh_objects(minimal):
    first = render(parse(minimal), OPTIONS)
    first[2]["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = True
    second = render(parse(minimal), OPTIONS)
    assert (
        "privileged"
        not in second[2]["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    )
