"""Inference through the real tritonclient (HTTP and gRPC, JSON and binary) on both runtimes."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from kinfer_dev.runtime.testmodels import INPUT_NAME, OUTPUT_NAME, run_reference, sample_input

from .clients import infer
from .conftest import READ_ONLY_MODEL

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("protocol", "binary"),
    [("http", True), ("http", False), ("grpc", True)],
    ids=["http-binary", "http-json", "grpc"],
)
@pytest.mark.parametrize("batch_size", [1, 5])
def test_results_equal_onnxruntime_in_process(server, tier_models, protocol, binary, batch_size):
    batch = sample_input(batch_size, seed=batch_size)
    output, version = infer(server, READ_ONLY_MODEL, batch, protocol, binary)
    expected = run_reference(tier_models["fp32"], batch)
    assert output.shape == expected.shape and output.dtype == np.float32
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-6)
    assert version == "1"


def test_grpc_typed_contents_instead_of_raw(server, tier_models):
    # tritonclient always sends raw_input_contents; a plain protobuf request with typed
    # contents is the other form the protocol allows.
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    batch = sample_input(2, seed=7)
    request = service_pb2.ModelInferRequest(model_name=READ_ONLY_MODEL)
    tensor = request.inputs.add(name=INPUT_NAME, datatype="FP32", shape=list(batch.shape))
    tensor.contents.fp32_contents.extend(batch.ravel().tolist())
    with grpc.insecure_channel(server.grpc_url) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            request, timeout=60
        )
    output = np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(
        response.outputs[0].shape
    )
    np.testing.assert_allclose(
        output, run_reference(tier_models["fp32"], batch), rtol=1e-5, atol=1e-6
    )


def test_concurrent_requests_each_get_their_own_rows(server, tier_models):
    # Concurrent requests are batched together on both servers: each must get back its own rows.
    client = httpclient.InferenceServerClient(server.http_url, concurrency=8, network_timeout=60)
    try:
        batches = [sample_input(1 + i % 3, seed=100 + i) for i in range(24)]
        pending = []
        for batch in batches:
            tensor = httpclient.InferInput(INPUT_NAME, list(batch.shape), "FP32")
            tensor.set_data_from_numpy(batch)
            pending.append(client.async_infer(READ_ONLY_MODEL, [tensor]))
        for batch, request in zip(batches, pending, strict=True):
            output = request.get_result(timeout=60).as_numpy(OUTPUT_NAME)
            np.testing.assert_allclose(
                output, run_reference(tier_models["fp32"], batch), rtol=1e-5, atol=1e-6
            )
    finally:
        client.close()


def test_health_and_metadata_match_across_protocols(server):
    http = httpclient.InferenceServerClient(server.http_url)
    grpc_client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        assert http.is_server_live() and http.is_server_ready()
        assert grpc_client.is_server_live() and grpc_client.is_server_ready()
        assert http.is_model_ready(READ_ONLY_MODEL) and grpc_client.is_model_ready(READ_ONLY_MODEL)
        assert http.is_model_ready(READ_ONLY_MODEL, "1") and not http.is_model_ready(
            READ_ONLY_MODEL, "2"
        )
        assert not grpc_client.is_model_ready("no_such_model")
        metadata = http.get_model_metadata(READ_ONLY_MODEL)
        assert metadata["name"] == READ_ONLY_MODEL and metadata["versions"] == ["1"]
        assert metadata["inputs"] == [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, 64]}]
        assert metadata["outputs"] == [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, 16]}]
        grpc_metadata = grpc_client.get_model_metadata(READ_ONLY_MODEL)
        assert [tuple(t.shape) for t in grpc_metadata.inputs] == [(-1, 64)]
        config = http.get_model_config(READ_ONLY_MODEL)
        assert config["max_batch_size"] == 8
        assert config["parameters"]["kinfer.tiers"]["string_value"] == "fp32,fp16,int8"
        grpc_config = grpc_client.get_model_config(READ_ONLY_MODEL).config
        assert grpc_config.input[0].name == INPUT_NAME and grpc_config.max_batch_size == 8
        assert http.get_server_metadata()["extensions"]
    finally:
        http.close()
        grpc_client.close()


def test_grpc_stream_answers_each_request_in_order(kinfer_server, tier_models):
    import queue

    answers: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(kinfer_server.grpc_url)
    batches = [sample_input(1 + i % 2, seed=200 + i) for i in range(5)]
    try:
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        for index, batch in enumerate(batches):
            tensor = grpcclient.InferInput(INPUT_NAME, list(batch.shape), "FP32")
            tensor.set_data_from_numpy(batch)
            client.async_stream_infer(READ_ONLY_MODEL, [tensor], request_id=str(index))
        bad = grpcclient.InferInput(INPUT_NAME, [1, 3], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 3), np.float32))
        client.async_stream_infer(READ_ONLY_MODEL, [bad], request_id="bad")
        received = [answers.get(timeout=60) for _ in range(len(batches) + 1)]
    finally:
        client.stop_stream()
        client.close()
    for index, batch in enumerate(batches):
        result, error = received[index]
        assert error is None and result.get_response().id == str(index)
        np.testing.assert_allclose(
            result.as_numpy(OUTPUT_NAME),
            run_reference(tier_models["fp32"], batch),
            rtol=1e-5,
            atol=1e-6,
        )
    result, error = received[-1]
    assert result is None and "shape [1, 3]" in str(error)
