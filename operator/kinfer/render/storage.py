"""Model fetch: one init container per model version (tier), and the volumes it needs.

rclone is the well-known tool that speaks every scheme we accept (S3, GCS, HTTP, a Hugging
Face repository's files over HTTPS) through on-the-fly remotes, so no rclone config is
rendered: the options are flags, and the credentials come from spec.model.storageSecretName
(envFrom on the fetch containers only, never on the model server), or from the pod's own
identity (IRSA, Workload Identity). A pvc:// source is the claim mounted read-only; an archive
is unpacked by `rclone archive extract`; an oci:// modelcar image is run as the init container
and copies its /models (docs/model-storage.md).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from kinfer.api import constants as c
from kinfer.api import storage as api_storage
from kinfer.api.model import InferenceService
from kinfer.api.storage import S3Spec, StorageSpec

PVC_MOUNT_ROOT = "/mnt/pvc"
# An http(s) URL with a query is a presigned S3 or GCS URL or an Azure SAS: rclone must send
# it as written (it escapes '?' and '%' otherwise; rclone >= 1.67), and as a GET alone (the
# signature covers the method: S3 refuses the HEAD rclone would send first to stat the file).
HTTP_QUERY_FLAGS = ("--http-no-escape", "--http-no-head")
# A storageUri ending in one of these is an archive, unpacked into the model version. rclone
# refuses members with a '..' component and writes absolute ones under the version directory.
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip")
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
DEFAULT_HF_REVISION = "main"
# KServe's modelcar layout: the model's files under /models in the image.
MODELCAR_MODELS_DIR = "/models"
MODELCAR_COPY = f'mkdir -p "$0" && cp -R {MODELCAR_MODELS_DIR}/. "$0"/'
CA_BUNDLE_VOLUME = "s3-ca-bundle"
CA_BUNDLE_MOUNT = "/var/run/kinfer/s3-ca"


@dataclass(frozen=True)
class RcloneSource:
    """An rclone source path plus the flags its remote needs."""

    path: str
    flags: tuple[str, ...] = ()
    pvc_claim: str | None = None


def _http_source(base_url: str, key: str, query: str) -> RcloneSource:
    flags = [f"--http-url={base_url}"]
    if query:
        flags += HTTP_QUERY_FLAGS
    suffix = f"?{query}" if query else ""
    return RcloneSource(path=f":http:{key}{suffix}", flags=tuple(flags))


def s3_flags(s3: S3Spec) -> tuple[str, ...]:
    """rclone's S3 options for spec.model.s3 (AWS when no endpoint is given)."""
    flags = ["--s3-provider=Other" if s3.endpoint else "--s3-provider=AWS", "--s3-env-auth=true"]
    if s3.endpoint:
        flags.append(f"--s3-endpoint={s3.endpoint.rstrip('/')}")
    if s3.region:
        flags.append(f"--s3-region={s3.region}")
    if not s3.force_path_style:
        flags.append("--s3-force-path-style=false")
    if not s3.verify_tls:
        flags.append("--no-check-certificate")
    if s3.ca_bundle_config_map:
        flags.append(f"--ca-cert={CA_BUNDLE_MOUNT}/{api_storage.CA_BUNDLE_KEY}")
    return tuple(flags)


def hf_file_path(storage_uri: str) -> str:
    """hf://ORG/REPO[@REVISION]/PATH -> ORG/REPO/resolve/REVISION/PATH, the hub's file URL."""
    parts = urlsplit(storage_uri)
    repo, _, path = parts.path.lstrip("/").partition("/")
    repo, _, revision = repo.partition("@")
    return f"{parts.netloc}/{repo}/resolve/{revision or DEFAULT_HF_REVISION}/{path}"


