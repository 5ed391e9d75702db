"""The Triton model configuration (config.pbtxt) of an InferenceService.

The config is built once in Triton's JSON form (what a repository load's
`config` override takes) and printed as protobuf text through tritonclient's
own ModelConfig message, so it is valid for Triton by construction.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from kinfer.api import constants as c
from kinfer.api.model import InferenceService, TensorSpec

# The config parameter that lists tier names in version order (version k = tiers[k-1]).
TIERS_PARAMETER = "kinfer.tiers"


def served_version(isvc: InferenceService) -> int:
    """The model version a fresh pod starts on (see Spec.served_tier): always the first."""
    tier = isvc.spec.served_tier
    return 1 if tier is None else isvc.spec.precision.index_of(tier.name) + 1


def model_config(isvc: InferenceService, version: int | None = None) -> dict[str, Any]:
    """The model config (JSON form) serving `version` (default: `served_version`)."""
    spec = isvc.spec
    config: dict[str, Any] = {
        "name": spec.model.name,
        "backend": c.TRITON_BACKENDS[spec.model.format],
        "max_batch_size": spec.batching.max_batch_size,
        "version_policy": {"specific": {"versions": [version or served_version(isvc)]}},
        "instance_group": [
            {"kind": "KIND_GPU" if spec.resources.gpu_resource_name else "KIND_CPU", "count": 1}
        ],
    }
    platform = c.TRITON_PLATFORMS.get(spec.model.format)
    if platform:
        config["platform"] = platform
    for key, tensors in (("input", spec.model.inputs), ("output", spec.model.outputs)):
        if tensors:
            config[key] = [tensor_config(tensor) for tensor in tensors]
    if spec.batching.max_batch_size > 0:
        config["dynamic_batching"] = {
            "max_queue_delay_microseconds": spec.batching.max_queue_delay_us
        }
    if spec.precision.tiers:
        config["parameters"] = {
            TIERS_PARAMETER: {"string_value": ",".join(spec.precision.tier_names())}
        }
    return config


def tensor_config(tensor: TensorSpec) -> dict[str, Any]:
    """One spec.model.inputs/outputs entry as a config.pbtxt input/output (JSON form)."""
    return {
        "name": tensor.name,
        # Triton's config names BYTES (its protocol's name) TYPE_STRING.
        "data_type": "TYPE_STRING" if tensor.data_type == "BYTES" else f"TYPE_{tensor.data_type}",
        "dims": [str(dim) for dim in tensor.shape],
    }


def to_pbtxt(config: dict[str, Any]) -> str:
    """Protobuf text format of a model config in JSON form (raises on unknown fields)."""
    message = json_format.ParseDict(config, model_config_pb2.ModelConfig())
    return text_format.MessageToString(message)
