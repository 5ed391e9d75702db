"""Decode an HTTP inference request: every field checked, sizes bounded before any tensor is built.

Pure functions of the body, the binary-extension header and the model, so that they are tested
and fuzzed without a server. The order is what bounds memory:

1. `check_json_size`: count the JSON header's structural characters (`,` `[` `{`, in C) and
   refuse a header that holds more values than the model's inputs can take, before the JSON
   parser builds one Python object per value (a 63 MiB body of empty lists is 21 million lists).
2. Parse the (now bounded) header; check each field's type, the declared datatype and shape
   against the model, and the declared bytes against the limit.
3. Only then build the arrays: binary tensors are views of the body (no copy); JSON data is
   flattened, its element count and element types checked, then converted once.

Every error is a `BadRequest` (400) whose message starts with the field's path
(`inputs[0].shape`, `outputs[1].parameters`, `id`, ...).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from itertools import chain

import numpy as np
import orjson

from kinfer_ort_server.dtypes import PROTOCOL_TO_NUMPY
from kinfer_ort_server.errors import BadRequest, PayloadTooLarge

HEADER_LENGTH = "Inference-Header-Content-Length"
# Triton extensions kinfer-ort-server does not serve (classification, shared memory).
UNSUPPORTED_PARAMETERS = ("classification", "shared_memory_region")
# JSON values a request may hold beyond its tensors' elements: names, shapes, parameters,
# outputs, id.
HEADER_VALUES = 4096
COUNT_SLICE_BYTES = 1 << 20
# Model names: what a directory of the repository may be called, never "." or "..".
_MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,254}")
# Python types a JSON element may have, per numpy kind (no silent conversion: a string or a
# boolean is not a number, a float is not an integer).
_ELEMENT_TYPES = {"b": {bool}, "i": {int}, "u": {int}, "f": {int, float}}


def valid_model_name(name: str) -> bool:
    """A model name the repository could hold: letters, digits, `_.-`, not starting with `.`."""
    return _MODEL_NAME.fullmatch(name) is not None


@dataclass(frozen=True)
class Decoded:
    """A checked request: its arrays, batch rows, the outputs asked for and the id to echo."""

    inputs: dict[str, np.ndarray]
    rows: int
    outputs: list[tuple[str, bool]]  # (name, binary)
    id: str | None


def decode_request(body, header_length: str | None, model, max_request_bytes: int) -> Decoded:
    """Check and decode an infer request's body for `model` (a LoadedModel)."""
    json_part, binary = split_body(body, header_length)
    check_json_size(json_part, json_value_bound(model, max_request_bytes))
    header = parse_header(json_part)
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest(f"id: must be a string, not {_type_name(request_id)}")
    parameters = _parameters(header.get("parameters"), "parameters")
    binary_default = _bool_parameter(parameters, "binary_data_output", False, "parameters")
    inputs, rows = decode_inputs(header.get("inputs"), binary, model, max_request_bytes)
    outputs = requested_outputs(header.get("outputs"), model, binary_default)
    return Decoded(inputs, rows, outputs, request_id)


def split_body(body, header_length: str | None) -> tuple[memoryview, memoryview]:
    """(JSON header, binary tensor data) per the binary extension's header length."""
    view = memoryview(body)
    if header_length is None:
        return view, view[len(view) :]
    if not header_length.isascii() or not header_length.strip().isdigit():
        raise BadRequest(f"{HEADER_LENGTH}={header_length!r} is not an integer")
    length = int(header_length)
    if length > len(view):
        raise BadRequest(f"{HEADER_LENGTH}={length} is outside the body's {len(view)} bytes")
    return view[:length], view[length:]


def json_value_bound(model, max_request_bytes: int) -> int:
    """The most JSON values (counted as `,` `[` `{`) a valid request for `model` holds."""
    rows = max(1, model.max_batch_size)
    total = HEADER_VALUES
    for tensor in model.inputs:
        itemsize = tensor.np_dtype.itemsize if tensor.np_dtype is not None else 1
        if -1 in tensor.dims:
            # A dynamic dimension: bounded by the byte limit alone.
            elements = max_request_bytes // itemsize
            total += 2 * elements
            continue
        shape = [rows, *tensor.dims] if model.max_batch_size > 0 else list(tensor.dims)
        # Elements, plus the lists of the nested form ([[...], [...]]).
        lists = sum(math.prod(shape[:k]) for k in range(len(shape)))
        total += math.prod(shape) + lists
    return total


def check_json_size(json_part: memoryview, bound: int) -> None:
    """Refuse a JSON header with more values than `bound` before parsing it.

    Counted 1 MiB at a time, stopping once over: a hostile body costs one slice, and a
    worker thread counting yields the interpreter to the event loop between slices."""
    raw = json_part.obj if json_part.nbytes == len(json_part.obj) else bytes(json_part)
    if len(raw) <= bound:  # every value takes at least a byte: nothing to count
        return
    values = 0
    for start in range(0, len(raw), COUNT_SLICE_BYTES):
        end = start + COUNT_SLICE_BYTES
        values += raw.count(b",", start, end) + raw.count(b"[", start, end)
        values += raw.count(b"{", start, end)
        if values > bound:
            raise BadRequest(
                f"inputs: the JSON header holds more than {bound} values, more than the "
                "model's inputs can take with the request's other fields; refused before "
                "parsing"
            )


