"""Model sources as rendered: the storage Secret on the fetch containers only, the S3 endpoint
and CA bundle, hf://, oci:// and archives (tests/localcluster/test_model_sources_fetch.py runs
these commands with the real rclone against real servers)."""

from __future__ import annotations

from typing import Any

import pytest

from kinfer.api.model import parse
from kinfer.api.validation import InvalidSpecError
from kinfer.config import Images, RenderOptions
from kinfer.render import render
from kinfer.render.storage import CA_BUNDLE_MOUNT, CA_BUNDLE_VOLUME

OPTIONS = RenderOptions(
    images=Images(storage_initializer="rclone:test"), hf_endpoint="http://127.0.0.1:9"
)
TIERS = {"tiers": [{"name": "fp32", "storageUri": "s3://models/fp32/"}, {
    "name": "int8", "storageUri": "s3://models/int8.tar.gz"}]}  # fmt: skip


def isvc(**model: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"runtime": "onnxruntime", "model": model}
    if "storageUri" not in model:
        spec["precision"] = TIERS
    return {
        "apiVersion": "kinfer.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "mlp", "namespace": "default"},
        "spec": spec,
    }


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    [deployment] = [o for o in render(parse(obj), OPTIONS) if o["kind"] == "Deployment"]
    return deployment["spec"]["template"]["spec"]


def test_the_storage_secret_reaches_every_fetch_container_and_never_the_server() -> None:
    spec = pod_spec(isvc(storageSecretName="model-creds"))

    assert [c["name"] for c in spec["initContainers"]] == ["fetch-fp32", "fetch-int8"]
    for fetch in spec["initContainers"]:
        assert fetch["envFrom"] == [{"secretRef": {"name": "model-creds"}}]
        region = next(e for e in fetch["env"] if e["name"] == "RCLONE_S3_REGION")
        assert region["valueFrom"]["secretKeyRef"] == {
            "name": "model-creds",
            "key": "AWS_DEFAULT_REGION",
            "optional": True,
        }
    [server] = spec["containers"]
    assert "envFrom" not in server
    assert "model-creds" not in repr(server)
    assert "model-creds" not in repr(spec["volumes"])


def test_without_a_storage_secret_no_secret_is_referenced() -> None:
    spec = pod_spec(isvc(storageUri="s3://models/mlp/"))
    [fetch] = spec["initContainers"]
    assert "envFrom" not in fetch
    assert "secretKeyRef" not in repr(spec)


def test_an_s3_endpoint_with_its_ca_bundle() -> None:
    spec = pod_spec(
        isvc(
            storageUri="s3://models/mlp/",
            s3={
                "endpoint": "https://minio.storage.svc:9000",
                "region": "eu-west-1",
                "forcePathStyle": False,
                "caBundleConfigMap": "store-ca",
            },
        )
    )
    [fetch] = spec["initContainers"]
    assert fetch["args"][:3] == ["copy", ":s3:models/mlp/", "/mnt/models/mlp/1/"]
    assert {
        "--s3-provider=Other",
        "--s3-env-auth=true",
        "--s3-endpoint=https://minio.storage.svc:9000",
        "--s3-region=eu-west-1",
        "--s3-force-path-style=false",
        f"--ca-cert={CA_BUNDLE_MOUNT}/ca.crt",
    } <= set(fetch["args"])
    assert "--no-check-certificate" not in fetch["args"]
    assert {"name": CA_BUNDLE_VOLUME, "mountPath": CA_BUNDLE_MOUNT, "readOnly": True} in (
        fetch["volumeMounts"]
    )
    volume = next(v for v in spec["volumes"] if v["name"] == CA_BUNDLE_VOLUME)
    assert volume["configMap"] == {
        "name": "store-ca",
        "items": [{"key": "ca.crt", "path": "ca.crt"}],
    }
    [server] = spec["containers"]
    assert CA_BUNDLE_VOLUME not in repr(server["volumeMounts"])


def test_aws_s3_by_default_and_tls_checks_off_only_when_asked() -> None:
    [fetch] = pod_spec(isvc(storageUri="s3://models/mlp/"))["initContainers"]
    assert "--s3-provider=AWS" in fetch["args"]
    assert not [a for a in fetch["args"] if a.startswith(("--s3-endpoint", "--ca-cert"))]
    obj = isvc(storageUri="s3://models/mlp/", s3={"endpoint": "https://s3.lan", "verifyTLS": False})
    [fetch] = pod_spec(obj)["initContainers"]
    assert "--no-check-certificate" in fetch["args"]


