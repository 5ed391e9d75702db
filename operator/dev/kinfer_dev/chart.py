"""kinfer's Helm chart as the tests see it: the pinned helm, renders, and the kustomize install.

One source, no drift: the chart's default render (release `kinfer`, namespace
kinfer-system) is `kubectl kustomize manifests/` object for object, once Helm's own
labels are taken off (`normalise`); the tests in tests/helm/ hold it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from kinfer_dev.localcluster import build
from kinfer_dev.localcluster.config import cache_dir_default

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "manifests" / "helm" / "kinfer"
MANIFESTS = REPO / "manifests"
RELEASE = "kinfer"
NAMESPACE = "kinfer-system"
# Labels Helm's templates add that kustomize's install does not carry.
HELM_LABELS = (
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
)
BUILD_HINT = ".venv/bin/kinfer cluster build --set helm (Go >= 1.26; a few minutes the first time)"


def helm_binary() -> Path:
    """The pinned helm (go/helm), built once into ~/.cache/kinfer like the clusters' binaries."""
    try:
        return build.ensure_built(cache_dir_default(), sys.stderr, (build.HELM,)) / "helm"
    except build.BuildError as error:
        raise build.BuildError(f"helm could not be built ({BUILD_HINT}): {error}") from error


def kubectl_binary() -> Path:
    """The local cluster's kubectl (kustomize built in), built once if missing."""
    [kubectl] = [b for b in build.BINARIES if b.name == "kubectl"]
    return build.ensure_built(cache_dir_default(), sys.stderr, (kubectl,)) / "kubectl"


def project_version() -> str:
    """kinfer's one version number: pyproject.toml's."""
    return str(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"])


def helm(*args: str, check: bool = True, timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(helm_binary()), *args], capture_output=True, text=True, timeout=timeout_s, check=check
    )


def value_flags(values: dict[str, Any] | None, directory: Path) -> list[str]:
    """`--values FILE` for `values` (written into `directory`), or nothing."""
    if not values:
        return []
    handle, name = tempfile.mkstemp(prefix="values-", suffix=".yaml", dir=directory)
    with os.fdopen(handle, "w") as file:
        yaml.safe_dump(values, file)
    return ["--values", name]


def render(
    directory: Path,
    values: dict[str, Any] | None = None,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    include_crds: bool = True,
) -> list[dict[str, Any]]:
    """`helm template`'s objects (crds/ included unless told not to)."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    args += ["--include-crds"] if include_crds else []
    out = helm(*args, *value_flags(values, directory))
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def kustomize(path: Path = MANIFESTS) -> list[dict[str, Any]]:
    out = subprocess.run(
        [str(kubectl_binary()), "kustomize", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def normalise(objects: Iterable[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Objects by (kind, name), Helm's labels taken off (an emptied labels map too)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for obj in objects:
        labels = obj.get("metadata", {}).get("labels")
        if labels is not None:
            for key in HELM_LABELS:
                labels.pop(key, None)
            if not labels:
                del obj["metadata"]["labels"]
        found[(obj["kind"], obj["metadata"]["name"])] = obj
    return found


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref", "")
    return schema["definitions"][ref.rsplit("/", 1)[-1]] if ref else node


def _leaves(
    schema: dict[str, Any], node: dict[str, Any], value: Any, prefix: str
) -> list[tuple[str, str]]:
    node = _resolve(schema, node)
    if "properties" not in node or not isinstance(value, dict):
        return [(prefix, json.dumps(value, separators=(", ", ": ")))]
    rows: list[tuple[str, str]] = []
    for key, child in node["properties"].items():
        if key in value:
            rows += _leaves(schema, child, value[key], f"{prefix}.{key}" if prefix else key)
    return rows


def values_table() -> list[tuple[str, str]]:
    """Every value and its default (JSON), in values.schema.json's order: what
    docs/install.md's values table must list. A schema node with properties is a group of
    values; any other (resources, affinity, lists) is one value."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    return _leaves(schema, schema, values, "")


INSTALL_DOC = REPO / "docs" / "install.md"


def documented_block(section: str) -> list[str]:
    """The command lines of the first ```bash block under docs/install.md's `## section`."""
    text = INSTALL_DOC.read_text().split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]
