"""The repository API in explicit mode on both runtimes: index, load, unload, atomic failed loads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from kinfer.runtime.switch import active_version, ready_versions, select_version
from kinfer_dev.runtime.testmodels import run_reference, sample_input

from .clients import infer
from .conftest import LOAD_MODEL, READ_ONLY_MODEL

pytestmark = pytest.mark.slow


def test_load_infer_unload_over_both_protocols(server, tier_models):
    http = httpclient.InferenceServerClient(server.http_url, network_timeout=120)
    grpc_client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        names = {entry["name"] for entry in http.get_model_repository_index()}
        assert {READ_ONLY_MODEL, LOAD_MODEL} <= names
        assert not http.is_model_ready(LOAD_MODEL)
        with pytest.raises(InferenceServerException):
            infer(server, LOAD_MODEL, sample_input(1))

        http.load_model(LOAD_MODEL)
        assert http.is_model_ready(LOAD_MODEL) and grpc_client.is_model_ready(LOAD_MODEL, "1")
        batch = sample_input(2)
        output, version = infer(server, LOAD_MODEL, batch, "grpc")
        np.testing.assert_allclose(
            output, run_reference(tier_models["fp32"], batch), rtol=1e-5, atol=1e-6
        )
        assert version == "1"

        grpc_client.unload_model(LOAD_MODEL)
        assert not grpc_client.is_model_ready(LOAD_MODEL)
        with pytest.raises(InferenceServerException):
            infer(server, LOAD_MODEL, batch, "http")
        states = {
            entry.get("version"): entry.get("state")
            for entry in http.get_model_repository_index()
            if entry["name"] == LOAD_MODEL
        }
        assert "READY" not in states.values()
        assert http.is_model_ready(READ_ONLY_MODEL), "unloading one model leaves the others serving"

        # HTTP load with a config override picks the version, as the gRPC switch does.
        config = json.loads(server_config := _config_json(server, READ_ONLY_MODEL))
        config["name"] = LOAD_MODEL
        config["version_policy"] = {"specific": {"versions": [2]}}
        http.load_model(LOAD_MODEL, config=json.dumps(config))
        assert ready_versions(server.grpc_url, LOAD_MODEL) == [2]
        output, version = infer(server, LOAD_MODEL, batch, "http")
        assert version == "2"
        np.testing.assert_allclose(
            output, run_reference(tier_models["fp16"], batch), rtol=1e-3, atol=1e-3
        )
        assert server_config
    finally:
        http.close()
        grpc_client.close()


def test_a_failed_load_keeps_the_old_version_serving(server, tier_models):
    select_version(server.grpc_url, LOAD_MODEL, 1, timeout_s=120)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        config = client.get_model_config(LOAD_MODEL, as_json=True)["config"]
        config["version_policy"] = {"specific": {"versions": [9]}}
        with pytest.raises(InferenceServerException):
            client.load_model(LOAD_MODEL, config=json.dumps(config), client_timeout=120)
    finally:
        client.close()
    assert active_version(server.grpc_url, LOAD_MODEL) == 1
    batch = sample_input(3)
    output, version = infer(server, LOAD_MODEL, batch, "grpc")
    assert version == "1"
    np.testing.assert_allclose(
        output, run_reference(tier_models["fp32"], batch), rtol=1e-5, atol=1e-6
    )


def test_override_replaces_the_config_and_io_come_from_the_onnx_model(ort_server):
    # Triton's semantics: the override is the whole config. kinfer's server, like Triton's
    # onnxruntime backend, completes what it lacks from the ONNX model: inputs, outputs and
    # the default max_batch_size (4), not the repository's 8.
    client = grpcclient.InferenceServerClient(ort_server.grpc_url)
    try:
        client.load_model(
            LOAD_MODEL, config=json.dumps({"version_policy": {"specific": {"versions": [3]}}})
        )
        config = client.get_model_config(LOAD_MODEL, as_json=True)["config"]
        assert config["max_batch_size"] == 4
        assert [t["name"] for t in config["input"]] == ["input"]
        assert [t["name"] for t in config["output"]] == ["output"]
        assert "kinfer.tiers" not in config.get("parameters", {}), (
            "the repository's parameters are not merged in"
        )
        assert ready_versions(ort_server.grpc_url, LOAD_MODEL) == [3]
        _, version = infer(ort_server, LOAD_MODEL, sample_input(4), "http")
        assert version == "3"
        with pytest.raises(InferenceServerException, match="batch size 5"):
            infer(ort_server, LOAD_MODEL, sample_input(5), "grpc")
    finally:
        client.unload_model(LOAD_MODEL)
        client.close()


def test_load_errors_name_what_is_wrong(kinfer_server):
    client = grpcclient.InferenceServerClient(kinfer_server.grpc_url)
    try:
        with pytest.raises(InferenceServerException, match="no_such_model"):
            client.load_model("no_such_model")
        with pytest.raises(InferenceServerException, match="not a valid model config JSON"):
            client.load_model(LOAD_MODEL, config="{not json")
        with pytest.raises(InferenceServerException, match="'nope' is not in the ONNX model"):
            client.load_model(
                LOAD_MODEL,
                config=json.dumps(
                    {"input": [{"name": "nope", "data_type": "TYPE_FP32", "dims": [64]}]}
                ),
            )
        assert client.is_server_ready()
    finally:
        client.close()


def _config_json(server, model: str) -> str:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        return json.dumps(client.get_model_config(model, as_json=True)["config"])
    finally:
        client.close()


def test_a_kind_gpu_model_is_served_on_cpu_where_there_is_no_gpu(ort_server, tier_models):
    # The operator renders KIND_GPU for GPU pods; the local cluster runs them on CPU hosts.
    client = grpcclient.InferenceServerClient(ort_server.grpc_url)
    try:
        config = client.get_model_config(READ_ONLY_MODEL, as_json=True)["config"]
        config["name"] = LOAD_MODEL
        config["instance_group"] = [{"count": 1, "kind": "KIND_GPU"}]
        client.load_model(LOAD_MODEL, config=json.dumps(config))
        batch = sample_input(2)
        output, _ = infer(ort_server, LOAD_MODEL, batch, "grpc")
        np.testing.assert_allclose(
            output, run_reference(tier_models["fp32"], batch), rtol=1e-5, atol=1e-6
        )
        assert "asks for KIND_GPU instances; no CUDA provider here" in ort_server.log_tail(20000)
    finally:
        client.unload_model(LOAD_MODEL)
        client.close()


def _cast_model(path) -> None:
    """INT64 [3] -> FP16 [3] (doubled), no batch dimension: the non-batching, non-FP32 path."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Add", ["x", "x"], ["twice"]),
            helper.make_node("Cast", ["twice"], ["y"], to=TensorProto.FLOAT16),
        ],
        "cast",
        [helper.make_tensor_value_info("x", TensorProto.INT64, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def test_a_model_without_config_or_batch_dim_is_completed_and_served(ort_server, ort_repository):
    # No config.pbtxt at all: the server completes it from the ONNX model (Triton's
    # auto-complete); a static first dimension means no batching (max_batch_size 0).
    (ort_repository / "cast" / "1").mkdir(parents=True, exist_ok=True)
    _cast_model(ort_repository / "cast" / "1" / "model.onnx")
    http = httpclient.InferenceServerClient(ort_server.http_url)
    try:
        http.load_model("cast")
        config = http.get_model_config("cast")
        assert config.get("max_batch_size", 0) == 0
        assert config["input"][0]["data_type"] == "TYPE_INT64"
        assert http.get_model_metadata("cast")["outputs"] == [
            {"name": "y", "datatype": "FP16", "shape": [3]}
        ]
        values = np.array([1, 2, 3], dtype=np.int64)
        for binary in (True, False):
            tensor = httpclient.InferInput("x", [3], "INT64")
            tensor.set_data_from_numpy(values, binary_data=binary)
            result = http.infer(
                "cast", [tensor], outputs=[httpclient.InferRequestedOutput("y", binary_data=binary)]
            )
            output = result.as_numpy("y")
            assert output.dtype == np.float16
            np.testing.assert_array_equal(output, np.array([2, 4, 6], dtype=np.float16))
    finally:
        http.unload_model("cast")
        http.close()
