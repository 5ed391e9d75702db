"""Test models built at run time with `onnx`: one small MLP in fp32, fp16 and int8 tiers.

All tiers share one signature (FP32 `input` [batch, in] -> FP32 `output` [batch, out]):
the fp16 tier casts inside the graph and the int8 tier is onnxruntime's dynamic
quantization, so a client never notices a tier switch. Weights come from a seed,
so every build of the same arguments is the same model.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INPUT_NAME = "input"
OUTPUT_NAME = "output"
TIER_NAMES = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class MLPShape:
    """Layer widths of the test MLP; `hidden` holds one width per hidden layer."""

    in_features: int = 64
    hidden: tuple[int, ...] = (256, 256)
    out_features: int = 16


def _weights(shape: MLPShape, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    widths = [shape.in_features, *shape.hidden, shape.out_features]
    layers = []
    for fan_in, fan_out in itertools.pairwise(widths):
        # He-scaled weights keep activations O(1), so fp16 neither overflows nor underflows.
        weight = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(fan_in, fan_out)).astype(np.float32)
        bias = rng.normal(0.0, 0.1, size=(fan_out,)).astype(np.float32)
        layers.append((weight, bias))
    return layers


def build_mlp(shape: MLPShape = MLPShape(), seed: int = 0, dtype: str = "fp32"):
    """The MLP as an `onnx.ModelProto` computing in `dtype` ("fp32" or "fp16") with FP32 I/O."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if dtype not in ("fp32", "fp16"):
        raise ValueError(f"dtype={dtype!r} is not supported; valid: 'fp32', 'fp16'")
    np_dtype = np.float16 if dtype == "fp16" else np.float32
    nodes = []
    initializers = []
    current = INPUT_NAME
    if dtype == "fp16":
        nodes.append(helper.make_node("Cast", [current], ["x_fp16"], to=TensorProto.FLOAT16))
        current = "x_fp16"
    layers = _weights(shape, seed)
    for index, (weight, bias) in enumerate(layers):
        w_name, b_name = f"w{index}", f"b{index}"
        initializers.append(numpy_helper.from_array(weight.astype(np_dtype), w_name))
        initializers.append(numpy_helper.from_array(bias.astype(np_dtype), b_name))
        matmul_out, add_out = f"mm{index}", f"add{index}"
        nodes.append(helper.make_node("MatMul", [current, w_name], [matmul_out]))
        nodes.append(helper.make_node("Add", [matmul_out, b_name], [add_out]))
        current = add_out
        if index < len(layers) - 1:
            relu_out = f"relu{index}"
            nodes.append(helper.make_node("Relu", [current], [relu_out]))
            current = relu_out
    if dtype == "fp16":
        nodes.append(helper.make_node("Cast", [current], [OUTPUT_NAME], to=TensorProto.FLOAT))
    else:
        nodes.append(helper.make_node("Identity", [current], [OUTPUT_NAME]))
    graph = helper.make_graph(
        nodes,
        f"kinfer_mlp_{dtype}",
        [
            helper.make_tensor_value_info(
                INPUT_NAME, TensorProto.FLOAT, ["batch", shape.in_features]
            )
        ],
        [
            helper.make_tensor_value_info(
                OUTPUT_NAME, TensorProto.FLOAT, ["batch", shape.out_features]
            )
        ],
        initializers,
    )
    # Opset 17 / IR 8 load on every onnxruntime this project supports (>= 1.18).
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def build_tier_models(
    out_dir: str | Path,
    shape: MLPShape = MLPShape(),
    seed: int = 0,
    tiers: tuple[str, ...] = TIER_NAMES,
) -> dict[str, Path]:
    """Write `<out_dir>/<tier>.onnx` for each tier (fp32, fp16, int8): the paths by tier."""
    import onnx

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    unknown = [tier for tier in tiers if tier not in TIER_NAMES]
    if unknown:
        raise ValueError(f"tiers={unknown!r} are not buildable; valid: {list(TIER_NAMES)}")
    paths: dict[str, Path] = {}
    fp32_path = out_dir / "fp32.onnx"
    onnx.save(build_mlp(shape, seed, "fp32"), fp32_path)
    for tier in tiers:
        path = out_dir / f"{tier}.onnx"
        if tier == "fp16":
            onnx.save(build_mlp(shape, seed, "fp16"), path)
        elif tier == "int8":
            _quantize_int8(fp32_path, path)
        paths[tier] = path
    if "fp32" not in tiers:
        fp32_path.unlink()
    return paths


def _quantize_int8(fp32_path: Path, int8_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Dynamic quantization: int8 weights, activations quantized per batch at run
    # time, so the int8 tier keeps the FP32 signature and needs no calibration data.
    # Its "consider pre-processing" hint goes to the root logger: noise for a 3-layer MLP.
    root = logging.getLogger()
    previous_level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(previous_level)


def sample_input(batch: int = 1, shape: MLPShape = MLPShape(), seed: int = 1) -> np.ndarray:
    """A deterministic FP32 input batch for the MLP."""
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 1.0, size=(batch, shape.in_features)).astype(np.float32)


def binary_request(batch: int, shape: MLPShape = MLPShape()) -> tuple[bytes, dict[str, str]]:
    """One Open Inference Protocol request for the MLP with binary tensors (cheap to send at a
    high rate): its body and headers."""
    import tritonclient.http as httpclient

    tensor = httpclient.InferInput(INPUT_NAME, [batch, shape.in_features], "FP32")
    tensor.set_data_from_numpy(sample_input(batch, shape), binary_data=True)
    output = httpclient.InferRequestedOutput(OUTPUT_NAME, binary_data=True)
    body, header_length = httpclient.InferenceServerClient.generate_request_body(
        [tensor], outputs=[output]
    )
    headers = {"Content-Type": "application/octet-stream"}
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = str(header_length)
    return body, headers


def run_reference(model_path: str | Path, batch: np.ndarray) -> np.ndarray:
    """The model's output from onnxruntime in-process: what every server must return."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]


# The ONNX Model Zoo's MNIST-12 signature (manifests/samples/mnist-public.yaml): a stand-in
# with the same names, types and fixed shapes serves where the public file cannot be reached.
MNIST_INPUT = ("Input3", (1, 1, 28, 28))
MNIST_OUTPUT = ("Plus214_Output_0", (1, 10))


def build_mnist_standin(path: str | Path, seed: int = 0) -> Path:
    """A linear classifier with MNIST-12's exact signature (FP32 Input3 [1,1,28,28] ->
    FP32 Plus214_Output_0 [1,10], no batch dimension): a stand-in, not a trained model."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    (input_name, input_shape), (output_name, output_shape) = MNIST_INPUT, MNIST_OUTPUT
    rng = np.random.default_rng(seed)
    weight = rng.normal(0.0, 0.05, size=(784, output_shape[1])).astype(np.float32)
    bias = rng.normal(0.0, 0.1, size=(output_shape[1],)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", [input_name], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w"], ["scores"]),
            helper.make_node("Add", ["scores", "b"], [output_name]),
        ],
        "mnist_standin",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, list(output_shape))],
        initializer=[numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 7  # readable by every onnxruntime the servers run
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def mnist_input(seed: int = 1) -> np.ndarray:
    """A deterministic MNIST-shaped FP32 image in [0, 1]."""
    return np.random.default_rng(seed).random(MNIST_INPUT[1], dtype=np.float32)


def run_reference_io(
    model_path: str | Path, input_name: str, output_name: str, batch: np.ndarray
) -> np.ndarray:
    """`run_reference` for a model with other tensor names."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return session.run([output_name], {input_name: batch})[0]
