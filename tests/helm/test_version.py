"""One version number: pyproject.toml's `version` is the chart's version and appVersion, the
kustomize image tags, the operator's data-plane image defaults, and what the image builds tag."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from kinfer.config import Images
from kinfer_dev import chart

VERSION = chart.project_version()


def test_the_chart_is_kinfers_version() -> None:
    meta = yaml.safe_load((chart.CHART / "Chart.yaml").read_text())
    assert (meta["version"], meta["appVersion"]) == (VERSION, VERSION)


def test_the_kustomize_images_are_kinfers_version() -> None:
    kustomization = yaml.safe_load(
        (chart.MANIFESTS / "operator" / "kustomization.yaml").read_text()
    )
    assert [image["newTag"] for image in kustomization["images"]] == [VERSION]
    deployment = yaml.safe_load((chart.MANIFESTS / "operator" / "deployment.yaml").read_text())
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    images = [e["value"] for e in container["env"] if e["name"].endswith("_IMAGE")]
    assert images and all(image.endswith(f":{VERSION}") for image in images)


def test_the_operators_default_images_are_kinfers_version(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KINFER_ORT_SERVER_IMAGE", "KINFER_STORAGE_INITIALIZER_IMAGE"):
        monkeypatch.delenv(name, raising=False)
    images = Images()
    assert images.onnxruntime.endswith(f":{VERSION}")
    assert images.storage_initializer.endswith(f":{VERSION}")


@pytest.mark.parametrize("script", ["runtime_images/build.sh", "e2e/kind/cluster.sh"])
def test_the_image_builds_tag_kinfers_version(script: str) -> None:
    """The scripts read pyproject.toml's version (the same sed line), never a literal."""
    text = (chart.REPO / script).read_text()
    [line] = re.findall(r"^VERSION=.*$", text, re.MULTILINE)
    assert "pyproject.toml" in line
    command = line.split("=", 1)[1].removeprefix("${VERSION:-")
    command = command.removeprefix("$(").removesuffix(")}").removesuffix(")")
    out = subprocess.run(["bash", "-c", command], cwd=chart.REPO, capture_output=True, text=True)
    assert out.stdout.strip() == VERSION, (command, out.stderr)


def test_every_image_the_default_render_names_is_kinfers_version(tmp_path: Path) -> None:
    [deployment] = [
        o for o in chart.render(tmp_path, include_crds=False) if o["kind"] == "Deployment"
    ]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    images = [container["image"]] + [
        e["value"] for e in container["env"] if e["name"].endswith("_IMAGE")
    ]
    assert len(images) == 3
    assert all(
        re.fullmatch(rf"ghcr\.io/kinfer-dev/kinfer-[a-z-]+:{re.escape(VERSION)}", i) for i in images
    )