def parse_header(json_part: memoryview) -> dict:
    try:
        header = orjson.loads(json_part)
    except orjson.JSONDecodeError as error:
        raise BadRequest(f"malformed JSON inference header: {error}") from None
    if not isinstance(header, dict):
        raise BadRequest("the inference header must be a JSON object")
    return header


def decode_inputs(
    entries, binary: memoryview, model, max_request_bytes: int
) -> tuple[dict[str, np.ndarray], int]:
    """The input arrays and batch rows; declared shapes and sizes checked before any array."""
    if not isinstance(entries, list) or not entries:
        raise BadRequest("inputs: 'inputs' must be a non-empty list")
    declared = [
        declare_input(entry, index, model, max_request_bytes) for index, entry in enumerate(entries)
    ]
    names = [d.name for d in declared]
    for d in declared:
        if names.index(d.name) != d.index:
            raise BadRequest(f"{d.path}.name: input '{d.name}' appears twice")
    expected = [tensor.name for tensor in model.inputs]
    if sorted(names) != sorted(expected):
        missing = sorted(set(expected) - set(names))
        raise BadRequest(
            f"inputs: model '{model.name}' expects inputs {expected}; missing {missing}"
        )
    total = sum(d.nbytes for d in declared)
    if total > max_request_bytes:
        raise PayloadTooLarge(
            f"inputs: the declared tensors need {total} bytes, over "
            f"--max-request-bytes={max_request_bytes}"
        )
    rows = check_batch(declared, model)
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for d, entry in zip(declared, entries, strict=True):
        if d.binary_size is not None:
            inputs[d.name] = _binary_tensor(d, binary, offset)
            offset += d.binary_size
        else:
            inputs[d.name] = json_tensor(entry.get("data"), d)
    if offset != len(binary):
        raise BadRequest(
            f"{HEADER_LENGTH}: {len(binary)} bytes of binary data follow the header, the "
            f"inputs' binary_data_size add up to {offset}"
        )
    return inputs, rows


@dataclass(frozen=True)
class Declared:
    """An input as the request declares it, checked against the model."""

    index: int
    name: str
    datatype: str
    dtype: np.dtype
    shape: tuple[int, ...]
    count: int
    binary_size: int | None

    @property
    def path(self) -> str:
        return f"inputs[{self.index}]"

    @property
    def nbytes(self) -> int:
        return self.count * self.dtype.itemsize


def declare_input(entry, index: int, model, max_request_bytes: int) -> Declared:
    """Check one `inputs[i]` object's fields against the model, building nothing."""
    path = f"inputs[{index}]"
    if not isinstance(entry, dict):
        raise BadRequest(f"{path}: must be an object with name, datatype, shape")
    name = entry.get("name")
    if not isinstance(name, str):
        raise BadRequest(f"{path}.name: must be a string, not {_type_name(name)}")
    tensor = next((t for t in model.inputs if t.name == name), None)
    if tensor is None:
        raise BadRequest(
            f"{path}.name: model '{model.name}' has no input '{name}'; inputs: "
            f"{[t.name for t in model.inputs]}"
        )
    datatype = entry.get("datatype")
    dtype = PROTOCOL_TO_NUMPY.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise BadRequest(
            f"{path}.datatype: {datatype!r} is not supported; valid: {sorted(PROTOCOL_TO_NUMPY)}"
        )
    if datatype != tensor.datatype:
        raise BadRequest(
            f"{path}.datatype: input '{name}': datatype {datatype} does not match the model's "
            f"{tensor.datatype}"
        )
    shape = _shape(entry.get("shape"), path, name, tensor, model.max_batch_size)
    parameters = _parameters(entry.get("parameters"), f"{path}.parameters")
    _refuse_unsupported(f"{path}.parameters", parameters)
    size = parameters.get("binary_data_size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise BadRequest(
            f"{path}.parameters.binary_data_size: {size!r} is not a non-negative integer"
        )
    count = math.prod(shape)
    if count * dtype.itemsize > max_request_bytes:
        raise BadRequest(
            f"{path}.shape: shape {list(shape)} of {datatype} needs {count * dtype.itemsize} "
            f"bytes, over --max-request-bytes={max_request_bytes}"
        )
    if size is not None and size != count * dtype.itemsize:
        raise BadRequest(
            f"{path}.parameters.binary_data_size: binary_data_size={size} but shape "
            f"{list(shape)} of {datatype} needs {count * dtype.itemsize} bytes"
        )
    if size is None and "data" not in entry:
        raise BadRequest(f"{path}.data: neither 'data' nor parameters.binary_data_size given")
    return Declared(index, name, datatype, dtype, shape, count, size)


