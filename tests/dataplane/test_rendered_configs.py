"""The config.pbtxt kinfer renders from spec.model.inputs/outputs and maxBatchSize 0, loaded
by the servers themselves: the local Triton (its own config parser; Python backend) and
kinfer-ort-server (which also checks the signature against the ONNX model)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from kinfer.api.model import parse
from kinfer.render.deployment import server_args
from kinfer.render.model_config import model_config, to_pbtxt
from kinfer_dev.runtime import local_triton, testmodels
from kinfer_dev.runtime.local_triton import start_local_triton, to_python_backend
from kinfer_dev.runtime.ort_server import start_ort_server

SAMPLE = Path(__file__).resolve().parents[2] / "manifests" / "samples" / "mnist-public.yaml"


def _mnist_repository(root: Path, obj: dict[str, Any]) -> Path:
    isvc = parse(obj)
    model_dir = root / isvc.spec.model.name
    testmodels.build_mnist_standin(model_dir / "1" / "model.onnx")
    (model_dir / "config.pbtxt").write_text(to_pbtxt(model_config(isvc)))
    return root


def _metadata(http_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{http_url}/v2/models/mnist", timeout=30) as response:
        return dict(json.loads(response.read()))


def _infer(http_url: str) -> np.ndarray:
    image = testmodels.mnist_input()
    body = {
        "inputs": [
            {
                "name": "Input3",
                "shape": list(image.shape),
                "datatype": "FP32",
                "data": image.flatten().tolist(),
            }
        ]
    }
    request = urllib.request.Request(
        f"{http_url}/v2/models/mnist/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        [output] = json.loads(response.read())["outputs"]
    assert output["name"] == "Plus214_Output_0"
    return np.array(output["data"], dtype=np.float32).reshape(output["shape"])


def _expected(root: Path) -> np.ndarray:
    return testmodels.run_reference_io(
        root / "mnist" / "1" / "model.onnx",
        "Input3",
        "Plus214_Output_0",
        testmodels.mnist_input(),
    )


def _url(handle: Any) -> str:
    url = handle.http_url
    return url if url.startswith("http") else f"http://{url}"


def test_kinfer_ort_server_serves_full_shapes_without_a_batch_dimension(tmp_path: Path) -> None:
    obj = yaml.safe_load(SAMPLE.read_text())
    root = _mnist_repository(tmp_path / "repo", obj)
    # The flags the Deployment gives the server, less those the test harness sets itself.
    flags = [a for a in server_args(parse(obj)) if a.startswith("--default-max-batch-size")]
    assert flags == ["--default-max-batch-size=0"]
    handle = start_ort_server(
        root, load_models=["mnist"], work_dir=tmp_path / "ort", extra_args=flags
    )
    try:
        metadata = _metadata(_url(handle))
        assert [(t["name"], t["shape"]) for t in metadata["inputs"]] == [("Input3", [1, 1, 28, 28])]
        np.testing.assert_allclose(_infer(_url(handle)), _expected(root), atol=1e-5)
    finally:
        handle.stop()


def test_kinfer_ort_server_refuses_a_signature_unlike_the_model(tmp_path: Path) -> None:
    obj = yaml.safe_load(SAMPLE.read_text())
    obj["spec"]["model"]["inputs"][0]["shape"] = [1, 28, 28]
    root = _mnist_repository(tmp_path / "repo", obj)
    # The load fails: the server exits, or stays unready; either way the log says why.
    with pytest.raises((RuntimeError, TimeoutError)) as error:
        start_ort_server(root, load_models=["mnist"], work_dir=tmp_path / "ort", ready_timeout_s=30)
    assert "dims [1, 28, 28] do not match the ONNX shape" in str(error.value)


@pytest.mark.skipif(not local_triton.available(), reason="the local Triton is not installed")
def test_the_local_triton_loads_the_rendered_signature(tmp_path: Path) -> None:
    obj = yaml.safe_load(SAMPLE.read_text())
    root = _mnist_repository(tmp_path / "repo", obj)
    to_python_backend(root)  # keeps the rendered inputs, outputs and max_batch_size
    obj["spec"]["runtime"] = "triton"
    flags = [a for a in server_args(parse(obj)) if a.startswith("--backend-config")]
    assert flags == ["--backend-config=default-max-batch-size=0"]
    handle = start_local_triton(
        root,
        load_models=["mnist"],
        work_dir=tmp_path / "triton",
        extra_args=flags,
        ready_timeout_s=240,
    )
    try:
        metadata = _metadata(_url(handle))
        assert [(t["name"], t["shape"]) for t in metadata["inputs"]] == [("Input3", [1, 1, 28, 28])]
        assert [(t["name"], t["datatype"]) for t in metadata["outputs"]] == [
            ("Plus214_Output_0", "FP32")
        ]
        np.testing.assert_allclose(_infer(_url(handle)), _expected(root), atol=1e-5)
    finally:
        handle.stop()
