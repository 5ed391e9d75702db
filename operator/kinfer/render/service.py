"""The Service in front of the model server pods (HTTP, gRPC, metrics)."""

from __future__ import annotations

from typing import Any

from kinfer.api import constants as c
from kinfer.api.model import InferenceService
from kinfer.render import metadata


def render_service(isvc: InferenceService) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata.object_meta(isvc, isvc.name),
        "spec": {
            "type": "ClusterIP",
            "selector": isvc.selector,
            "ports": [
                {"name": "http", "port": c.HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                {"name": "grpc", "port": c.GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"},
                {
                    "name": "metrics",
                    "port": c.METRICS_PORT,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                },
            ],
        },
    }


def service_url(isvc: InferenceService, cluster_domain: str) -> str:
    """In-cluster Open Inference Protocol v2 base URL (append /v2/models/<model>/infer)."""
    return f"http://{isvc.name}.{isvc.namespace}.svc.{cluster_domain}:{c.HTTP_PORT}"


def grpc_address(isvc: InferenceService, cluster_domain: str) -> str:
    return f"{isvc.name}.{isvc.namespace}.svc.{cluster_domain}:{c.GRPC_PORT}"
