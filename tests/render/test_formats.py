"""Model formats: every format's rendered config.pbtxt parses as Triton's ModelConfig, inputs
and outputs from the spec, maxBatchSize 0, a shipped config, and onnxruntime on GPUs."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from kinfer.api import constants as c
from kinfer.api.model import parse
from kinfer.api.validation import InvalidSpecError, validate_object
from kinfer.config import Images, RenderOptions
from kinfer.render import render
from kinfer.render.deployment import ORT_GPU_ARGS

OPTIONS = RenderOptions(
    images=Images(
        triton="triton:test",
        onnxruntime="ort:test",
        onnxruntime_cuda="ort:test-cuda",
        storage_initializer="rclone:test",
    ),
)
SIGNATURE = {
    "inputs": [{"name": "INPUT__0", "dataType": "FP32", "shape": [3, -1]}],
    "outputs": [{"name": "OUTPUT__0", "dataType": "INT64", "shape": [10]}],
}


def isvc(runtime: str = "triton", **model: Any) -> dict[str, Any]:
    fmt = model.get("format", "onnx")
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "metadata": {"name": "m", "namespace": "ns"},
        "spec": {
            "runtime": runtime,
            "model": {"storageUri": f"s3://bucket/m/{c.MODEL_FILENAMES[fmt]}", **model},
        },
    }


def objects(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in render(parse(obj), OPTIONS)}


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return objects(obj)["Deployment"]["spec"]["template"]["spec"]


def parsed_config(obj: dict[str, Any]) -> model_config_pb2.ModelConfig:
    """The ConfigMap's config.pbtxt through tritonclient's protobuf: Triton's own message."""
    text = objects(obj)["ConfigMap"]["data"]["config.pbtxt"]
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def errors(obj: dict[str, Any]) -> dict[str, str]:
    return {error.path: error.message for error in validate_object(obj)}


