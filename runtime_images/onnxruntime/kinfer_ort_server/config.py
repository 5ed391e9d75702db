"""Model configuration: config.pbtxt or a load's JSON override, completed from the ONNX model.

Semantics follow Triton's: an override REPLACES the repository's config.pbtxt (no
merge), and like Triton's onnxruntime backend the server fills in what the config
leaves out (inputs, outputs, max_batch_size) from the ONNX model itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from kinfer_ort_server.dtypes import (
    ORT_TO_PROTOCOL,
    PROTOCOL_TO_NUMPY,
    config_to_protocol,
    protocol_to_config,
)
from kinfer_ort_server.errors import LoadFailed

CONFIG_FILENAME = "config.pbtxt"
DEFAULT_MODEL_FILENAME = "model.onnx"
PLATFORM = "onnxruntime_onnx"
BACKEND = "onnxruntime"
TIERS_PARAMETER = "kinfer.tiers"


@dataclass(frozen=True)
class TensorInfo:
    """One input or output as the model config declares it (dims without the batch dim)."""

    name: str
    datatype: str  # protocol name: FP32, INT64, ...
    dims: tuple[int, ...]
    np_dtype: np.dtype | None  # None for BYTES, which this server does not serve

    def metadata_shape(self, max_batch_size: int) -> list[int]:
        return [-1, *self.dims] if max_batch_size > 0 else list(self.dims)


def read_config(model_dir: Path, model_name: str, override_json: str | None) -> mc.ModelConfig:
    """The model's config: the override if given (it replaces config.pbtxt), else config.pbtxt."""
    config = mc.ModelConfig()
    if override_json is not None:
        try:
            json_format.Parse(override_json, config)
        except json_format.ParseError as error:
            raise LoadFailed(
                f"load of '{model_name}': parameters.config is not a valid model config JSON: "
                f"{error}"
            ) from None
    else:
        path = model_dir / CONFIG_FILENAME
        if path.exists():
            try:
                text_format.Parse(path.read_text(), config)
            except text_format.ParseError as error:
                raise LoadFailed(
                    f"load of '{model_name}': {path} is not a valid config.pbtxt: {error}"
                ) from None
    if config.name and config.name != model_name:
        raise LoadFailed(
            f"load of '{model_name}': config name '{config.name}' differs from the model name "
            f"'{model_name}'"
        )
    config.name = model_name
    if config.platform and config.platform != PLATFORM:
        raise LoadFailed(
            f"load of '{model_name}': platform '{config.platform}' is not served here; valid: "
            f"'{PLATFORM}'"
        )
    if config.backend and config.backend != BACKEND:
        raise LoadFailed(
            f"load of '{model_name}': backend '{config.backend}' is not served here; valid: "
            f"'{BACKEND}'"
        )
    config.platform = PLATFORM
    config.backend = BACKEND
    if not config.default_model_filename:
        config.default_model_filename = DEFAULT_MODEL_FILENAME
    if config.max_batch_size < 0:
        raise LoadFailed(
            f"load of '{model_name}': max_batch_size={config.max_batch_size} must be >= 0"
        )
    return config


def available_versions(model_dir: Path, filename: str) -> list[int]:
    """Numeric version directories that hold the model file, ascending."""
    versions = []
    for entry in model_dir.iterdir() if model_dir.is_dir() else ():
        if entry.name.isdigit() and int(entry.name) > 0 and (entry / filename).is_file():
            versions.append(int(entry.name))
    return sorted(versions)


def select_versions(config: mc.ModelConfig, available: list[int]) -> list[int]:
    """The versions the config's version_policy loads (Triton's default: latest 1)."""
    model = config.name
    if not available:
        raise LoadFailed(
            f"load of '{model}': no version directory <k>/{config.default_model_filename} in "
            "the repository"
        )
    policy = config.version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        return list(available)
    if kind == "specific":
        wanted = list(dict.fromkeys(int(v) for v in policy.specific.versions))
        missing = [v for v in wanted if v not in available]
        if missing or not wanted:
            raise LoadFailed(
                f"load of '{model}': version_policy.specific.versions={wanted} not all present; "
                f"available: {available}"
            )
        return sorted(wanted)
    count = policy.latest.num_versions if kind == "latest" else 1
    if count < 1:
        raise LoadFailed(
            f"load of '{model}': version_policy.latest.num_versions={count} must be >= 1"
        )
    return available[-count:]


