"""The fetch of an http(s) URL with a query (a presigned S3 or GCS URL, an Azure SAS): rclone
gets the query as written and sends one GET (tests/localcluster/test_rclone_query_urls.py runs
the command with the real rclone)."""

from __future__ import annotations

import pytest

from kinfer.api.model import parse
from kinfer.config import Images, RenderOptions
from kinfer.render import render

OPTIONS = RenderOptions(images=Images(storage_initializer="rclone:test"))
SIGNED = (
    "https://bucket.s3.amazonaws.com/mlp/model.onnx?X-Amz-Signature=abc%2Fdef&X-Amz-Expires=300"
)


def fetches(**spec):
    obj = {
        "apiVersion": "kinfer.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "mlp", "namespace": "default"},
        "spec": {"runtime": "onnxruntime", **spec},
    }
    [deployment] = [o for o in render(parse(obj), OPTIONS) if o["kind"] == "Deployment"]
    return deployment["spec"]["template"]["spec"]["initContainers"]


def test_a_url_with_a_query_is_fetched_as_written_with_one_get():
    [fetch] = fetches(model={"storageUri": SIGNED})
    assert fetch["args"] == [
        "copyto",
        ":http:mlp/model.onnx?X-Amz-Signature=abc%2Fdef&X-Amz-Expires=300",
        "/mnt/models/mlp/1/model.onnx",
        "--http-url=https://bucket.s3.amazonaws.com",
        "--http-no-escape",
        "--http-no-head",
        "--retries=5",
        "--stats-one-line",
        "-v",
    ]


@pytest.mark.parametrize(
    "uri",
    [
        "https://models.example.com/mlp/model.onnx",
        "http://127.0.0.1:8080/mlp/",
        "s3://bucket/mlp/model.onnx",
        "gs://bucket/mlp/",
        "pvc://store/mlp/v1",
    ],
)
def test_other_uris_keep_rclone_s_escaping_and_head(uri):
    [fetch] = fetches(model={"storageUri": uri})
    assert "--http-no-escape" not in fetch["args"]
    assert "--http-no-head" not in fetch["args"]


def test_each_tier_gets_the_flags_its_own_uri_needs():
    tiers = [
        {"name": "fp32", "storageUri": SIGNED},
        {"name": "int8", "storageUri": "https://models.example.com/mlp/int8/model.onnx"},
    ]
    fp32, int8 = fetches(model={}, precision={"tiers": tiers})
    assert {"--http-no-escape", "--http-no-head"} <= set(fp32["args"])
    assert not {"--http-no-escape", "--http-no-head"} & set(int8["args"])
