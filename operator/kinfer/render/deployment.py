"""The Deployment that runs the model server (Triton or kinfer's ONNX Runtime server)."""

from __future__ import annotations

import hashlib
import posixpath
from typing import Any

from kinfer.api import constants as c
from kinfer.api.model import InferenceService
from kinfer.config import RenderOptions
from kinfer.render import metadata, scheduling, storage
from kinfer.render.configmap import CONFIG_KEY
from kinfer.render.model_config import model_config, to_pbtxt

# The UID/GID the server runs as: Triton's image user, and the ORT server's.
RUN_AS_USER = 1000
SERVER_CONTAINER = "server"
# How long a terminating pod's server keeps answering before its SIGTERM (preStop sleep).
DRAIN_SECONDS = 5
SERVER_COMMANDS = {"triton": "tritonserver", "onnxruntime": "kinfer-ort-server"}
# kinfer-ort-server on GPUs: TensorRT first where the image has its libraries, then CUDA; and
# a refusal to start (exit 2, the reason in Ready=False) on an image without CUDA.
ORT_GPU_ARGS = (
    "--execution-provider=tensorrt",
    "--execution-provider=cuda",
    "--require-execution-provider=cuda",
)

# `restricted` Pod Security Standard, per container.
CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}
POD_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS_USER,
    "runAsGroup": RUN_AS_USER,
    "fsGroup": RUN_AS_USER,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def effective_replicas(isvc: InferenceService) -> tuple[int, str | None]:
    """spec.replicas, kept within scaling bounds while autoscaling is on.

    Returns the count and, when it differs from spec.replicas, why.
    """
    spec = isvc.spec
    if not spec.scaling.enabled:
        return spec.replicas, None
    bounded = min(max(spec.replicas, spec.scaling.min_replicas), spec.scaling.max_replicas)
    if bounded == spec.replicas:
        return bounded, None
    return bounded, (
        f"spec.replicas {spec.replicas} is outside scaling.minReplicas..maxReplicas "
        f"{spec.scaling.min_replicas}..{spec.scaling.max_replicas}; running {bounded}"
    )


def server_args(isvc: InferenceService) -> list[str]:
    """Flags shared by tritonserver and kinfer-ort-server (the latter mirrors the former)."""
    args = [
        f"--model-repository={c.MODEL_REPOSITORY_PATH}",
        "--model-control-mode=explicit",
        f"--load-model={isvc.spec.model.name}",
        f"--http-port={c.HTTP_PORT}",
        f"--grpc-port={c.GRPC_PORT}",
        f"--metrics-port={c.METRICS_PORT}",
    ]
    if isvc.spec.runtime == "triton":
        # Latency quantiles feed the autoscaler's p95; strict readiness gates the Service.
        args += [
            "--metrics-config=summary_latencies=true",
            "--strict-readiness=true",
            "--exit-on-error=true",
        ]
    elif isvc.spec.resources.gpu_resource_name:
        args += ORT_GPU_ARGS
    if isvc.spec.batching.max_batch_size == 0 and not isvc.spec.model.config_shipped:
        # maxBatchSize 0 means no batch dimension: the server must not auto-complete one.
        args.append(
            "--default-max-batch-size=0"
            if isvc.spec.runtime == "onnxruntime"
            else "--backend-config=default-max-batch-size=0"
        )
    return args


