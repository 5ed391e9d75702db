"""Parsing applies the CRD's defaults and exposes what render and the policies need."""

from __future__ import annotations

from typing import Any

from kinfer.api import constants as c
from kinfer.api import schema
from kinfer.api.model import parse
from tests.conftest import load_sample


def _schema_defaults(node: dict[str, Any], path: str = "spec") -> dict[str, Any]:
    found = {}
    for key, sub in (node.get("properties") or {}).items():
        if "default" in sub and sub["default"] != {}:
            found[f"{path}.{key}"] = sub["default"]
        found.update(_schema_defaults(sub, f"{path}.{key}"))
    return found


def test_defaults_of_an_empty_spec_equal_the_crd_defaults(minimal):
    spec = parse(minimal).spec
    parsed = {
        "spec.model.format": spec.model.format,
        "spec.model.config": spec.model.config,
        "spec.precision.dwellSeconds": spec.precision.dwell_s,
        "spec.precision.absorbBursts": spec.precision.absorb_bursts,
        "spec.resources.gpus": spec.resources.gpus,
        "spec.resources.cpu": spec.resources.cpu,
        "spec.resources.memory": spec.resources.memory,
        "spec.replicas": spec.replicas,
        "spec.scaling.minReplicas": spec.scaling.min_replicas,
        "spec.scaling.maxReplicas": spec.scaling.max_replicas,
        "spec.scaling.tolerance": spec.scaling.tolerance,
        "spec.scaling.scaleUpStabilizationSeconds": spec.scaling.scale_up_stabilization_s,
        "spec.scaling.scaleDownStabilizationSeconds": spec.scaling.scale_down_stabilization_s,
        "spec.scaling.scaleUpMaxStep": spec.scaling.scale_up_max_step,
        "spec.scaling.scaleDownMaxStepPercent": spec.scaling.scale_down_max_step_percent,
        "spec.scaling.periodSeconds": spec.scaling.period_s,
        "spec.scaling.metricsWindowSeconds": spec.scaling.metrics_window_s,
        "spec.batching.maxBatchSize": spec.batching.max_batch_size,
        "spec.model.s3.forcePathStyle": spec.model.storage.s3.force_path_style,
        "spec.model.s3.verifyTLS": spec.model.storage.s3.verify_tls,
    }
    assert parsed == _schema_defaults(schema.spec_schema())
    # No schema default (a CEL rule needs to see it unset with maxBatchSize 0): described.
    delay = schema.spec_schema()["properties"]["batching"]["properties"]
    assert (
        f"Default: {spec.batching.max_queue_delay_us}."
        in (delay["maxQueueDelayMicroseconds"]["description"])
    )


def test_model_name_defaults_to_metadata_name(minimal):
    assert parse(minimal).spec.model.name == "mlp"
    minimal["spec"]["model"]["name"] = "resnet"
    assert parse(minimal).spec.model.name == "resnet"


def test_namespace_defaults_when_absent(minimal):
    del minimal["metadata"]["namespace"]
    assert parse(minimal, default_namespace="ns-x").namespace == "ns-x"


def test_tiers_map_to_versions_and_fresh_pods_start_on_the_first():
    isvc = parse(load_sample("tiers-gpu.yaml"))
    assert isvc.spec.model_sources == [
        (1, "fp32", "https://models.example.com/mlp/fp32/model.onnx"),
        (2, "fp16", "https://models.example.com/mlp/fp16/model.onnx"),
        (3, "int8", "https://models.example.com/mlp/int8/model.onnx"),
    ]
    assert isvc.spec.served_tier.name == "fp32"
    pinned = load_sample("tiers-gpu.yaml")
    pinned["spec"]["precision"]["pinned"] = "int8"
    # Fresh pods start on the first tier even when another is pinned (the loop switches them).
    assert parse(pinned).spec.served_tier.name == "fp32"
    assert isvc.spec.precision.floor_index == 2


def test_mig_profile_requests_one_slice():
    resources = parse(load_sample("mig.yaml")).spec.resources
    assert (resources.gpu_resource_name, resources.gpu_count) == ("nvidia.com/mig-1g.10gb", 1)


def test_autoscaling_is_on_only_with_a_target(minimal):
    assert not parse(minimal).spec.scaling.enabled
    minimal["spec"]["scaling"] = {"targetQPSPerReplica": 50}
    assert parse(minimal).spec.scaling.enabled


def test_constants_match_the_issue_contract():
    assert (c.GROUP, c.VERSION, c.PLURAL, c.SHORT_NAMES) == (
        "kinfer.dev",
        "v1alpha1",
        "inferenceservices",
        ["kisvc"],
    )
    assert c.LABEL_ISVC == "kinfer.dev/inferenceservice"


def test_absorb_bursts_is_a_boolean_defaulting_to_false(minimal):
    field = schema.spec_schema()["properties"]["precision"]["properties"]["absorbBursts"]
    assert field["type"] == "boolean"
    assert field["default"] is False
    assert "lower tier" in field["description"]
    assert parse(load_sample("tiers-gpu.yaml")).spec.precision.absorb_bursts is False
    tiers = load_sample("tiers-gpu.yaml")
    tiers["spec"]["precision"]["absorbBursts"] = True
    assert parse(tiers).spec.precision.absorb_bursts is True
