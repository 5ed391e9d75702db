"""The CRD file in crds/ is exactly what the code generates, and has the fixed names."""

from __future__ import annotations

import yaml

from kinfer.api import constants as c
from kinfer.api import schema
from tests.conftest import REPO

CRD_FILE = REPO / "crds" / "kinfer.dev_inferenceservices.yaml"


def test_crd_file_is_generated_from_the_code():
    assert yaml.safe_load(CRD_FILE.read_text()) == schema.crd(), "run `make crds`"


def test_crd_names_subresources_and_columns():
    crd = yaml.safe_load(CRD_FILE.read_text())
    assert crd["metadata"]["name"] == "inferenceservices.kinfer.dev"
    assert crd["spec"]["scope"] == "Namespaced"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "InferenceService",
        "inferenceservices",
        ["kisvc"],
    )
    [version] = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1"
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert "status" in version["subresources"]
    columns = {col["name"]: col["jsonPath"] for col in version["additionalPrinterColumns"]}
    assert columns["Runtime"] == ".spec.runtime"
    assert columns["Tier"] == ".status.activeTier"
    assert columns["Ready"] == ".status.readyReplicas"
    assert columns["Desired"] == ".spec.replicas"
    assert columns["Age"] == ".metadata.creationTimestamp"


def _validations(node, path=()):
    for rule in node.get("x-kubernetes-validations", []):
        yield path, rule
    for key, sub in (node.get("properties") or {}).items():
        yield from _validations(sub, (*path, key))


def test_every_cross_field_rule_is_in_the_crd_with_its_field_path():
    crd = yaml.safe_load(CRD_FILE.read_text())
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    in_crd = {(path, rule["rule"], rule.get("fieldPath")) for path, rule in _validations(root)}
    for rule in schema.CROSS_FIELD_RULES:
        field_path = rule.field if rule.field.startswith(".") else None
        assert (rule.where, rule.cel, field_path) in in_crd
    assert len(in_crd) == len(schema.CROSS_FIELD_RULES)
    spec = schema.spec_schema()
    assert spec["properties"]["precision"]["properties"]["tiers"]["x-kubernetes-list-map-keys"] == [
        "name"
    ]
    assert spec["properties"]["runtime"]["enum"] == list(c.RUNTIMES)


def test_kustomize_copy_of_the_crd_is_identical():
    copy = REPO / "manifests" / "crd" / "kinfer.dev_inferenceservices.yaml"
    assert copy.read_text() == CRD_FILE.read_text(), "run `make crds`"


def test_api_reference_in_docs_is_generated_from_the_schema():
    from kinfer.api.reference import markdown

    assert markdown() in (REPO / "docs" / "api.md").read_text(), "run `make crds`"
