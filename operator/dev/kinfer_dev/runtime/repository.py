"""Lay out a Triton model repository whose versions are precision tiers.

`<repo>/<model>/config.pbtxt` and `<repo>/<model>/<k>/model.onnx`, version k = tier k
(1 = the first, highest-quality tier). Two flavours of the same layout:
- "onnxruntime": production (Triton's onnxruntime backend, kinfer-ort-server);
- "python": the local Triton from nvidia-pytriton, which has only the Python
  backend, so each version directory also gets a `model.py` running onnxruntime.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kinfer.api.constants import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_QUEUE_DELAY_US

FLAVOURS = ("onnxruntime", "python")
TIERS_PARAMETER = "kinfer.tiers"
MODEL_FILENAME = "model.onnx"

_NUMPY_TO_TRITON = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "float64": "TYPE_FP64",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "uint8": "TYPE_UINT8",
    "bool": "TYPE_BOOL",
}


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: name, numpy dtype name, dims without the batch dim."""

    name: str
    dtype: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class ModelConfigSpec:
    """What config.pbtxt says about a tiered ONNX model."""

    name: str
    tiers: tuple[str, ...] = ()
    version: int = 1
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_queue_delay_us: int = DEFAULT_MAX_QUEUE_DELAY_US
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    instance_count: int = 1
    parameters: Mapping[str, str] = field(default_factory=dict)


def render_config_pbtxt(spec: ModelConfigSpec, flavour: str = "onnxruntime") -> str:
    """The config.pbtxt text for `spec` (pure): a Triton `ModelConfig` in protobuf text form.

    With flavour "onnxruntime" inputs/outputs may be left empty: Triton's onnxruntime
    backend and kinfer-ort-server fill them from the ONNX model. The Python backend
    cannot, so flavour "python" requires them.
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    if flavour not in FLAVOURS:
        raise ValueError(f"flavour={flavour!r} is not valid; valid: {list(FLAVOURS)}")
    if flavour == "python" and not (spec.inputs and spec.outputs):
        raise ValueError(
            "flavour='python' needs inputs and outputs: the Python backend has no auto-complete"
        )
    if spec.tiers and not 1 <= spec.version <= len(spec.tiers):
        raise ValueError(
            f"version={spec.version} is not a tier; valid: 1..{len(spec.tiers)} for tiers "
            f"{list(spec.tiers)}"
        )
    config = mc.ModelConfig(name=spec.name, max_batch_size=spec.max_batch_size)
    if flavour == "python":
        config.backend = "python"
    else:
        config.platform = "onnxruntime_onnx"
        config.backend = "onnxruntime"
    config.version_policy.specific.versions.append(spec.version)
    for tensor in spec.inputs:
        config.input.append(
            mc.ModelInput(name=tensor.name, data_type=triton_type(tensor.dtype), dims=tensor.dims)
        )
    for tensor in spec.outputs:
        config.output.append(
            mc.ModelOutput(name=tensor.name, data_type=triton_type(tensor.dtype), dims=tensor.dims)
        )
    config.instance_group.append(
        mc.ModelInstanceGroup(count=spec.instance_count, kind=mc.ModelInstanceGroup.KIND_CPU)
    )
    if spec.max_batch_size > 0:
        config.dynamic_batching.max_queue_delay_microseconds = spec.max_queue_delay_us
    parameters = dict(spec.parameters)
    if spec.tiers:
        parameters[TIERS_PARAMETER] = ",".join(spec.tiers)
    for key, value in sorted(parameters.items()):
        config.parameters[key].string_value = value
    return text_format.MessageToString(config)


def triton_type(numpy_dtype: str) -> int:
    """The Triton model-config DataType of a numpy dtype name ("float32" -> TYPE_FP32)."""
    from tritonclient.grpc import model_config_pb2 as mc

    try:
        return mc.DataType.Value(_NUMPY_TO_TRITON[numpy_dtype])
    except KeyError:
        raise ValueError(
            f"dtype={numpy_dtype!r} has no Triton type here; valid: {sorted(_NUMPY_TO_TRITON)}"
        ) from None


def onnx_signature(
    model_path: str | Path, batched: bool = True
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Inputs and outputs of an ONNX model (dims without the batch dim if `batched`)."""
    import onnx
    from onnx import helper

    graph = onnx.load(str(model_path), load_external_data=False).graph
    initializer_names = {init.name for init in graph.initializer}

    def specs(values) -> tuple[TensorSpec, ...]:
        out = []
        for value in values:
            if value.name in initializer_names:
                continue
            tensor_type = value.type.tensor_type
            dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
            dims = tuple(
                d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim
            )
            out.append(TensorSpec(value.name, dtype, dims[1:] if batched else dims))
        return tuple(out)

    return specs(graph.input), specs(graph.output)


