"""Model fetch: one rclone init container per model version (tier).

rclone is the well-known tool that speaks every scheme we accept (S3, GCS,
HTTP) through on-the-fly remotes, so no credentials file is rendered: S3 and
GCS read credentials from the environment (IRSA, Workload Identity, or env
from `spec.env`), a pvc:// source is the claim mounted read-only.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from kinfer.api import constants as c
from kinfer.api.model import InferenceService

PVC_MOUNT_ROOT = "/mnt/pvc"
# An http(s) URL with a query is a presigned S3 or GCS URL or an Azure SAS: rclone must send
# it as written (it escapes '?' and '%' otherwise; rclone >= 1.67), and as a GET alone (the
# signature covers the method: S3 refuses the HEAD rclone would send first to stat the file).
HTTP_QUERY_FLAGS = ("--http-no-escape", "--http-no-head")


@dataclass(frozen=True)
class RcloneSource:
    """An rclone source path plus the flags its remote needs."""

    path: str
    flags: tuple[str, ...] = ()
    pvc_claim: str | None = None


def rclone_source(storage_uri: str) -> RcloneSource:
    """Map a storageUri (already validated against the CRD pattern) to rclone terms."""
    parts = urlsplit(storage_uri)
    key = parts.path.lstrip("/")
    match parts.scheme:
        case "http" | "https":
            flags = [f"--http-url={parts.scheme}://{parts.netloc}"]
            if parts.query:
                flags += HTTP_QUERY_FLAGS
            suffix = f"?{parts.query}" if parts.query else ""
            return RcloneSource(path=f":http:{key}{suffix}", flags=tuple(flags))
        case "s3":
            return RcloneSource(
                path=f":s3:{parts.netloc}/{key}", flags=("--s3-provider=AWS", "--s3-env-auth=true")
            )
        case "gs":
            return RcloneSource(path=f":gcs:{parts.netloc}/{key}", flags=("--gcs-env-auth=true",))
        case "pvc":
            return RcloneSource(
                path=posixpath.join(PVC_MOUNT_ROOT, parts.netloc, key).rstrip("/"),
                pvc_claim=parts.netloc,
            )
    raise ValueError(f"storageUri {storage_uri!r}: unsupported scheme {parts.scheme!r}")


def names_a_file(storage_uri: str, model_format: str) -> bool:
    """True when the URI is the model file itself rather than a directory of files."""
    basename = posixpath.basename(urlsplit(storage_uri).path)
    extension = posixpath.splitext(c.MODEL_FILENAMES[model_format])[1]
    return basename.endswith(extension)


def version_dir(isvc: InferenceService, version: int) -> str:
    return posixpath.join(c.MODEL_REPOSITORY_PATH, isvc.spec.model.name, str(version))


def pvc_volume_name(claim: str) -> str:
    return "pvc-" + re.sub(r"[^a-z0-9-]", "-", claim)[:59]


def init_containers(
    isvc: InferenceService, image: str, security_context: dict[str, Any]
) -> list[dict[str, Any]]:
    containers = []
    fmt = isvc.spec.model.format
    for version, tier_name, storage_uri in isvc.spec.model_sources:
        source = rclone_source(storage_uri)
        if names_a_file(storage_uri, fmt):
            args = ["copyto", source.path, f"{version_dir(isvc, version)}/{c.MODEL_FILENAMES[fmt]}"]
        else:
            args = ["copy", source.path, version_dir(isvc, version) + "/"]
        mounts = [
            {"name": "model-repository", "mountPath": c.MODEL_REPOSITORY_PATH},
            {"name": "tmp", "mountPath": "/tmp"},
        ]
        if source.pvc_claim:
            mounts.append(
                {
                    "name": pvc_volume_name(source.pvc_claim),
                    "mountPath": posixpath.join(PVC_MOUNT_ROOT, source.pvc_claim),
                    "readOnly": True,
                }
            )
        containers.append(
            {
                "name": "fetch-model" if tier_name == "model" else f"fetch-{tier_name}",
                "image": image,
                "args": [*args, *source.flags, "--retries=5", "--stats-one-line", "-v"],
                # No rclone config file: every remote is defined on the command line.
                "env": [
                    {"name": "RCLONE_CONFIG", "value": "/tmp/rclone.conf"},
                    {"name": "XDG_CACHE_HOME", "value": "/tmp"},
                    *isvc.spec.env,
                ],
                "resources": {
                    "requests": {"cpu": "100m", "memory": "128Mi"},
                    "limits": {"cpu": "1", "memory": "1Gi"},
                },
                "securityContext": security_context,
                # rclone's last words reach terminated.message (a real kubelet
                # writes nothing there otherwise), and so the InferenceService.
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "volumeMounts": mounts,
            }
        )
    return containers


def pvc_claims(isvc: InferenceService) -> list[str]:
    claims = []
    for _, _, storage_uri in isvc.spec.model_sources:
        claim = rclone_source(storage_uri).pvc_claim
        if claim and claim not in claims:
            claims.append(claim)
    return claims
