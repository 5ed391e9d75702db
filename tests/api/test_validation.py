"""Validation: every invalid spec is rejected with its field path, valid ones pass."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kinfer.api.model import InvalidSpecError, parse
from kinfer.api.validation import validate_object
from tests.conftest import SAMPLES, load_sample

# (description, change to the minimal spec, expected field path). The e2e suite
# applies the same table to the real API server, so both must agree.
INVALID_SPECS: list[tuple[str, dict[str, Any], str]] = [
    ("unknown runtime", {"runtime": "tensorflow"}, "spec.runtime"),
    ("missing runtime", {"runtime": None}, "spec.runtime"),
    ("negative gpus", {"resources": {"gpus": -1}}, "spec.resources.gpus"),
    (
        "migProfile with gpus > 1",
        {"resources": {"gpus": 2, "migProfile": "1g.10gb"}},
        "spec.resources.migProfile",
    ),
    (
        "bad migProfile",
        {"resources": {"gpus": 1, "migProfile": "big"}},
        "spec.resources.migProfile",
    ),
    (
        "gpuProduct without gpus",
        {"resources": {"gpuProduct": "NVIDIA-L4"}},
        "spec.resources.gpuProduct",
    ),
    (
        "min > max",
        {"scaling": {"minReplicas": 5, "maxReplicas": 2}},
        "spec.scaling.minReplicas",
    ),
    # Found by e2e/test_spec_fuzz.py: the scale subresource refuses it, kinfer render did not.
    ("replicas beyond int32", {"replicas": 2**31}, "spec.replicas"),
    # Also found by the fuzz: the API server reads an integer beyond int64 as a float.
    ("cpu beyond int64", {"resources": {"cpu": 2**63}}, "spec.resources.cpu"),
    ("memory below int64", {"resources": {"memory": -(2**63) - 1}}, "spec.resources.memory"),
    (
        "duplicate imagePullSecrets (a set)",
        {"imagePullSecrets": ["a", "a"]},
        "spec.imagePullSecrets[1]",
    ),
    (
        "two topologySpreadConstraints for one key and policy",
        {
            "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"},
                {"maxSkew": 2, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"},
            ]
        },
        "spec.topologySpreadConstraints[1]",
    ),
    # Also found by the fuzz: patterns are read as RE2 reads them (ASCII \w, no $ before \n).
    (
        "oci tag with a non-ASCII letter",
        {"model": {"storageUri": "oci://registry.example.com/model:tag\u00b5"}},
        "spec.model.storageUri",
    ),
    (
        "storageUri with a trailing newline",
        {"model": {"storageUri": "s3://bucket/model.onnx\n"}},
        "spec.model.storageUri",
    ),
    (
        "onnxruntime with tensorrt",
        {"model": {"format": "tensorrt", "storageUri": "s3://bucket/m"}},
        "spec.model.format",
    ),
    (
        "unknown format",
        {"model": {"format": "pickle", "storageUri": "s3://bucket/m"}},
        "spec.model.format",
    ),
    ("unknown scheme", {"model": {"storageUri": "ftp://host/model.onnx"}}, "spec.model.storageUri"),
    ("no storageUri nor tiers", {"model": {"name": "mlp"}}, "spec.model.storageUri"),
    (
        "duplicate tier names",
        {
            "model": {"name": "mlp"},
            "precision": {
                "tiers": [
                    {"name": "fp32", "storageUri": "s3://bucket/a"},
                    {"name": "fp32", "storageUri": "s3://bucket/b"},
                ]
            },
        },
        "spec.precision.tiers[1]",
    ),
    (
        "pinned tier that does not exist",
        {
            "model": {"name": "mlp"},
            "precision": {
                "tiers": [{"name": "fp32", "storageUri": "s3://bucket/a"}],
                "pinned": "int8",
            },
        },
        "spec.precision.pinned",
    ),
    (
        "minTier that does not exist",
        {
            "model": {"name": "mlp"},
            "precision": {
                "tiers": [{"name": "fp32", "storageUri": "s3://bucket/a"}],
                "minTier": "int4",
            },
        },
        "spec.precision.minTier",
    ),
    (
        "storageUri and tiers together",
        {"precision": {"tiers": [{"name": "fp32", "storageUri": "s3://bucket/a"}]}},
        "spec.model.storageUri",
    ),
    (
        "absorbBursts not a boolean",
        {
            "model": {"name": "mlp"},
            "precision": {
                "tiers": [
                    {"name": "fp32", "storageUri": "s3://bucket/a"},
                    {"name": "int8", "storageUri": "s3://bucket/b"},
                ],
                "absorbBursts": "yes",
            },
        },
        "spec.precision.absorbBursts",
    ),
    ("negative replicas", {"replicas": -1}, "spec.replicas"),
    ("tolerance above 1", {"scaling": {"tolerance": 1.5}}, "spec.scaling.tolerance"),
    (
        "zero latency target",
        {"scaling": {"targetLatencyP95Ms": 0}},
        "spec.scaling.targetLatencyP95Ms",
    ),
    ("bad cpu quantity", {"resources": {"cpu": "lots"}}, "spec.resources.cpu"),
    ("negative memory", {"resources": {"memory": "-2Gi"}}, "spec.resources.memory"),
    ("negative cpu string", {"resources": {"cpu": "-1"}}, "spec.resources.cpu"),
    ("negative cpu integer", {"resources": {"cpu": -1}}, "spec.resources.cpu"),
    (
        "tier name too long for its init container",
        {
            "model": {"name": "mlp"},
            "precision": {"tiers": [{"name": "a" * 58, "storageUri": "s3://bucket/a"}]},
        },
        "spec.precision.tiers[0].name",
    ),
    (
        "toleration with an unknown operator",
        {"tolerations": [{"key": "a", "operator": "Bogus", "effect": "NoSchedule"}]},
        "spec.tolerations[0].operator",
    ),
    (
        "toleration with an unknown effect",
        {"tolerations": [{"key": "a", "operator": "Exists", "effect": "Whenever"}]},
        "spec.tolerations[0].effect",
    ),
    (
        "toleration Exists with a value",
        {"tolerations": [{"key": "a", "operator": "Exists", "value": "x"}]},
        "spec.tolerations",
    ),
    (
        "toleration without key nor Exists",
        {"tolerations": [{"operator": "Equal", "value": "x"}]},
        "spec.tolerations",
    ),
    (
        "env with value and valueFrom",
        {"env": [{"name": "A", "value": "x", "valueFrom": {"secretKeyRef": {"key": "k"}}}]},
        "spec.env",
    ),
    ("nodeSelector value not a label value", {"nodeSelector": {"a": "b c"}}, "spec.nodeSelector.a"),
]

# Valid for the CRD, refused by kinfer's own validation (a condition and an Event): rules
# the API server's CEL budget does not allow.
INVALID_FOR_KINFER_ONLY: list[tuple[str, dict[str, Any], str]] = [
    ("nodeSelector key not a label key", {"nodeSelector": {"bad key!": "x"}}, "spec.nodeSelector"),
    # Found by e2e/test_spec_fuzz.py: the pattern admits it, rendering its fetch raised.
    (
        "storageUri with an unclosed IPv6 bracket",
        {"model": {"storageUri": "http://[host/model.onnx"}},
        "spec.model.storageUri",
    ),
]


def apply_change(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(base)
    for key, value in change.items():
        if value is None:
            obj["spec"].pop(key, None)
        else:
            obj["spec"][key] = value
    return obj


@pytest.mark.parametrize(
    ("change", "path"), [(c, p) for _, c, p in INVALID_SPECS], ids=[d for d, _, _ in INVALID_SPECS]
)
def test_invalid_spec_is_rejected_with_its_field_path(minimal, change, path):
    errors = validate_object(apply_change(minimal, change))
    assert path in [error.path for error in errors], errors
    with pytest.raises(InvalidSpecError) as raised:
        parse(apply_change(minimal, change))
    assert path in str(raised.value)


@pytest.mark.parametrize(
    ("change", "path"),
    [(c, p) for _, c, p in INVALID_FOR_KINFER_ONLY],
    ids=[d for d, _, _ in INVALID_FOR_KINFER_ONLY],
)
def test_kinfer_refuses_what_the_crd_cannot_express(minimal, change, path):
    errors = validate_object(apply_change(minimal, change))
    assert any(error.path.startswith(path) for error in errors), errors


def test_valid_scheduling_extras_pass(minimal):
    obj = apply_change(
        minimal,
        {
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L4", "zone": ""},
            "tolerations": [
                {"operator": "Exists"},
                {"key": "gpu", "operator": "Equal", "value": "x", "effect": "NoExecute"},
            ],
            "env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"x": {}}}],
            "resources": {"cpu": "+500m", "memory": "4Gi"},
        },
    )
    assert validate_object(obj) == []


def test_errors_list_every_invalid_field_at_once(minimal):
    obj = apply_change(
        minimal,
        {
            "scaling": {"minReplicas": 9, "maxReplicas": 1},
            "resources": {"gpus": 3, "migProfile": "1g.10gb"},
        },
    )
    paths = {error.path for error in validate_object(obj)}
    assert {"spec.scaling.minReplicas", "spec.resources.migProfile"} <= paths


def test_error_message_names_value_and_what_is_valid(minimal):
    [error] = validate_object(apply_change(minimal, {"runtime": "tensorflow"}))
    text = str(error)
    assert "'tensorflow'" in text and '"triton"' in text and '"onnxruntime"' in text


def test_name_must_be_a_dns_label(minimal):
    minimal["metadata"]["name"] = "Bad_Name"
    assert [e.path for e in validate_object(minimal)] == ["metadata.name"]


def test_wrong_kind_is_rejected(minimal):
    minimal["kind"] = "Deployment"
    assert validate_object(minimal)[0].path == "kind"


@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.glob("*.yaml")))
def test_every_sample_is_valid(sample):
    assert validate_object(load_sample(sample)) == []


@pytest.mark.parametrize(
    "uri",
    [
        "s3://my-bucket/models/mlp/model.onnx",
        "gs://bucket-1/m",
        "http://127.0.0.1:8080/mlp/model.onnx",
        "https://models.example.com/a/b?sig=1",
        "pvc://model-store/mlp/fp32",
    ],
)
def test_accepted_storage_uris(minimal, uri):
    minimal["spec"]["model"]["storageUri"] = uri
    assert validate_object(minimal) == []