def _probe(path: str, period_s: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period_s,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def server_image(isvc: InferenceService, options: RenderOptions) -> str:
    """spec.image, else the runtime's image: the CUDA variant for onnxruntime on GPUs."""
    if isvc.spec.image:
        return isvc.spec.image
    if isvc.spec.runtime == "triton":
        return options.images.triton
    if isvc.spec.resources.gpu_resource_name:
        return options.images.onnxruntime_cuda
    return options.images.onnxruntime


def server_container(isvc: InferenceService, options: RenderOptions) -> dict[str, Any]:
    spec = isvc.spec
    config_path = posixpath.join(c.MODEL_REPOSITORY_PATH, spec.model.name, CONFIG_KEY)
    mounts = [
        # Writable: the runtime creates the mount point of config.pbtxt (the subPath mount
        # below) inside it, which a read-only mount refuses (a real kubelet's StartError).
        {"name": "model-repository", "mountPath": c.MODEL_REPOSITORY_PATH},
        {"name": "model-config", "mountPath": config_path, "subPath": CONFIG_KEY, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if spec.model.config_shipped:
        mounts.pop(1)  # the model's own config.pbtxt is fetched with it
    if spec.runtime == "triton":
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    return {
        "name": SERVER_CONTAINER,
        "image": server_image(isvc, options),
        "command": [SERVER_COMMANDS[spec.runtime]],
        "args": server_args(isvc),
        "ports": [
            {"name": "http", "containerPort": c.HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": c.GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": c.METRICS_PORT, "protocol": "TCP"},
        ],
        "env": list(spec.env),
        "resources": scheduling.container_resources(isvc),
        # Liveness only after startup: a large model may take minutes to load.
        "startupProbe": _probe("/v2/health/live", 5, 120),
        "livenessProbe": _probe("/v2/health/live", 10, 6),
        "readinessProbe": _probe("/v2/health/ready", 5, 3),
        # A deleted pod (a scale-in, a rollout) keeps serving while the Service's endpoints
        # drop it: clients that picked it before still get answers, then SIGTERM.
        "lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}},
        "securityContext": CONTAINER_SECURITY_CONTEXT,
        # A real kubelet leaves terminated.message empty unless told to fall back to
        # the log's tail: the status and Events quote it when the server fails.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }


def volumes(isvc: InferenceService) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = [
        {"name": "model-repository", "emptyDir": {}},
        {"name": "model-config", "configMap": {"name": metadata.config_map_name(isvc)}},
        {"name": "tmp", "emptyDir": {}},
    ]
    if isvc.spec.model.config_shipped:
        result.pop(1)
    if isvc.spec.runtime == "triton":
        result.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}})
    for claim in storage.pvc_claims(isvc):
        result.append(
            {
                "name": storage.pvc_volume_name(claim),
                "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
            }
        )
    result.extend(storage.fetch_volumes(isvc))
    return result


def config_digest(isvc: InferenceService) -> str:
    return hashlib.sha256(to_pbtxt(model_config(isvc)).encode()).hexdigest()[:16]


def pod_customization(isvc: InferenceService) -> dict[str, Any]:
    """The image pull secrets of the pods' images (server and fetch), by name."""
    if not isvc.spec.image_pull_secrets:
        return {}
    return {"imagePullSecrets": [{"name": name} for name in isvc.spec.image_pull_secrets]}


def render_deployment(isvc: InferenceService, options: RenderOptions) -> dict[str, Any]:
    replicas, _ = effective_replicas(isvc)
    pod_spec: dict[str, Any] = {
        "securityContext": POD_SECURITY_CONTEXT,
        # Model servers never talk to the Kubernetes API.
        "automountServiceAccountToken": False,
        "initContainers": storage.init_containers(
            isvc,
            options.images.storage_initializer,
            CONTAINER_SECURITY_CONTEXT,
            hf_endpoint=options.hf_endpoint,
        ),
        "containers": [server_container(isvc, options)],
        "volumes": volumes(isvc),
        "terminationGracePeriodSeconds": 30,
    }
    if isvc.spec.service_account_name:
        pod_spec["serviceAccountName"] = isvc.spec.service_account_name
    pod_spec.update(scheduling.pod_scheduling(isvc))
    pod_spec.update(pod_customization(isvc))
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata.object_meta(isvc, isvc.name),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": isvc.selector},
            # Never drop below the serving capacity during a rollout.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {
                    # spec.podMetadata never sets kinfer's own keys (CEL rules).
                    "labels": {**isvc.spec.pod_labels, **metadata.labels(isvc)},
                    "annotations": {
                        **isvc.spec.pod_annotations,
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(c.METRICS_PORT),
                        "prometheus.io/path": "/metrics",
                        c.ANNOTATION_CONFIG_DIGEST: config_digest(isvc),
                    },
                },
                "spec": pod_spec,
            },
        },
    }
