"""The ConfigMap holding the model's config.pbtxt (Triton model repository layout)."""

from __future__ import annotations

from typing import Any

from kinfer.api.model import InferenceService
from kinfer.render import metadata
from kinfer.render.model_config import model_config, to_pbtxt

CONFIG_KEY = "config.pbtxt"


def render_config_map(isvc: InferenceService) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata.object_meta(isvc, metadata.config_map_name(isvc)),
        "data": {CONFIG_KEY: to_pbtxt(model_config(isvc))},
    }