def rclone_source(
    storage_uri: str, s3: S3Spec | None = None, hf_endpoint: str = DEFAULT_HF_ENDPOINT
) -> RcloneSource:
    """Map a storageUri (already validated against the CRD pattern) to rclone terms."""
    parts = urlsplit(storage_uri)
    key = parts.path.lstrip("/")
    match parts.scheme:
        case "http" | "https":
            return _http_source(f"{parts.scheme}://{parts.netloc}", key, parts.query)
        case "hf":
            return _http_source(hf_endpoint.rstrip("/"), hf_file_path(storage_uri), "")
        case "s3":
            return RcloneSource(path=f":s3:{parts.netloc}/{key}", flags=s3_flags(s3 or S3Spec()))
        case "gs":
            return RcloneSource(path=f":gcs:{parts.netloc}/{key}", flags=("--gcs-env-auth=true",))
        case "pvc":
            return RcloneSource(
                path=posixpath.join(PVC_MOUNT_ROOT, parts.netloc, key).rstrip("/"),
                pvc_claim=parts.netloc,
            )
    raise ValueError(f"storageUri {storage_uri!r}: unsupported scheme {parts.scheme!r}")


def is_archive(storage_uri: str) -> bool:
    return urlsplit(storage_uri).path.endswith(ARCHIVE_SUFFIXES)


def names_a_file(storage_uri: str, model_format: str) -> bool:
    """True when the URI is the model file itself rather than a directory of files."""
    basename = posixpath.basename(urlsplit(storage_uri).path)
    extension = posixpath.splitext(c.MODEL_FILENAMES[model_format])[1]
    return basename.endswith(extension)


def version_dir(isvc: InferenceService, version: int) -> str:
    return posixpath.join(c.MODEL_REPOSITORY_PATH, isvc.spec.model.name, str(version))


def fetch_destination(isvc: InferenceService, version: int) -> str:
    """Where a fetch writes: the version's directory, or with a shipped config the model's
    own (its config.pbtxt beside <version>/<model file>)."""
    if isvc.spec.model.config_shipped:
        return posixpath.join(c.MODEL_REPOSITORY_PATH, isvc.spec.model.name)
    return version_dir(isvc, version)


def pvc_volume_name(claim: str) -> str:
    return "pvc-" + re.sub(r"[^a-z0-9-]", "-", claim)[:59]


def _rclone_args(isvc: InferenceService, version: int, source: RcloneSource, uri: str) -> list:
    fmt = isvc.spec.model.format
    destination = fetch_destination(isvc, version)
    if is_archive(uri):
        command = ["archive", "extract", source.path, destination]
    elif names_a_file(uri, fmt):
        command = ["copyto", source.path, f"{destination}/{c.MODEL_FILENAMES[fmt]}"]
    else:
        command = ["copy", source.path, destination + "/"]
    return [*command, *source.flags, "--retries=5", "--stats-one-line", "-v"]


def _secret_key_env(name: str, secret: str, key: str, optional: bool) -> dict[str, Any]:
    ref = {"name": secret, "key": key, "optional": optional}
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def credential_env(storage: StorageSpec, scheme: str) -> list[dict[str, Any]]:
    """The storage Secret's keys under the names rclone reads, beside envFrom (which passes
    every key as it is: AWS_*, RCLONE_*)."""
    secret = storage.secret_name
    if secret is None:
        return []
    match scheme:
        case "s3":
            # Below --s3-region (spec.model.s3.region) and above rclone's us-east-1.
            return [_secret_key_env("RCLONE_S3_REGION", secret, "AWS_DEFAULT_REGION", True)]
        case "gs":
            # The key file's content (rclone prefers it to env auth's file path).
            key = api_storage.GCS_SECRET_KEY
            return [_secret_key_env("RCLONE_GCS_SERVICE_ACCOUNT_CREDENTIALS", secret, key, True)]
        case "hf":
            # Required: a Secret for hf:// is there for its token. $(HF_TOKEN) is expanded by
            # the kubelet, so the token is never in the pod's spec.
            return [
                _secret_key_env(api_storage.HF_TOKEN_KEY, secret, api_storage.HF_TOKEN_KEY, False),
                {"name": "RCLONE_HTTP_HEADERS", "value": "Authorization,Bearer $(HF_TOKEN)"},
            ]
    return []


