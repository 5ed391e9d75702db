"""How the pod runner maps a rendered pod to local processes (pure), incl. network safety."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kinfer.api.model import parse
from kinfer.render import render
from kinfer_dev.localcluster import podplan

REPO = Path(__file__).resolve().parents[2]
STATE = Path("/state")


def _pod(sample: str, storage_uri: str, pod_ip: str = "127.1.1.5") -> dict[str, Any]:
    """A pod as the API server would hold it, from the operator's own renderer."""
    obj = yaml.safe_load((REPO / "manifests" / "samples" / sample).read_text())
    if "precision" in obj["spec"]:
        for tier in obj["spec"]["precision"]["tiers"]:
            tier["storageUri"] = storage_uri.replace("fp32", tier["name"])
    else:
        obj["spec"]["model"]["storageUri"] = storage_uri
    obj["metadata"].update(namespace="team-a", uid="0123456789")
    deployment = next(o for o in render(parse(obj)) if o["kind"] == "Deployment")
    template = copy.deepcopy(deployment["spec"]["template"])
    return {
        "metadata": {
            **template["metadata"],
            "name": f"{obj['metadata']['name']}-abc",
            "namespace": "team-a",
            "uid": "abcdef0123456789",
        },
        "spec": {**template["spec"], "nodeName": "gpu-a100-0"},
        "status": {"podIP": pod_ip, "phase": "Running"},
    }


def test_onnxruntime_pod_maps_fetch_repository_and_binds_the_pod_ip() -> None:
    pod = _pod("onnxruntime-cpu.yaml", "http://127.0.0.1:8123/mlp/fp32/model.onnx")
    plan = podplan.plan_pod(pod, STATE)
    work = STATE / "pods" / "team-a_mlp-cpu-abc_abcdef01"
    assert plan.runtime == "onnxruntime"
    assert plan.model_repository == work / "volumes" / "model-repository"
    (fetch,) = plan.fetches
    assert fetch.argv[:4] == (
        "rclone",
        "copyto",
        ":http:mlp/fp32/model.onnx",
        str(work / "volumes" / "model-repository" / "mlp" / "1" / "model.onnx"),
    )
    assert "--http-url=http://127.0.0.1:8123" in fetch.argv
    (config_file,) = plan.config_files
    assert config_file.path == work / "volumes" / "model-repository" / "mlp" / "config.pbtxt"
    assert config_file.configmap == "mlp-cpu-model-config"
    args = podplan.local_server_args(plan)
    assert f"--model-repository={work / 'volumes' / 'model-repository'}" in args
    for flag in ("--http-address", "--grpc-address", "--metrics-address"):
        assert f"{flag}=127.1.1.5" in args
    assert plan.ports == {"http": 8000, "grpc": 8001, "metrics": 8002}


def test_tiers_become_one_fetch_per_version() -> None:
    pod = _pod("tiers-gpu.yaml", "http://localhost:9000/mlp/fp32/model.onnx")
    plan = podplan.plan_pod(pod, STATE)
    targets = [f.argv[3] for f in plan.fetches]
    assert [Path(t).parent.name for t in targets] == ["1", "2", "3"]
    assert [f.container for f in plan.fetches] == ["fetch-fp32", "fetch-fp16", "fetch-int8"]


def test_a_fetch_reports_its_log_only_under_fallback_to_logs_on_error() -> None:
    # As a real kubelet: terminated.message carries the log's tail only with that policy.
    pod = _pod("onnxruntime-cpu.yaml", "http://127.0.0.1:8123/mlp/fp32/model.onnx")
    assert podplan.plan_pod(pod, STATE).fetches[0].message_from_log
    del pod["spec"]["initContainers"][0]["terminationMessagePolicy"]
    assert not podplan.plan_pod(pod, STATE).fetches[0].message_from_log


def test_triton_pod_is_recognised_by_its_command() -> None:
    pod = _pod("triton-gpu.yaml", "http://127.0.0.1:8123/mlp/fp32/model.onnx")
    plan = podplan.plan_pod(pod, STATE)
    assert plan.runtime == "triton"
    assert "--model-control-mode=explicit" in plan.server_args


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("https://models.example.com/mlp/fp32/model.onnx", "not a loopback address"),
        ("http://10.0.0.7/mlp/fp32/model.onnx", "not a loopback address"),
        ("http://192.168.1.2:8000/mlp/fp32/model.onnx", "not a loopback address"),
        ("s3://bucket/mlp/fp32/model.onnx", "--s3-endpoint=.* is not a loopback address"),
        ("gs://bucket/mlp/fp32/model.onnx", "would leave this machine"),
    ],
)
def test_sources_off_this_machine_are_refused(uri: str, reason: str) -> None:
    pod = _pod("onnxruntime-cpu.yaml", uri)
    with pytest.raises(podplan.UnsupportedPod, match=reason):
        podplan.plan_pod(pod, STATE)


