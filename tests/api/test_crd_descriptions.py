"""`kubectl explain` answers everything: every node of the CRD's schema has a description,
with its default (explain prints no defaults) and its unit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from kinfer.api import schema
from tests.conftest import REPO

CRD_FILE = REPO / "crds" / "kinfer.dev_inferenceservices.yaml"
# The API server refuses a CRD whose metadata schema says more than its type, and publishes
# ObjectMeta's own description there (kubectl explain shows it: e2e/test_explain.py).
DESCRIBED_BY_THE_API_SERVER = {"metadata"}
# A field named so has a unit, and its description names it.
UNITS = {"Seconds": "seconds", "Microseconds": "microseconds", "Ms": "milliseconds"}


def schema_nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, node) for the root, every property and every array's items object, nested ones
    included: what `kubectl explain` lists as fields. (A map's values are no field: explain
    shows the map's own description.)"""
    yield path or "<root>", node
    for key, sub in (node.get("properties") or {}).items():
        yield from schema_nodes(sub, f"{path}.{key}" if path else key)
    items = node.get("items")
    if isinstance(items, dict) and (items.get("properties") or items.get("type") == "object"):
        yield from schema_nodes(items, f"{path}[]")


def _root(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


CRDS = {
    "crds/ (checked in)": lambda: yaml.safe_load(CRD_FILE.read_text()),
    "kinfer crd (generated)": schema.crd,
}


@pytest.fixture(params=sorted(CRDS))
def crd_root(request: pytest.FixtureRequest) -> dict[str, Any]:
    return _root(CRDS[request.param]())


def test_the_walk_sees_spec_status_items_and_maps(crd_root: dict[str, Any]) -> None:
    paths = {path for path, _ in schema_nodes(crd_root)}
    assert {
        "<root>",
        "spec.scaling.minReplicas",
        "spec.precision.tiers[]",
        "spec.precision.tiers[].storageUri",
        "spec.env[].valueFrom",
        "spec.nodeSelector",
        "status.conditions[].lastTransitionTime",
        "status.energy.joulesPerInference",
        "status.slo.tierSwitches",
    } <= paths
    assert len(paths) > 80


def test_every_node_has_a_description(crd_root: dict[str, Any]) -> None:
    missing = [
        path
        for path, node in schema_nodes(crd_root)
        if path not in DESCRIBED_BY_THE_API_SERVER
        and not " ".join(str(node.get("description") or "").split())
    ]
    assert not missing, f"{len(missing)} schema nodes without a description: {missing}"


def test_metadata_is_only_typed(crd_root: dict[str, Any]) -> None:
    assert crd_root["properties"]["metadata"] == {"type": "object"}


def test_every_default_is_in_the_description(crd_root: dict[str, Any]) -> None:
    absent = []
    for path, node in schema_nodes(crd_root):
        default = node.get("default")
        if default is None or default == {}:
            continue
        text = default if isinstance(default, str) else json.dumps(default)
        if not str(node.get("description", "")).endswith(f"Default: {text}."):
            absent.append(f"{path} (default {default!r})")
    assert not absent, f"defaults that `kubectl explain` would not show: {absent}"


def test_every_field_with_a_unit_names_it(crd_root: dict[str, Any]) -> None:
    unnamed = [
        path
        for path, node in schema_nodes(crd_root)
        for suffix, unit in UNITS.items()
        if path.endswith(suffix) and unit not in node.get("description", "").lower()
    ]
    assert not unnamed, f"fields whose description does not name their unit: {unnamed}"


def test_the_api_reference_shows_each_default_once() -> None:
    """docs/api.md has a default column: the descriptions there carry no "Default:" copy."""
    from kinfer.api.reference import markdown

    for line in markdown().splitlines():
        if line.startswith("| `spec.") and "| `" in line.split("|")[3]:
            assert "Default:" not in line, line