def complete_config(
    config: mc.ModelConfig, session, default_max_batch_size: int, default_queue_delay_us: int
) -> None:
    """Fill inputs, outputs and batching from the ONNX session (Triton's onnxruntime auto-complete);
    check what the config does declare against the model. Mutates `config`."""
    model = config.name
    onnx_inputs = {i.name: i for i in session.get_inputs()}
    onnx_outputs = {o.name: o for o in session.get_outputs()}
    all_io = [*onnx_inputs.values(), *onnx_outputs.values()]
    supports_batching = all(io.shape and not isinstance(io.shape[0], int) for io in all_io)
    if (
        config.max_batch_size == 0
        and supports_batching
        and not config.input
        and default_max_batch_size > 0
    ):
        config.max_batch_size = default_max_batch_size
        if not config.HasField("dynamic_batching"):
            config.dynamic_batching.max_queue_delay_microseconds = default_queue_delay_us
    if config.max_batch_size > 0 and not supports_batching:
        raise LoadFailed(
            f"load of '{model}': max_batch_size={config.max_batch_size} but the ONNX model's "
            "first dimension "
            "is not dynamic on every input and output; set max_batch_size: 0"
        )
    batch_dims = 1 if config.max_batch_size > 0 else 0
    for kind, declared, onnx_io in (
        ("input", config.input, onnx_inputs),
        ("output", config.output, onnx_outputs),
    ):
        if not declared:
            for io in onnx_io.values():
                entry = declared.add()
                entry.name = io.name
                entry.data_type = mc.DataType.Value(
                    protocol_to_config(ORT_TO_PROTOCOL.get(io.type, "BYTES"))
                )
                entry.dims.extend(
                    -1 if not isinstance(d, int) else d for d in io.shape[batch_dims:]
                )
            continue
        for entry in declared:
            io = onnx_io.get(entry.name)
            if io is None:
                raise LoadFailed(
                    f"load of '{model}': {kind} '{entry.name}' is not in the ONNX model; it has "
                    f"{sorted(onnx_io)}"
                )
            want = ORT_TO_PROTOCOL.get(io.type)
            have = config_to_protocol(mc.DataType.Name(entry.data_type))
            if want != have:
                raise LoadFailed(
                    f"load of '{model}': {kind} '{entry.name}' data_type TYPE_{have}, the ONNX "
                    f"model has {io.type}"
                )
            onnx_dims = list(io.shape[batch_dims:])
            if len(onnx_dims) != len(entry.dims) or any(
                isinstance(o, int) and d not in (-1, o)
                for o, d in zip(onnx_dims, entry.dims, strict=True)
            ):
                raise LoadFailed(
                    f"load of '{model}': {kind} '{entry.name}' dims {list(entry.dims)} do not "
                    f"match the ONNX shape {io.shape}"
                )
        if kind == "input":
            missing = sorted(set(onnx_io) - {entry.name for entry in declared})
            if missing:
                raise LoadFailed(
                    f"load of '{model}': inputs {missing} of the ONNX model are missing in the "
                    "config"
                )
    if not config.instance_group:
        config.instance_group.add(count=1, kind=mc.ModelInstanceGroup.KIND_CPU, name=f"{model}_0")


def tensor_infos(entries) -> tuple[TensorInfo, ...]:
    infos = []
    for entry in entries:
        datatype = config_to_protocol(mc.DataType.Name(entry.data_type))
        infos.append(
            TensorInfo(
                entry.name,
                datatype,
                tuple(int(d) for d in entry.dims),
                PROTOCOL_TO_NUMPY.get(datatype),
            )
        )
    return tuple(infos)


def tiers_of(config: mc.ModelConfig) -> tuple[str, ...]:
    """Tier names in version order from the `kinfer.tiers` parameter ("" when absent)."""
    if TIERS_PARAMETER not in config.parameters:
        return ()
    return tuple(
        t.strip() for t in config.parameters[TIERS_PARAMETER].string_value.split(",") if t.strip()
    )


def instance_count(config: mc.ModelConfig) -> int:
    return max(1, sum(max(1, group.count) for group in config.instance_group))


def config_to_json_dict(config: mc.ModelConfig) -> dict:
    """The config as Triton's HTTP API returns it (proto field names)."""
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


def element_count(shape) -> int:
    return math.prod(shape)