@pytest.mark.parametrize(
    ("fmt", "with_signature", "max_batch_size"),
    list(itertools.product(c.MODEL_FORMATS, (False, True), (0, 8))),
)
def test_every_format_renders_a_config_tritons_protobuf_parses(
    fmt: str, with_signature: bool, max_batch_size: int
) -> None:
    signature = SIGNATURE if with_signature or fmt in c.FORMATS_NEEDING_SIGNATURE else {}
    obj = isvc(format=fmt, **signature)
    obj["spec"]["batching"] = {"maxBatchSize": max_batch_size}
    config = parsed_config(obj)
    assert config.backend == c.TRITON_BACKENDS[fmt]
    assert config.platform == c.TRITON_PLATFORMS.get(fmt, "")
    assert config.max_batch_size == max_batch_size
    assert config.HasField("dynamic_batching") == (max_batch_size > 0)
    names = [
        (t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in config.input
    ]
    if signature:
        assert names == [("INPUT__0", "TYPE_FP32", [3, -1])]
        [output] = config.output
        assert (output.name, output.data_type, list(output.dims)) == (
            "OUTPUT__0",
            model_config_pb2.TYPE_INT64,
            [10],
        )
    else:
        assert names == [] and not config.output


def test_torchscript_and_tensorrt_name_their_triton_platform() -> None:
    assert parsed_config(isvc(format="torchscript", **SIGNATURE)).platform == "pytorch_libtorch"
    assert parsed_config(isvc(format="tensorrt")).platform == "tensorrt_plan"


@pytest.mark.parametrize("data_type", c.TENSOR_DATA_TYPES)
def test_every_data_type_is_one_of_tritons(data_type: str) -> None:
    obj = isvc(inputs=[{"name": "x", "dataType": data_type, "shape": [1]}])
    [tensor] = parsed_config(obj).input
    expected = "TYPE_STRING" if data_type == "BYTES" else f"TYPE_{data_type}"
    assert model_config_pb2.DataType.Name(tensor.data_type) == expected


def test_torchscript_without_inputs_names_the_field() -> None:
    found = errors(isvc(format="torchscript"))
    assert "spec.model.inputs" in found
    assert "torchscript" in found["spec.model.inputs"]
    with pytest.raises(InvalidSpecError):
        parse(isvc(format="torchscript", inputs=SIGNATURE["inputs"]))
    assert errors(isvc(format="torchscript", **SIGNATURE)) == {}


def test_unknown_data_type_and_a_dimension_below_minus_one_are_refused() -> None:
    bad = isvc(inputs=[{"name": "x", "dataType": "FLOAT", "shape": [-2]}])
    found = errors(bad)
    assert "spec.model.inputs[0].dataType" in found
    assert "spec.model.inputs[0].shape[0]" in found


def test_duplicate_input_names_are_refused() -> None:
    twice = [SIGNATURE["inputs"][0], SIGNATURE["inputs"][0]]
    assert "spec.model.inputs[1]" in errors(isvc(inputs=twice))


def test_max_batch_size_zero_has_no_batching_and_tells_the_server_not_to_add_one() -> None:
    for runtime, flag in (
        ("triton", "--backend-config=default-max-batch-size=0"),
        ("onnxruntime", "--default-max-batch-size=0"),
    ):
        obj = isvc(runtime)
        obj["spec"]["batching"] = {"maxBatchSize": 0}
        config = parsed_config(obj)
        assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
        [server] = pod_spec(obj)["containers"]
        assert flag in server["args"]
        obj["spec"]["batching"] = {"maxBatchSize": 4}
        [server] = pod_spec(obj)["containers"]
        assert flag not in server["args"]


def test_dynamic_batching_needs_a_max_batch_size_above_zero() -> None:
    obj = isvc()
    obj["spec"]["batching"] = {"maxBatchSize": 0, "maxQueueDelayMicroseconds": 100}
    found = errors(obj)
    assert list(found) == ["spec.batching.maxQueueDelayMicroseconds"]
    assert "maxBatchSize > 0" in found["spec.batching.maxQueueDelayMicroseconds"]
    obj["spec"]["batching"]["maxBatchSize"] = 1
    assert errors(obj) == {}
    assert parse(obj).spec.batching.max_queue_delay_us == 100


def test_absent_max_batch_size_is_the_default_with_dynamic_batching() -> None:
    config = parsed_config(isvc())
    assert config.max_batch_size == c.DEFAULT_MAX_BATCH_SIZE
    assert config.dynamic_batching.max_queue_delay_microseconds == c.DEFAULT_MAX_QUEUE_DELAY_US


def test_a_shipped_config_is_fetched_with_the_model_and_not_mounted_over() -> None:
    obj = isvc(config="shipped", storageUri="https://models.example.com/mnist/")
    spec = pod_spec(obj)
    [server] = spec["containers"]
    assert all(m["name"] != "model-config" for m in server["volumeMounts"])
    assert all(v["name"] != "model-config" for v in spec["volumes"])
    [fetch] = spec["initContainers"]
    # The directory (config.pbtxt, 1/model.onnx) becomes the model's directory.
    assert fetch["args"][:3] == ["copy", ":http:mnist/", f"{c.MODEL_REPOSITORY_PATH}/m/"]
    generated = pod_spec(isvc(storageUri="https://models.example.com/mnist/"))
    [fetch] = generated["initContainers"]
    assert fetch["args"][2] == f"{c.MODEL_REPOSITORY_PATH}/m/1/"


@pytest.mark.parametrize(
    ("model", "path"),
    [
        ({"config": "shipped"}, "spec.model.config"),  # a file URI
        ({"config": "shipped", "storageUri": "https://h/m/model.onnx?sig=1"}, "spec.model.config"),
        ({"config": "shipped", "storageUri": "s3://bucket/m/", **SIGNATURE}, "spec.model.config"),
    ],
)
def test_a_shipped_config_needs_a_directory_and_no_signature(
    model: dict[str, Any], path: str
) -> None:
    assert path in errors(isvc(**model))


def test_a_shipped_config_excludes_tiers() -> None:
    obj = isvc(config="shipped")
    del obj["spec"]["model"]["storageUri"]
    obj["spec"]["precision"] = {"tiers": [{"name": "fp32", "storageUri": "s3://bucket/m/"}]}
    assert "spec.model.config" in errors(obj)


def test_onnxruntime_on_gpus_runs_the_cuda_image_and_requires_cuda() -> None:
    for resources in ({"gpus": 1}, {"migProfile": "1g.10gb"}):
        obj = isvc("onnxruntime")
        obj["spec"]["resources"] = resources
        [server] = pod_spec(obj)["containers"]
        assert server["image"] == "ort:test-cuda"
        assert server["args"][-len(ORT_GPU_ARGS) :] == list(ORT_GPU_ARGS)
    [server] = pod_spec(isvc("onnxruntime"))["containers"]
    assert server["image"] == "ort:test"
    assert not set(ORT_GPU_ARGS) & set(server["args"])
    obj = isvc("onnxruntime")
    obj["spec"].update(resources={"gpus": 1}, image="mine:1")
    [server] = pod_spec(obj)["containers"]
    assert server["image"] == "mine:1"  # spec.image wins; it still must have CUDA
    assert "--require-execution-provider=cuda" in server["args"]


def test_the_cuda_image_defaults_to_the_cpu_image_with_cuda_appended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KINFER_ORT_SERVER_IMAGE", "registry.local/ort:1.2")
    monkeypatch.delenv("KINFER_ORT_SERVER_CUDA_IMAGE", raising=False)
    assert Images().onnxruntime_cuda == "registry.local/ort:1.2-cuda"
    monkeypatch.setenv("KINFER_ORT_SERVER_CUDA_IMAGE", "registry.local/ort-gpu@sha256:ab")
    assert Images().onnxruntime_cuda == "registry.local/ort-gpu@sha256:ab"
