"""`kinfer render` prints what the operator applies, and fails clearly on a bad spec."""

from __future__ import annotations

import subprocess
import sys

import yaml

from kinfer.api.model import parse
from kinfer.render import render
from tests.conftest import SAMPLES, load_sample


def kinfer(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kinfer", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_render_prints_the_operators_objects():
    result = kinfer("render", "-f", str(SAMPLES / "tiers-gpu.yaml"))
    assert result.returncode == 0, result.stderr
    printed = list(yaml.safe_load_all(result.stdout))
    assert printed == render(parse(load_sample("tiers-gpu.yaml")))


def test_render_of_an_invalid_spec_names_the_field_and_exits_non_zero():
    bad = "apiVersion: kinfer.dev/v1alpha1\nkind: InferenceService\nmetadata: {name: x}\n"
    bad += "spec: {runtime: onnxruntime, model: {storageUri: 's3://bucket/m'}, resources: {gpus: -1}}\n"
    result = kinfer("render", "-f", "-", stdin=bad)
    assert result.returncode == 1
    assert "spec.resources.gpus" in result.stderr
    assert result.stdout == ""


def test_render_of_a_missing_file_is_an_error_not_a_traceback():
    result = kinfer("render", "-f", "/nonexistent/isvc.yaml")
    assert result.returncode == 1
    assert "cannot read" in result.stderr and "Traceback" not in result.stderr


def test_crd_command_prints_the_crd():
    result = kinfer("crd")
    assert result.returncode == 0
    assert yaml.safe_load(result.stdout)["metadata"]["name"] == "inferenceservices.kinfer.dev"
