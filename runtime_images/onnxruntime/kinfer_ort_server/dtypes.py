"""Tensor data types: the protocol's names, numpy dtypes and Triton's TYPE_ enums."""

from __future__ import annotations

import numpy as np

# Open Inference Protocol datatype -> numpy dtype. BYTES is not served: ONNX string
# tensors are out of this server's scope and are refused with a clear error.
PROTOCOL_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
NUMPY_TO_PROTOCOL: dict[np.dtype, str] = {dtype: name for name, dtype in PROTOCOL_TO_NUMPY.items()}

# ONNX Runtime's type strings (session.get_inputs()[i].type) -> protocol datatype.
ORT_TO_PROTOCOL: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


def protocol_to_config(datatype: str) -> str:
    """'FP32' -> 'TYPE_FP32' (the model config's enum name); BYTES -> TYPE_STRING."""
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def config_to_protocol(type_name: str) -> str:
    """'TYPE_FP32' -> 'FP32'."""
    return "BYTES" if type_name == "TYPE_STRING" else type_name.removeprefix("TYPE_")
