"""A child the API server refused: the spec field named, the API server's words kept."""

from __future__ import annotations

import json

import pytest

from kinfer.controller.rejection import (
    refused,
    rejection_message,
    rejections,
    spec_field_for,
)
from kinfer.controller.status import spec_not_applied, spec_rejected

DEPLOYMENT = {"kind": "Deployment", "metadata": {"name": "mlp", "namespace": "ns"}}


def _status(*causes: tuple[str, str]) -> str:
    # The shape of the API server's 422 Status body.
    return json.dumps(
        {
            "kind": "Status",
            "status": "Failure",
            "reason": "Invalid",
            "code": 422,
            "message": 'Deployment.apps "mlp" is invalid: ...',
            "details": {
                "name": "mlp",
                "kind": "Deployment",
                "causes": [
                    {"reason": "FieldValueInvalid", "field": field, "message": message}
                    for field, message in causes
                ],
            },
        }
    )


@pytest.mark.parametrize(
    ("child_field", "spec_field"),
    [
        ("spec.template.spec.containers[0].resources.limits[memory]", "spec.resources.memory"),
        ("spec.template.spec.containers[0].resources.requests[cpu]", "spec.resources.cpu"),
        ("spec.template.spec.containers[0].env[2].valueFrom", "spec.env"),
        ("spec.template.spec.containers[0].image", "spec.image"),
        ("spec.template.spec.initContainers[1].name", "spec.precision.tiers"),
        ("spec.template.spec.tolerations[3].operator", "spec.tolerations"),
        ("spec.template.spec.nodeSelector", "spec.nodeSelector"),
        ("spec.template.spec.serviceAccountName", "spec.serviceAccountName"),
        (
            "spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution",
            "spec.affinity",
        ),
        (
            "spec.template.spec.topologySpreadConstraints[0].maxSkew",
            "spec.topologySpreadConstraints",
        ),
        ("spec.template.spec.imagePullSecrets[0].name", "spec.imagePullSecrets"),
        ("spec.template.spec.priorityClassName", "spec.priorityClassName"),
        ("spec.template.spec.volumes[0].name", "spec"),
        ("metadata.labels", "spec"),
    ],
)
def test_child_fields_map_to_the_spec_field_they_come_from(child_field, spec_field):
    assert spec_field_for("Deployment", child_field) == spec_field


def test_a_service_field_is_not_mistaken_for_a_pod_field():
    assert spec_field_for("Service", "spec.template.spec.nodeSelector") == "spec"


def test_every_cause_is_kept_with_both_paths():
    found = rejections(
        DEPLOYMENT,
        _status(
            (
                "spec.template.spec.containers[0].resources.limits[memory]",
                'Invalid value: "-2Gi": must be greater than or equal to 0',
            ),
            ("spec.template.spec.containers[0].env[0].valueFrom.fieldRef.fieldPath", "Unsupported"),
        ),
    )
    assert [(r.spec_field, r.message) for r in found] == [
        ("spec.resources.memory", 'Invalid value: "-2Gi": must be greater than or equal to 0'),
        ("spec.env", "Unsupported"),
    ]
    text = rejection_message(DEPLOYMENT, found)
    assert text.startswith("the API server rejected Deployment mlp rendered from it: ")
    assert "spec.resources.memory: Invalid value" in text
    assert "(spec.template.spec.containers[0].resources.limits[memory])" in text


@pytest.mark.parametrize("body", [None, "", "not json", "[1]", json.dumps({"message": "bad"})])
def test_a_body_without_causes_still_says_something(body):
    [found] = rejections(DEPLOYMENT, body)
    assert found.spec_field == "spec"
    assert found.message == ("bad" if body and "bad" in body else "invalid")


def _isvc(generation, observed, spec_valid=None):
    conditions = []
    if spec_valid is not None:
        status, cond_generation = spec_valid
        conditions.append(
            {"type": "SpecValid", "status": status, "observedGeneration": cond_generation}
        )
    status = {"conditions": conditions}
    if observed is not None:
        status["observedGeneration"] = observed
    return {"metadata": {"generation": generation}, "status": status}


@pytest.mark.parametrize(
    ("isvc", "not_applied", "rejected"),
    [
        (_isvc(3, 3, ("True", 3)), False, False),
        (_isvc(4, 3, ("True", 3)), True, False),  # edited, not reconciled yet
        (_isvc(1, None), True, False),  # never reconciled
        (_isvc(4, 4, ("False", 4)), True, True),  # this generation refused
        (_isvc(5, 4, ("False", 4)), True, False),  # refused, then edited: try the edit
    ],
)
def test_status_is_only_refreshed_for_an_applied_generation(isvc, not_applied, rejected):
    assert spec_not_applied(isvc) is not_applied
    assert spec_rejected(isvc) is rejected


# Server-side apply's answer to a field the Deployment's schema does not declare (found by
# e2e/test_spec_fuzz.py: an unknown key under spec.affinity, which the CRD preserves).
UNDECLARED = json.dumps(
    {
        "kind": "Status",
        "status": "Failure",
        "message": "failed to create typed patch object (ns/mlp; apps/v1, Kind=Deployment): "
        ".spec.template.spec.affinity.zone: field not declared in schema",
        "code": 500,
    }
)


DUPLICATE_KEYS = json.dumps(
    {
        "kind": "Status",
        "status": "Failure",
        "message": "failed to create typed patch object (ns/mlp; apps/v1, Kind=Deployment): "
        "errors:\n  .spec.template.spec.topologySpreadConstraints: duplicate entries for key "
        '[topologyKey="zone",whenUnsatisfiable="DoNotSchedule"]',
        "code": 500,
    }
)


@pytest.mark.parametrize(
    ("body", "spec_field", "child_field"),
    [
        (UNDECLARED, "spec.affinity", "spec.template.spec.affinity.zone"),
        (
            DUPLICATE_KEYS,
            "spec.topologySpreadConstraints",
            "spec.template.spec.topologySpreadConstraints",
        ),
    ],
)
def test_a_server_side_apply_500_is_a_refusal_naming_the_field(
    body: str, spec_field: str, child_field: str
) -> None:
    assert refused(500, body)
    assert refused(500, body.encode())
    found = rejections(DEPLOYMENT, body)
    assert [(r.spec_field, r.child_field) for r in found] == [(spec_field, child_field)]


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (422, "{}", True),
        (400, None, True),
        (500, '{"message": "etcdserver: request timed out"}', False),
        (503, UNDECLARED, False),
        (409, "{}", False),
    ],
)
def test_only_an_invalid_object_is_a_refusal(status: int, body: str | None, expected: bool) -> None:
    assert refused(status, body) is expected
