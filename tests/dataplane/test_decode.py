"""The HTTP request decoder (kinfer_ort_server.decode) as the pure function it is: field paths
in its errors, strict datatypes, sizes refused before parsing, and a bounded hypothesis fuzz
(fixed examples, derandomized: the same cases every run)."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import model_config_pb2 as mc

from kinfer_ort_server.config import tensor_infos
from kinfer_ort_server.decode import (
    HEADER_VALUES,
    check_json_size,
    decode_request,
    json_value_bound,
    valid_model_name,
)
from kinfer_ort_server.errors import BadRequest, PayloadTooLarge, ServerError
from kinfer_ort_server.model import LoadedModel

LIMIT = 1 << 20
FUZZ = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _model(name: str, max_batch_size: int, inputs, outputs=(("output", mc.TYPE_FP32, [16]),)):
    config = mc.ModelConfig(name=name, max_batch_size=max_batch_size)
    for tensor_name, data_type, dims in inputs:
        config.input.add(name=tensor_name, data_type=data_type, dims=dims)
    for tensor_name, data_type, dims in outputs:
        config.output.add(name=tensor_name, data_type=data_type, dims=dims)
    return LoadedModel(name, config, tensor_infos(config.input), tensor_infos(config.output), ())


MLP = _model("mlp", 8, [("input", mc.TYPE_FP32, [64])])
# Unbatched, a dynamic dimension, two inputs of strict integer and boolean types.
MIXED = _model("mixed", 0, [("ids", mc.TYPE_INT64, [-1]), ("mask", mc.TYPE_BOOL, [2])])


def _decode(payload, model=MLP, header_length=None, tail=b""):
    body = (json.dumps(payload).encode() if not isinstance(payload, bytes) else payload) + tail
    return decode_request(body, header_length, model, LIMIT)


def _mlp_request(**fields):
    entry = {"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}
    entry.update(fields)
    return {"inputs": [entry]}


def test_a_valid_request_decodes_to_its_array():
    decoded = _decode(_mlp_request(shape=[2, 64], data=[[float(i)] * 64 for i in range(2)]))
    array = decoded.inputs["input"]
    assert array.dtype == np.float32 and array.shape == (2, 64)
    assert array[1, 0] == 1.0 and decoded.rows == 2
    assert decoded.outputs == [("output", False)] and decoded.id is None


def test_binary_tensors_are_views_of_the_body():
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [1, 64],
                    "parameters": {"binary_data_size": 256},
                }
            ]
        }
    ).encode()
    tensor = np.arange(64, dtype=np.float32).tobytes()
    decoded = _decode(header, header_length=str(len(header)), tail=tensor)
    assert decoded.inputs["input"].tobytes() == tensor


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        ({**_mlp_request(), "parameters": [1]}, "parameters"),
        ({**_mlp_request(), "parameters": {"binary_data_output": "yes"}}, "parameters."),
        ({**_mlp_request(), "outputs": [{"name": "output", "parameters": "x"}]}, "outputs[0]."),
        (
            {**_mlp_request(), "outputs": [{"name": "output", "parameters": {"binary_data": 1}}]},
            "outputs[0].parameters.binary_data",
        ),
        ({**_mlp_request(), "id": 7}, "id"),
        (_mlp_request(name=3), "inputs[0].name"),
        (_mlp_request(datatype="FP64"), "inputs[0].datatype"),
        (_mlp_request(shape=[1, -64]), "inputs[0].shape"),
        (_mlp_request(shape=[1, True]), "inputs[0].shape"),
        (_mlp_request(shape=[0, 64]), "inputs[0].shape"),
        (_mlp_request(shape=[1, 64], data=["0.5"] * 64), "inputs[0].data"),
        (_mlp_request(shape=[1, 64], data=[True] * 64), "inputs[0].data"),
        (_mlp_request(shape=[1, 64], data=[None] * 64), "inputs[0].data"),
        (_mlp_request(data={"a": 1}), "inputs[0].data"),
        (_mlp_request(data=[[0.5] * 32, 0.5]), "inputs[0].data"),
        (_mlp_request(parameters=[]), "inputs[0].parameters"),
        (_mlp_request(parameters={"binary_data_size": -1}), "inputs[0].parameters"),
        ({"inputs": [_mlp_request()["inputs"][0]] * 2}, "inputs[1].name"),
        ({"inputs": {}}, "inputs"),
    ],
)
def test_each_malformed_field_is_named(payload, path):
    with pytest.raises(BadRequest) as caught:
        _decode(payload)
    assert caught.value.message.startswith(path), caught.value.message


def test_datatypes_are_strict():
    ok = {
        "inputs": [
            {"name": "ids", "datatype": "INT64", "shape": [3], "data": [1, 2, 3]},
            {"name": "mask", "datatype": "BOOL", "shape": [2], "data": [True, False]},
        ]
    }
    decoded = _decode(ok, model=MIXED)
    assert decoded.inputs["ids"].dtype == np.int64 and decoded.inputs["mask"].tolist() == [1, 0]
    for field, data in (("ids", [1.5, 2, 3]), ("ids", [True, 2, 3]), ("mask", [1, 0])):
        bad = json.loads(json.dumps(ok))
        entry = next(e for e in bad["inputs"] if e["name"] == field)
        entry["data"] = data
        with pytest.raises(BadRequest, match=r"data is not"):
            _decode(bad, model=MIXED)


def test_out_of_range_integers_are_refused():
    payload = {
        "inputs": [
            {"name": "ids", "datatype": "INT64", "shape": [1], "data": [2**70]},
            {"name": "mask", "datatype": "BOOL", "shape": [2], "data": [True, True]},
        ]
    }
    with pytest.raises(BadRequest):
        _decode(payload, model=MIXED)


def test_a_dynamic_dimension_is_bounded_by_the_byte_limit():
    payload = {
        "inputs": [
            {"name": "ids", "datatype": "INT64", "shape": [LIMIT], "data": []},
            {"name": "mask", "datatype": "BOOL", "shape": [2], "data": [True, True]},
        ]
    }
    with pytest.raises(BadRequest, match=r"inputs\[0\]\.shape.*--max-request-bytes"):
        _decode(payload, model=MIXED)
    payload["inputs"][0]["shape"] = [LIMIT // 8]
    payload["inputs"][1]["shape"] = [2]
    with pytest.raises((BadRequest, PayloadTooLarge)):
        _decode(payload, model=MIXED)


def test_a_header_with_more_values_than_the_model_takes_is_refused_unparsed():
    bound = json_value_bound(MLP, LIMIT)
    assert bound == HEADER_VALUES + 8 * 64 + 1 + 8
    check_json_size(memoryview(b"[]," * (bound // 3)), bound)
    with pytest.raises(BadRequest, match="refused before parsing"):
        check_json_size(memoryview(b"[]," * bound), bound)


@pytest.mark.parametrize("name", [".", "..", "", "a/b", ".hidden", "x" * 300, "é", "a b"])
def test_odd_model_names_are_not_valid(name):
    assert not valid_model_name(name)


@pytest.mark.parametrize("name", ["mlp", "mlp_switch", "resnet-50", "v1.2", "A9"])
def test_repository_names_are_valid(name):
    assert valid_model_name(name)


# The fuzz: anything the decoder is given ends in a decoded request or a ServerError.

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=40,
)
_field_values = st.one_of(
    _json_values,
    st.sampled_from(["input", "output", "FP32", "INT64", "BOOL", "FP8"]),
    st.lists(st.integers(min_value=-3, max_value=2**40), max_size=3),
)


@st.composite
def _mutated_requests(draw):
    """A valid request for MLP or MIXED with some fields replaced by arbitrary JSON."""
    model = draw(st.sampled_from([MLP, MIXED]))
    if model is MLP:
        rows = draw(st.integers(1, 8))
        inputs = [
            {"name": "input", "datatype": "FP32", "shape": [rows, 64], "data": [0.25] * (rows * 64)}
        ]
    else:
        n = draw(st.integers(0, 5))
        inputs = [
            {"name": "ids", "datatype": "INT64", "shape": [n], "data": list(range(n))},
            {"name": "mask", "datatype": "BOOL", "shape": [2], "data": [True, False]},
        ]
    request = {"inputs": inputs}
    for _ in range(draw(st.integers(0, 3))):
        target = draw(st.sampled_from(["top", "input", "output"]))
        key = draw(
            st.sampled_from(
                [
                    "name",
                    "datatype",
                    "shape",
                    "data",
                    "parameters",
                    "id",
                    "outputs",
                    "inputs",
                    "binary_data_size",
                ]
            )
        )
        value = draw(_field_values)
        if target == "top":
            request[key] = value
        elif target == "input":
            draw(st.sampled_from(inputs))[key] = value
        else:
            request["outputs"] = [{"name": "output", key: value}]
    return model, json.dumps(request).encode()


@FUZZ
@given(_mutated_requests())
def test_fuzz_mutated_requests_decode_or_get_a_server_error(case):
    model, body = case
    try:
        decoded = decode_request(body, None, model, LIMIT)
    except ServerError:
        return
    for tensor in model.inputs:
        array = decoded.inputs[tensor.name]
        assert array.dtype == tensor.np_dtype
        rows = array.shape[1:] if model.max_batch_size else array.shape
        assert len(rows) == len(tensor.dims)


@FUZZ
@given(
    st.binary(max_size=2048),
    st.one_of(st.none(), st.integers(-5, 3000).map(str), st.text(max_size=5)),
)
def test_fuzz_arbitrary_bytes_decode_or_get_a_server_error(body, header_length):
    with contextlib.suppress(ServerError):
        decode_request(body, header_length, MLP, LIMIT)
