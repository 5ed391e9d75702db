"""Shared fixtures for the unit tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "manifests" / "samples"


def load_sample(name: str) -> dict[str, Any]:
    return yaml.safe_load((SAMPLES / name).read_text())


@pytest.fixture
def minimal() -> dict[str, Any]:
    """The smallest valid InferenceService."""
    return copy.deepcopy(
        {
            "apiVersion": "kinfer.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": "mlp", "namespace": "team-a", "uid": "u-1", "generation": 3},
            "spec": {
                "runtime": "onnxruntime",
                "model": {"storageUri": "https://models.example.com/mlp/model.onnx"},
            },
        }
    )
