"""spec.model's storage settings: the Secret the model fetch reads and the S3 endpoint (pure).

The Secret (storageSecretName) reaches the fetch (init) containers only, never the model
server; the S3 settings say how to reach an S3-compatible store that is not AWS (MinIO, Ceph,
an on-prem gateway), with its own CA.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# A Secret's or ConfigMap's name: a DNS-1123 subdomain.
DNS1123_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS1123_SUBDOMAIN_MAX_LENGTH = 253
# spec.model.s3.endpoint: scheme and host[:port], no path (rclone's --s3-endpoint).
S3_ENDPOINT_PATTERN = r"^https?://[^/\s?#]+/?$"
DEFAULT_S3_FORCE_PATH_STYLE = True
DEFAULT_S3_VERIFY_TLS = True
# The key of spec.model.s3.caBundleConfigMap holding the PEM bundle (kube-root-ca.crt's and
# cert-manager trust bundles' key).
CA_BUNDLE_KEY = "ca.crt"

# The Secret's keys the fetch reads (docs/model-storage.md).
S3_SECRET_KEYS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
)
GCS_SECRET_KEY = "GOOGLE_APPLICATION_CREDENTIALS"
HF_TOKEN_KEY = "HF_TOKEN"


@dataclass(frozen=True)
class S3Spec:
    endpoint: str | None = None
    region: str | None = None
    force_path_style: bool = DEFAULT_S3_FORCE_PATH_STYLE
    verify_tls: bool = DEFAULT_S3_VERIFY_TLS
    ca_bundle_config_map: str | None = None


@dataclass(frozen=True)
class StorageSpec:
    secret_name: str | None = None
    s3: S3Spec = field(default_factory=S3Spec)


def parse_storage(model: dict[str, Any]) -> StorageSpec:
    """spec.model's storageSecretName and s3 (already validated against the CRD schema)."""
    s3 = model.get("s3") or {}
    return StorageSpec(
        secret_name=model.get("storageSecretName"),
        s3=S3Spec(
            endpoint=s3.get("endpoint"),
            region=s3.get("region"),
            force_path_style=bool(s3.get("forcePathStyle", DEFAULT_S3_FORCE_PATH_STYLE)),
            verify_tls=bool(s3.get("verifyTLS", DEFAULT_S3_VERIFY_TLS)),
            ca_bundle_config_map=s3.get("caBundleConfigMap"),
        ),
    )


def schema_properties() -> dict[str, Any]:
    """The CRD schema of spec.model.storageSecretName and spec.model.s3."""
    return {
        "storageSecretName": {
            "type": "string",
            "description": "A Secret in the InferenceService's namespace whose keys become the "
            "environment of the model fetch (init) containers only, never of the model server: "
            "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_DEFAULT_REGION "
            "(s3://), GOOGLE_APPLICATION_CREDENTIALS (gs://: the service account key file's "
            "content), HF_TOKEN (hf://), RCLONE_* (rclone's own options). A missing Secret "
            "stops the pod (CreateContainerConfigError, in Ready=False). Default: unset, the "
            "fetch uses the pod's own identity (IRSA, Workload Identity) or no credentials.",
            "pattern": DNS1123_SUBDOMAIN_PATTERN,
            "maxLength": DNS1123_SUBDOMAIN_MAX_LENGTH,
        },
        "s3": {
            "type": "object",
            "description": "How s3:// storageUris reach an S3-compatible store other than AWS "
            "(MinIO, Ceph, on-prem). Only for s3:// storageUris. Default: unset, AWS S3.",
            "properties": {
                "endpoint": {
                    "type": "string",
                    "description": "The store's URL, scheme and host[:port], e.g. "
                    "https://minio.storage.svc:9000 (http:// for a store without TLS). "
                    "Default: unset, AWS S3 for the region.",
                    "pattern": S3_ENDPOINT_PATTERN,
                    "maxLength": 512,
                },
                "region": {
                    "type": "string",
                    "description": "The bucket's region, e.g. eu-west-1. Default: unset, the "
                    "Secret's AWS_DEFAULT_REGION, else us-east-1.",
                    "pattern": r"^[a-z0-9-]+$",
                    "maxLength": 64,
                },
                "forcePathStyle": {
                    "type": "boolean",
                    "description": "Path-style requests (endpoint/bucket/key), which MinIO and "
                    "most on-prem stores need; false: virtual-hosted (bucket.endpoint/key).",
                    "default": DEFAULT_S3_FORCE_PATH_STYLE,
                },
                "verifyTLS": {
                    "type": "boolean",
                    "description": "Verify the endpoint's TLS certificate; false accepts any "
                    "certificate (testing only: prefer caBundleConfigMap).",
                    "default": DEFAULT_S3_VERIFY_TLS,
                },
                "caBundleConfigMap": {
                    "type": "string",
                    "description": f"A ConfigMap in the InferenceService's namespace whose "
                    f"{CA_BUNDLE_KEY} key holds the PEM CA bundle the endpoint's certificate "
                    "is checked against (instead of the system's). Default: unset, the "
                    "image's system CAs.",
                    "pattern": DNS1123_SUBDOMAIN_PATTERN,
                    "maxLength": DNS1123_SUBDOMAIN_MAX_LENGTH,
                },
            },
        },
    }
