"""A child the API server refused (400/422): what the user must fix, named by the spec's field.

The CRD schema and `validate_object` reject what they can before anything is applied; what
only the API server's validation of a Deployment, Service or ConfigMap catches lands here, so
it reaches the user as a condition and an Event instead of a retried exception in the
operator's log. Pure: the rendered child and the API server's Status body in, text out.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

# Child field path prefix (after the pod template's "spec." for Deployments) -> the
# InferenceService field it was rendered from. First match wins: longest prefixes first.
_POD_FIELDS: tuple[tuple[str, str], ...] = (
    (r"containers\[\d+\]\.resources\.(limits|requests)\[memory\]", "spec.resources.memory"),
    (r"containers\[\d+\]\.resources\.(limits|requests)\[cpu\]", "spec.resources.cpu"),
    (r"containers\[\d+\]\.resources", "spec.resources"),
    (r"containers\[\d+\]\.env", "spec.env"),
    (r"containers\[\d+\]\.image", "spec.image"),
    (r"initContainers\[\d+\]", "spec.precision.tiers"),
    (r"tolerations", "spec.tolerations"),
    (r"nodeSelector", "spec.nodeSelector"),
    (r"affinity", "spec.affinity"),
    (r"topologySpreadConstraints", "spec.topologySpreadConstraints"),
    (r"imagePullSecrets", "spec.imagePullSecrets"),
    (r"priorityClassName", "spec.priorityClassName"),
    (r"serviceAccountName", "spec.serviceAccountName"),
)
_POD_TEMPLATE = "spec.template.spec."


@dataclass(frozen=True)
class Rejection:
    """One refused field: the spec field to fix and the API server's words."""

    spec_field: str
    child_field: str
    message: str

    def __str__(self) -> str:
        where = f" ({self.child_field})" if self.child_field else ""
        return f"{self.spec_field}: {self.message}{where}"


# Server-side apply answers 500 with this for a child its schema cannot take (a field it does
# not declare, ".spec.template.spec.affinity.zone: field not declared in schema"; duplicate
# list-map keys): an invalid object, as a 422 is, and sending it again cannot succeed.
_TYPED_PATCH = "failed to create typed patch object"
_CHILD_FIELD = re.compile(r"\.(spec\.[\w.]*\w)")


def refused(status: int | None, status_body: str | bytes | None) -> bool:
    """True when the API server refused a child as invalid (not a transient failure)."""
    if status in (400, 422):
        return True
    text = status_body.decode(errors="replace") if isinstance(status_body, bytes) else status_body
    return status == 500 and _TYPED_PATCH in (text or "")


def _typed_patch_field(message: str) -> str:
    """The child's field a server-side apply 500 names ("" when none)."""
    if _TYPED_PATCH not in message:
        return ""
    found = _CHILD_FIELD.search(message.split(_TYPED_PATCH, 1)[1])
    return found.group(1) if found else ""


def spec_field_for(kind: str, child_field: str) -> str:
    """The InferenceService field a child's field comes from; `spec` when none is known."""
    if kind == "Deployment" and child_field.startswith(_POD_TEMPLATE):
        rest = child_field[len(_POD_TEMPLATE) :]
        for pattern, spec_field in _POD_FIELDS:
            if re.match(pattern, rest):
                return spec_field
    return "spec"


def rejections(child: dict[str, Any], status_body: str | bytes | None) -> list[Rejection]:
    """Every cause the API server's Status gives for refusing `child` (at least one)."""
    kind = child.get("kind", "object")
    try:
        status = json.loads(status_body or "{}")
    except (TypeError, ValueError):
        status = {}
    if not isinstance(status, dict):
        status = {}
    causes = (status.get("details") or {}).get("causes") or []
    found = [
        Rejection(
            spec_field_for(kind, str(cause.get("field") or "")),
            str(cause.get("field") or ""),
            str(cause.get("message") or cause.get("reason") or "invalid"),
        )
        for cause in causes
        if isinstance(cause, dict)
    ]
    if not found:
        message = str(status.get("message") or "invalid")
        child_field = _typed_patch_field(message)
        found.append(Rejection(spec_field_for(kind, child_field), child_field, message))
    return found


def rejection_message(child: dict[str, Any], found: list[Rejection]) -> str:
    """One line for the condition and the Event."""
    name = (child.get("metadata") or {}).get("name", "")
    causes = "; ".join(str(item) for item in found)
    return (
        f"the API server rejected {child.get('kind', 'object')} {name} rendered from it: {causes}"
    )