@pytest.mark.parametrize(
    ("model", "path", "message"),
    [
        (
            {"storageUri": "gs://models/mlp/", "s3": {"endpoint": "https://s3.lan"}},
            "spec.model.s3",
            "model.s3 applies to s3:// storageUris only",
        ),
        (
            {"storageUri": "s3://models/mlp/", "storageSecretName": "Model_Creds"},
            "spec.model.storageSecretName",
            "must be a Secret's or ConfigMap's name",
        ),
        (
            {"storageUri": "s3://models/mlp/", "s3": {"endpoint": "https://s3.lan/bucket"}},
            "spec.model.s3.endpoint",
            "without a path",
        ),
        (
            {"storageUri": "s3://models/mlp/", "s3": {"caBundleConfigMap": "a_b"}},
            "spec.model.s3.caBundleConfigMap",
            "a DNS-1123 subdomain",
        ),
        ({"storageUri": "hf://org/repo"}, "spec.model.storageUri", "hf://<org>/<repo>"),
        ({"storageUri": "oci://registry.lan/models"}, "spec.model.storageUri", "oci://"),
    ],
)
def test_bad_storage_settings_name_the_field(model: dict, path: str, message: str) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        parse(isvc(**model))
    [error] = [e for e in caught.value.errors if e.path == path]
    assert message in error.message


def test_s3_settings_with_an_s3_tier_are_accepted() -> None:
    spec = pod_spec(isvc(s3={"endpoint": "http://127.0.0.1:9000"}))
    for fetch in spec["initContainers"]:
        assert "--s3-endpoint=http://127.0.0.1:9000" in fetch["args"]


def test_an_archive_is_extracted_into_the_version() -> None:
    spec = pod_spec(isvc(storageSecretName="model-creds"))
    fp32, int8 = spec["initContainers"]
    assert fp32["args"][:3] == ["copy", ":s3:models/fp32/", "/mnt/models/mlp/1/"]
    assert int8["args"][:4] == ["archive", "extract", ":s3:models/int8.tar.gz", "/mnt/models/mlp/2"]


@pytest.mark.parametrize("suffix", [".tgz", ".zip"])
def test_each_archive_suffix_is_extracted(suffix: str) -> None:
    [fetch] = pod_spec(isvc(storageUri=f"https://store.lan/m/model{suffix}"))["initContainers"]
    assert fetch["args"][:3] == ["archive", "extract", f":http:m/model{suffix}"]


def test_hf_names_a_file_at_a_revision_fetched_from_the_endpoint() -> None:
    spec = pod_spec(isvc(storageUri="hf://kinfer-dev/mlp@v1.0/onnx/model.onnx"))
    [fetch] = spec["initContainers"]
    assert fetch["args"][:3] == [
        "copyto",
        ":http:kinfer-dev/mlp/resolve/v1.0/onnx/model.onnx",
        "/mnt/models/mlp/1/model.onnx",
    ]
    assert "--http-url=http://127.0.0.1:9" in fetch["args"]
    assert "RCLONE_HTTP_HEADERS" not in repr(fetch["env"])  # no Secret: no token


def test_hf_revision_defaults_to_main_and_the_token_comes_from_the_secret() -> None:
    obj = isvc(storageUri="hf://kinfer-dev/mlp/model.tar.gz", storageSecretName="hf")
    [fetch] = pod_spec(obj)["initContainers"]
    assert fetch["args"][:3] == [
        "archive",
        "extract",
        ":http:kinfer-dev/mlp/resolve/main/model.tar.gz",
    ]
    token = next(e for e in fetch["env"] if e["name"] == "HF_TOKEN")
    # Required: a missing key stops the pod (CreateContainerConfigError) instead of a 401.
    assert token["valueFrom"]["secretKeyRef"] == {
        "name": "hf",
        "key": "HF_TOKEN",
        "optional": False,
    }
    header = next(e for e in fetch["env"] if e["name"] == "RCLONE_HTTP_HEADERS")
    assert header["value"] == "Authorization,Bearer $(HF_TOKEN)"


def test_gcs_key_file_content_from_the_secret() -> None:
    [fetch] = pod_spec(isvc(storageUri="gs://models/mlp/", storageSecretName="gcs"))[
        "initContainers"
    ]
    creds = next(e for e in fetch["env"] if e["name"] == "RCLONE_GCS_SERVICE_ACCOUNT_CREDENTIALS")
    assert creds["valueFrom"]["secretKeyRef"] == {
        "name": "gcs",
        "key": "GOOGLE_APPLICATION_CREDENTIALS",
        "optional": True,
    }


def test_oci_runs_the_modelcar_image_and_copies_its_models() -> None:
    uri = "oci://registry.lan:5000/models/mlp:1.0"
    [fetch] = pod_spec(isvc(storageUri=uri))["initContainers"]
    assert fetch["image"] == "registry.lan:5000/models/mlp:1.0"
    assert fetch["command"] == [
        "sh",
        "-c",
        'mkdir -p "$0" && cp -R /models/. "$0"/',
        "/mnt/models/mlp/1",
    ]
    assert "args" not in fetch
    assert fetch["securityContext"]["readOnlyRootFilesystem"] is True
