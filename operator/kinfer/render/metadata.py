"""Names, labels and owner references shared by every child object."""

from __future__ import annotations

from typing import Any

from kinfer.api import constants as c
from kinfer.api.model import InferenceService


def config_map_name(isvc: InferenceService) -> str:
    return f"{isvc.name}-model-config"


def labels(isvc: InferenceService) -> dict[str, str]:
    return {
        c.LABEL_ISVC: isvc.name,
        c.LABEL_RUNTIME: isvc.spec.runtime,
        c.LABEL_MANAGED_BY: c.MANAGED_BY,
        "app.kubernetes.io/name": isvc.name,
        "app.kubernetes.io/component": "model-server",
    }


def owner_references(isvc: InferenceService) -> list[dict[str, Any]]:
    """Owner reference to the InferenceService, so deleting it deletes its children.

    Without a uid (kinfer render on a file) there is no owner to point at yet.
    """
    if not isvc.uid:
        return []
    return [
        {
            "apiVersion": c.API_VERSION,
            "kind": c.KIND,
            "name": isvc.name,
            "uid": isvc.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def object_meta(isvc: InferenceService, name: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": isvc.namespace, "labels": labels(isvc)}
    owners = owner_references(isvc)
    if owners:
        meta["ownerReferences"] = owners
    return meta
