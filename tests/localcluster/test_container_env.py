"""The pod runner builds a fetch container's environment as a kubelet does (envFrom, env in
order, Secrets, $(VAR)), and fails as a kubelet does on a missing Secret or key; its plan of a
rendered pod keeps the fetch's Secret references and refuses what it cannot run here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kinfer.api.model import parse
from kinfer.config import Images, RenderOptions
from kinfer.render import render
from kinfer_dev.localcluster import podplan
from kinfer_dev.localcluster.container_env import ContainerConfigError, container_env, expand

SECRETS = {"creds": {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "key", "HF_TOKEN": "t"}}
STATE = Path("/state")


def read(name: str) -> dict[str, str] | None:
    return SECRETS.get(name)


def test_env_from_then_env_in_order_with_references_expanded() -> None:
    env = container_env(
        "ns",
        [{"secretRef": {"name": "creds"}}],
        [
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "HF_TOKEN"}}},
            {"name": "HEADER", "value": "Authorization,Bearer $(TOKEN) $(UNSET) $$(TOKEN)"},
            {"name": "AWS_ACCESS_KEY_ID", "value": "overridden"},
        ],
        read,
    )
    assert env == {
        "AWS_ACCESS_KEY_ID": "overridden",
        "AWS_SECRET_ACCESS_KEY": "key",
        "HF_TOKEN": "t",
        "TOKEN": "t",
        "HEADER": "Authorization,Bearer t $(UNSET) $(TOKEN)",
    }


def test_optional_references_to_missing_secrets_and_keys_are_left_out() -> None:
    optional = {"optional": True}
    env = container_env(
        "ns",
        [{"secretRef": {"name": "absent", **optional}}],
        [
            {
                "name": "A",
                "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k", **optional}},
            },
            {"name": "B", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k", **optional}}},
        ],
        read,
    )
    assert env == {}


@pytest.mark.parametrize(
    ("env_from", "env", "message"),
    [
        ([{"secretRef": {"name": "absent"}}], [], 'secret "absent" not found'),
        (
            [],
            [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "GONE"}}}],
            "couldn't find key GONE in Secret ns/creds",
        ),
    ],
)
def test_a_missing_secret_or_key_is_the_kubelets_config_error(
    env_from: list[dict[str, Any]], env: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(ContainerConfigError, match=message):
        container_env("ns", env_from, env, read)


def test_expand_leaves_undefined_references() -> None:
    assert expand("$(A)-$(B)-$$", {"A": "1"}) == "1-$(B)-$"


def _pod(model: dict[str, Any]) -> dict[str, Any]:
    obj = {
        "apiVersion": "kinfer.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "mlp", "namespace": "ns"},
        "spec": {"runtime": "onnxruntime", "model": model},
    }
    options = RenderOptions(images=Images(storage_initializer="rclone:test"))
    [deployment] = [o for o in render(parse(obj), options) if o["kind"] == "Deployment"]
    template = deployment["spec"]["template"]
    return {
        "metadata": {**template["metadata"], "namespace": "ns", "name": "mlp-0", "uid": "u" * 16},
        "spec": template["spec"],
        "status": {"podIP": "127.0.0.5"},
    }


def test_an_s3_fetch_from_a_loopback_endpoint_keeps_its_secret_and_ca_bundle() -> None:
    pod = _pod(
        {
            "storageUri": "s3://models/mlp.tar.gz",
            "storageSecretName": "creds",
            "s3": {"endpoint": "https://127.0.0.1:9000", "caBundleConfigMap": "store-ca"},
        }
    )
    plan = podplan.plan_pod(pod, STATE)
    [fetch] = plan.fetches
    assert fetch.argv[1:4] == ("archive", "extract", ":s3:models/mlp.tar.gz")
    assert fetch.env_from == ({"secretRef": {"name": "creds"}},)
    region = next(e for e in fetch.env_entries if e["name"] == "RCLONE_S3_REGION")
    assert region["valueFrom"]["secretKeyRef"]["key"] == "AWS_DEFAULT_REGION"
    # The CA bundle's ConfigMap is written where the fetch's --ca-cert points.
    ca_dir = plan.configmap_volumes["store-ca"]
    assert f"--ca-cert={ca_dir}/ca.crt" in fetch.argv


def test_an_s3_endpoint_off_this_machine_is_refused() -> None:
    pod = _pod({"storageUri": "s3://models/mlp/", "s3": {"endpoint": "https://s3.lan"}})
    with pytest.raises(podplan.UnsupportedPod, match="not a loopback address"):
        podplan.plan_pod(pod, STATE)


def test_an_oci_modelcar_is_refused_with_the_reason() -> None:
    pod = _pod({"storageUri": "oci://registry.lan/models/mlp:1"})
    with pytest.raises(
        podplan.UnsupportedPod, match=r"runs no images.*serve oci:// models on kind"
    ):
        podplan.plan_pod(pod, STATE)
