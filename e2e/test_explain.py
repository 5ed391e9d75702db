"""`kubectl explain` against the real API server: every field of the InferenceService, spec
and status, is described, with its default and unit (tests/api/test_crd_descriptions.py
checks the CRD itself)."""

from __future__ import annotations

from typing import Any

from e2e.harness import Cluster, wait_for
from kinfer.api import schema
from tests.api.test_crd_descriptions import schema_nodes

RESOURCE = "inferenceservices"
# The API server publishes its own descriptions of these (ObjectMeta, TypeMeta).
SERVER_DESCRIBED = {"apiVersion", "kind", "metadata"}


def _words(text: str) -> str:
    """Whitespace-normalised: explain wraps descriptions at 76-78 columns."""
    return " ".join(text.split())


def _objects() -> list[tuple[str, dict[str, Any]]]:
    """(explain path, node) of every schema node that has fields: the root, spec, status and
    each nested object or array of objects (explain walks into array items by itself)."""
    root = schema.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    objects = []
    for path, node in schema_nodes(root):
        if node.get("properties"):
            explained = RESOURCE if path == "<root>" else f"{RESOURCE}.{path.removesuffix('[]')}"
            objects.append((explained, node))
    return objects


def _explain(cluster: Cluster, path: str) -> str:
    return cluster.kubectl("explain", path).stdout


def test_kubectl_explain_describes_every_field(cluster: Cluster, crd: None) -> None:
    scaling = schema.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "spec"
    ]["properties"]["scaling"]
    newest = _words(scaling["properties"]["minReplicas"]["description"])
    # The API server publishes a CRD's OpenAPI a moment after it is Established.
    wait_for(
        "the CRD's current descriptions in the published OpenAPI",
        lambda: newest in _words(_explain(cluster, f"{RESOURCE}.spec.scaling")),
        120,
    )

    objects = _objects()
    assert len(objects) >= 12, [path for path, _ in objects]
    undescribed: list[str] = []
    for path, node in objects:
        shown = _explain(cluster, path)
        if "<no description>" in shown or "<empty>" in shown:
            undescribed.append(f"{path}:\n{shown}")
            continue
        words = _words(shown)
        assert _words(node["description"]) in words, (path, shown)
        for key, field in node["properties"].items():
            if path == RESOURCE and key in SERVER_DESCRIBED:
                continue
            assert _words(field["description"]) in words, (f"{path}.{key}", shown)
    assert not undescribed, "kubectl explain shows fields without a description:\n" + "\n".join(
        undescribed
    )


def test_kubectl_explain_shows_defaults_and_units(cluster: Cluster, crd: None) -> None:
    shown = _words(_explain(cluster, f"{RESOURCE}.spec.scaling"))
    for expected in (
        "minReplicas <integer>",
        "a lower spec.replicas runs this many. At most maxReplicas. Default: 1.",
        "maxReplicas <integer>",
        "Default: 10.",
        "Target p95 request latency in milliseconds",
        "Scale-down stabilization window in seconds",
        "Default: 120.",
    ):
        assert expected in shown, (expected, shown)
    field = _words(_explain(cluster, f"{RESOURCE}.spec.resources.memory"))
    assert "in bytes (a quantity: 512Mi, 4Gi). Default: 2Gi." in field, field