def _shape(shape, path: str, name: str, tensor, max_batch_size: int) -> tuple[int, ...]:
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    ):
        raise BadRequest(f"{path}.shape: {shape!r} must be a list of integers")
    if any(d < 0 for d in shape):
        raise BadRequest(f"{path}.shape: shape {shape} has a negative dimension")
    batched = max_batch_size > 0
    item = shape[1:] if batched else shape
    want = [-1, *tensor.dims] if batched else list(tensor.dims)
    if (batched and not shape) or (
        len(item) != len(tensor.dims)
        or any(d not in (-1, s) for d, s in zip(tensor.dims, item, strict=True))
    ):
        raise BadRequest(
            f"{path}.shape: input '{name}': shape {shape} does not match the model's {want}"
        )
    if batched and not 1 <= shape[0] <= max_batch_size:
        raise BadRequest(
            f"{path}.shape: input '{name}': batch size {shape[0]} is outside "
            f"1..{max_batch_size} (max_batch_size of the model)"
        )
    return tuple(shape)


def check_batch(declared: list[Declared], model) -> int:
    """The batch rows shared by every input (1 for an unbatched model)."""
    if model.max_batch_size <= 0:
        return 1
    rows = declared[0].shape[0]
    for d in declared[1:]:
        if d.shape[0] != rows:
            raise BadRequest(
                f"{d.path}.shape: input '{d.name}': batch size {d.shape[0]} differs from the "
                f"other inputs' {rows}"
            )
    return rows


def _binary_tensor(d: Declared, binary: memoryview, offset: int) -> np.ndarray:
    if offset + d.binary_size > len(binary):
        raise BadRequest(
            f"{d.path}.parameters.binary_data_size: binary_data_size={d.binary_size} runs past "
            f"the {len(binary)} bytes of binary data (offset {offset})"
        )
    return np.frombuffer(binary, dtype=d.dtype, count=d.count, offset=offset).reshape(d.shape)


def json_tensor(data, d: Declared) -> np.ndarray:
    """`data` (flat or nested lists) as an array of `d`'s shape; count and types checked first."""
    path = f"{d.path}.data"
    if not isinstance(data, list):
        raise BadRequest(f"{path}: must be a list, not {_type_name(data)}")
    flat = data
    while flat and type(flat[0]) is list:
        if set(map(type, flat)) != {list}:
            raise BadRequest(f"{path}: lists and values are mixed at one nesting level")
        flat = list(chain.from_iterable(flat))
        if len(flat) > d.count:
            break
    if len(flat) != d.count:
        raise BadRequest(
            f"{path}: input '{d.name}': {len(flat)} data elements for shape {list(d.shape)} "
            f"({d.count} elements)"
        )
    types = set(map(type, flat))
    allowed = _ELEMENT_TYPES[d.dtype.kind]
    if not types <= allowed:
        found = sorted(t.__name__ for t in types - allowed)
        raise BadRequest(
            f"{path}: input '{d.name}': data is not {d.datatype}: found {', '.join(found)} "
            f"elements (valid: {', '.join(sorted(t.__name__ for t in allowed))})"
        )
    try:
        array = np.array(flat, dtype=d.dtype)
    except (TypeError, ValueError, OverflowError) as error:
        raise BadRequest(f"{path}: input '{d.name}': data is not {d.datatype}: {error}") from None
    return array.reshape(d.shape)


def requested_outputs(requested, model, binary_default: bool) -> list[tuple[str, bool]]:
    """(name, binary) for each output asked for, or every output of the model."""
    if requested is None or requested == []:
        return [(name, binary_default) for name in model.output_names]
    if not isinstance(requested, list):
        raise BadRequest("outputs: 'outputs' must be a list of {name, parameters}")
    chosen = []
    for index, entry in enumerate(requested):
        path = f"outputs[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise BadRequest(f"{path}: must be an object with a string 'name'")
        model.output_info(entry["name"])
        parameters = _parameters(entry.get("parameters"), f"{path}.parameters")
        _refuse_unsupported(f"{path}.parameters", parameters)
        binary = _bool_parameter(parameters, "binary_data", binary_default, f"{path}.parameters")
        chosen.append((entry["name"], binary))
    return chosen


def _parameters(value, path: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{path}: must be an object, not {_type_name(value)}")
    return value


def _bool_parameter(parameters: dict, key: str, default: bool, path: str) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise BadRequest(f"{path}.{key}: must be true or false, not {_type_name(value)}")
    return value


def _refuse_unsupported(what: str, parameters) -> None:
    # Extensions this server does not implement must fail loudly, not be ignored.
    for key in UNSUPPORTED_PARAMETERS:
        if key in parameters:
            raise BadRequest(f"{what}: parameter '{key}' is not supported by this server")


def _type_name(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )
