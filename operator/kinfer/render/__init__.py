"""Spec -> desired Kubernetes objects, one module a child kind (pure).

`render()` is the single code path behind both the operator's apply and
`kinfer render`, so what a user debugs is what the operator does.
"""

from __future__ import annotations

import copy
from typing import Any

from kinfer.api.model import InferenceService
from kinfer.config import RenderOptions
from kinfer.render.configmap import render_config_map
from kinfer.render.deployment import render_deployment
from kinfer.render.service import render_service


def render(isvc: InferenceService, options: RenderOptions | None = None) -> list[dict[str, Any]]:
    """Every child object of an InferenceService, in apply order."""
    options = options or RenderOptions()
    objects = [render_config_map(isvc), render_service(isvc), render_deployment(isvc, options)]
    # Renderers share constant sub-dicts; callers get objects they may mutate freely.
    return copy.deepcopy(objects)