PYTHON_BACKEND_MODEL = '''\
"""kinfer: Triton Python-backend model running this version's model.onnx with onnxruntime.

Written by kinfer_dev.runtime.repository for the local Triton (nvidia-pytriton ships only
the Python backend); production Triton serves model.onnx with its onnxruntime backend.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("KINFER_ORT_INTRA_OP_THREADS", "1"))
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input_names = [tensor["name"] for tensor in config["input"]]
        self.output_names = [tensor["name"] for tensor in config["output"]]

    def execute(self, requests):
        # Triton's dynamic batcher hands over several requests: run them as one batch.
        feeds = {}
        sizes = []
        for request in requests:
            arrays = [
                pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                for name in self.input_names
            ]
            sizes.append(arrays[0].shape[0])
            for name, array in zip(self.input_names, arrays):
                feeds.setdefault(name, []).append(array)
        batch = {
            name: arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
            for name, arrays in feeds.items()
        }
        results = self.session.run(self.output_names, batch)
        responses = []
        start = 0
        for size in sizes:
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(result[start : start + size]))
                for name, result in zip(self.output_names, results)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses
'''


def write_model_repository(
    repo_dir: str | Path,
    model_name: str,
    tier_models: Mapping[str, str | Path] | Sequence[str | Path],
    flavour: str = "onnxruntime",
    version: int = 1,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    max_queue_delay_us: int = DEFAULT_MAX_QUEUE_DELAY_US,
    instance_count: int = 1,
) -> Path:
    """Copy the tier models into `<repo_dir>/<model_name>/<k>/model.onnx` and write config.pbtxt.

    `tier_models` maps tier name -> ONNX file in tier order (a dict keeps insertion
    order), or is a plain list of files (versions without tier names). `version` is
    the version the config's version_policy loads first. Returns the model directory.
    """
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour={flavour!r} is not valid; valid: {list(FLAVOURS)}")
    if isinstance(tier_models, Mapping):
        tiers = tuple(tier_models)
        files = [Path(p) for p in tier_models.values()]
    else:
        tiers = ()
        files = [Path(p) for p in tier_models]
    if not files:
        raise ValueError("tier_models is empty: a model needs at least one version")
    model_dir = Path(repo_dir) / model_name
    if model_dir.exists():
        shutil.rmtree(model_dir)
    for k, source in enumerate(files, start=1):
        version_dir = model_dir / str(k)
        version_dir.mkdir(parents=True)
        shutil.copyfile(source, version_dir / MODEL_FILENAME)
        if flavour == "python":
            (version_dir / "model.py").write_text(PYTHON_BACKEND_MODEL)
    inputs, outputs = (
        onnx_signature(files[0], batched=max_batch_size > 0) if flavour == "python" else ((), ())
    )
    spec = ModelConfigSpec(
        name=model_name,
        tiers=tiers,
        version=version,
        max_batch_size=max_batch_size,
        max_queue_delay_us=max_queue_delay_us,
        inputs=inputs,
        outputs=outputs,
        instance_count=instance_count,
    )
    (model_dir / "config.pbtxt").write_text(render_config_pbtxt(spec, flavour))
    return model_dir