def _mounts(source: RcloneSource | None, storage: StorageSpec) -> list[dict[str, Any]]:
    mounts = [
        {"name": "model-repository", "mountPath": c.MODEL_REPOSITORY_PATH},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if source is not None and source.pvc_claim:
        mounts.append(
            {
                "name": pvc_volume_name(source.pvc_claim),
                "mountPath": posixpath.join(PVC_MOUNT_ROOT, source.pvc_claim),
                "readOnly": True,
            }
        )
    if storage.s3.ca_bundle_config_map:
        mounts.append({"name": CA_BUNDLE_VOLUME, "mountPath": CA_BUNDLE_MOUNT, "readOnly": True})
    return mounts


def _fetch_container(
    isvc: InferenceService, version: int, storage_uri: str, image: str, hf_endpoint: str
) -> dict[str, Any]:
    """The init container's image, command and environment for one storageUri."""
    storage = isvc.spec.model.storage
    scheme = urlsplit(storage_uri).scheme
    env = [
        {"name": "RCLONE_CONFIG", "value": "/tmp/rclone.conf"},
        {"name": "XDG_CACHE_HOME", "value": "/tmp"},
    ]
    if scheme == "oci":
        # A modelcar: the image holds the model under /models, and its own shell copies it
        # (cp creates no parent directory: mkdir -p first). The destination is sh's $0.
        reference = storage_uri.removeprefix("oci://")
        copy = ["sh", "-c", MODELCAR_COPY, fetch_destination(isvc, version)]
        return {
            "image": reference,
            "command": copy,
            "env": env,
            "volumeMounts": _mounts(None, storage),
        }
    source = rclone_source(storage_uri, storage.s3, hf_endpoint)
    container: dict[str, Any] = {
        "image": image,
        "args": _rclone_args(isvc, version, source, storage_uri),
        # No rclone config file: every remote is defined on the command line.
        "env": [*env, *credential_env(storage, scheme), *isvc.spec.env],
        "volumeMounts": _mounts(source, storage),
    }
    if storage.secret_name:
        container["envFrom"] = [{"secretRef": {"name": storage.secret_name}}]
    return container


def init_containers(
    isvc: InferenceService,
    image: str,
    security_context: dict[str, Any],
    hf_endpoint: str = DEFAULT_HF_ENDPOINT,
) -> list[dict[str, Any]]:
    containers = []
    for version, tier_name, storage_uri in isvc.spec.model_sources:
        fetch = _fetch_container(isvc, version, storage_uri, image, hf_endpoint)
        containers.append(
            {
                "name": "fetch-model" if tier_name == "model" else f"fetch-{tier_name}",
                **fetch,
                "resources": {
                    "requests": {"cpu": "100m", "memory": "128Mi"},
                    "limits": {"cpu": "1", "memory": "1Gi"},
                },
                "securityContext": security_context,
                # rclone's last words reach terminated.message (a real kubelet
                # writes nothing there otherwise), and so the InferenceService.
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        )
    return containers


def pvc_claims(isvc: InferenceService) -> list[str]:
    claims = []
    for _, _, storage_uri in isvc.spec.model_sources:
        if urlsplit(storage_uri).scheme != "pvc":
            continue
        claim = rclone_source(storage_uri).pvc_claim
        if claim and claim not in claims:
            claims.append(claim)
    return claims


def fetch_volumes(isvc: InferenceService) -> list[dict[str, Any]]:
    """The volumes only the fetch containers mount: the S3 endpoint's CA bundle."""
    config_map = isvc.spec.model.storage.s3.ca_bundle_config_map
    if config_map is None:
        return []
    key = api_storage.CA_BUNDLE_KEY
    items = [{"key": key, "path": key}]
    return [{"name": CA_BUNDLE_VOLUME, "configMap": {"name": config_map, "items": items}}]
