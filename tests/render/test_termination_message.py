"""Every container kinfer renders says why it died: terminationMessagePolicy
FallbackToLogsOnError. A real kubelet leaves terminated.message empty otherwise (the
container's message file is empty), so a failed fetch or server reaches the InferenceService's
condition and Event with no words of its own."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from kinfer.api.model import parse
from kinfer.config import Images, RenderOptions
from kinfer.render import render
from tests.conftest import REPO

OPTIONS = RenderOptions(
    images=Images(triton="triton:test", onnxruntime="ort:test", storage_initializer="rclone:test")
)
# Every list of containers a pod (or pod template) can hold.
CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")

SAMPLES = sorted((REPO / "manifests" / "samples").glob("*.yaml"))
CPU = {
    "apiVersion": "kinfer.dev/v1alpha1",
    "kind": "InferenceService",
    "metadata": {"name": "mlp", "namespace": "default"},
    "spec": {
        "runtime": "onnxruntime",
        "model": {"storageUri": "https://models.example.com/mlp/model.onnx?sig=a%2Fb"},
    },
}


def _with_spec(**spec: Any) -> dict[str, Any]:
    obj = copy.deepcopy(CPU)
    obj["spec"].update(spec)
    return obj


SPECS = {
    **{f"sample {path.name}": yaml.safe_load(path.read_text()) for path in SAMPLES},
    "cpu, http with a query": CPU,
    "triton gpu, s3 directory": _with_spec(
        runtime="triton",
        model={"storageUri": "s3://bucket/models/mlp/"},
        resources={"gpus": 1},
    ),
    "tiers from gs and a pvc": _with_spec(
        model={},
        precision={
            "tiers": [
                {"name": "fp32", "storageUri": "gs://bucket/mlp/fp32/model.onnx"},
                {"name": "fp16", "storageUri": "pvc://models/mlp/fp16"},
                {"name": "int8", "storageUri": "http://store.local/int8/model.onnx"},
            ]
        },
    ),
    "triton on a MIG slice": _with_spec(
        runtime="triton", resources={"migProfile": "1g.10gb", "gpuProduct": "NVIDIA-A100"}
    ),
}


def containers(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, container) for every container anywhere in a rendered object."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in CONTAINER_LISTS and isinstance(value, list):
                for index, container in enumerate(value):
                    yield f"{path}.{key}[{index}]({container.get('name')})", container
            else:
                yield from containers(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from containers(item, f"{path}[{index}]")


def test_the_specs_cover_every_sample_and_both_runtimes() -> None:
    assert len(SAMPLES) >= 4
    runtimes = {obj["spec"]["runtime"] for obj in SPECS.values()}
    assert runtimes == {"triton", "onnxruntime"}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_rendered_container_falls_back_to_its_log(name: str) -> None:
    rendered = render(parse(SPECS[name]), OPTIONS)
    found = [
        (f"{obj['kind']}{path}", container)
        for obj in rendered
        for path, container in containers(obj)
    ]
    # At least the server and one fetch: a walk that finds nothing proves nothing.
    names = {container["name"] for _, container in found}
    assert "server" in names and any(n.startswith("fetch-") for n in names), names
    without = [
        path
        for path, container in found
        if container.get("terminationMessagePolicy") != "FallbackToLogsOnError"
    ]
    assert not without, (
        f"containers without terminationMessagePolicy FallbackToLogsOnError: {without}"
    )