def test_pvc_source_reads_the_clusters_local_claim_folder() -> None:
    pod = _pod("onnxruntime-cpu.yaml", "pvc://models/mlp/fp32/model.onnx")
    plan = podplan.plan_pod(pod, STATE)
    assert plan.fetches[0].argv[2] == str(STATE / "pvc" / "models" / "mlp" / "fp32" / "model.onnx")


def test_non_loopback_pod_ip_is_refused() -> None:
    pod = _pod("onnxruntime-cpu.yaml", "http://127.0.0.1:1/m.onnx", pod_ip="10.0.0.5")
    with pytest.raises(podplan.UnsupportedPod, match="not a loopback address"):
        podplan.plan_pod(pod, STATE)


def test_cold_start_annotation_is_read_and_validated() -> None:
    pod = _pod("onnxruntime-cpu.yaml", "http://127.0.0.1:1/m.onnx")
    assert podplan.plan_pod(pod, STATE).cold_start_s is None
    pod["metadata"]["annotations"]["kinfer.dev/simulated-cold-start-seconds"] = "12.5"
    assert podplan.plan_pod(pod, STATE).cold_start_s == 12.5
    pod["metadata"]["annotations"]["kinfer.dev/simulated-cold-start-seconds"] = "soon"
    with pytest.raises(podplan.UnsupportedPod, match="simulated-cold-start-seconds"):
        podplan.plan_pod(pod, STATE)


def test_unknown_server_command_is_refused() -> None:
    pod = _pod("onnxruntime-cpu.yaml", "http://127.0.0.1:1/m.onnx")
    pod["spec"]["containers"][0]["command"] = ["python", "serve.py"]
    pod["metadata"]["labels"].pop("kinfer.dev/runtime")
    with pytest.raises(podplan.UnsupportedPod, match="no known model server"):
        podplan.plan_pod(pod, STATE)


def test_a_remote_destination_is_refused() -> None:
    pod = _pod("onnxruntime-cpu.yaml", "http://127.0.0.1:1/m.onnx")
    init = pod["spec"]["initContainers"][0]
    init["args"] = ["copyto", init["args"][1], ":s3:bucket/stolen.onnx", *init["args"][3:]]
    with pytest.raises(podplan.UnsupportedPod, match="not a local path"):
        podplan.plan_pod(pod, STATE)


def test_simulated_gpus_stand_for_cuda_unless_the_pod_says_they_have_none() -> None:
    """tiers-gpu.yaml is onnxruntime on GPUs: the rendered server requires CUDA, which the
    simulated GPU provides (the flag is dropped) unless kinfer.dev/simulated-cuda is "false"."""
    pod = _pod("tiers-gpu.yaml", "http://127.0.0.1:8123/mlp/fp32/model.onnx")
    [server] = pod["spec"]["containers"]
    assert "--require-execution-provider=cuda" in server["args"]
    args = podplan.plan_pod(pod, STATE).server_args
    assert not [a for a in args if a.startswith(podplan.REQUIRE_PROVIDER_FLAG)]
    assert "--execution-provider=cuda" in args  # kept: the server skips what it lacks
    pod["metadata"]["annotations"]["kinfer.dev/simulated-cuda"] = "false"
    assert "--require-execution-provider=cuda" in podplan.plan_pod(pod, STATE).server_args


def test_the_servers_prestop_sleep_is_read_and_bounded_by_the_grace_period() -> None:
    pod = _pod("onnxruntime-cpu.yaml", "http://127.0.0.1:8000/mlp/model.onnx")
    [server] = pod["spec"]["containers"]
    # kinfer renders a drain: a deleted pod answers while the endpoints drop it.
    assert server["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
    plan = podplan.plan_pod(pod, Path("/tmp/state"))
    assert plan.prestop_sleep_s == server["lifecycle"]["preStop"]["sleep"]["seconds"]
    pod["spec"]["terminationGracePeriodSeconds"] = 2
    assert podplan.plan_pod(pod, Path("/tmp/state")).prestop_sleep_s == 2
    del server["lifecycle"]
    assert podplan.plan_pod(pod, Path("/tmp/state")).prestop_sleep_s == 0
