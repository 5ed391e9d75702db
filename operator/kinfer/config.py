"""Operator configuration, read from the environment once (flags override it)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


@dataclass(frozen=True)
class Images:
    """Container images the renderer uses; a platform team mirrors them by env."""

    triton: str = field(
        default_factory=lambda: _env("KINFER_TRITON_IMAGE", "nvcr.io/nvidia/tritonserver:24.10-py3")
    )
    onnxruntime: str = field(
        default_factory=lambda: _env(
            "KINFER_ORT_SERVER_IMAGE", "ghcr.io/kinfer-dev/kinfer-ort-server:0.1.0"
        )
    )
    # runtime onnxruntime with GPUs: the CUDA variant (`make images-cuda` tags it <tag>-cuda).
    onnxruntime_cuda: str = field(default_factory=lambda: _env("KINFER_ORT_SERVER_CUDA_IMAGE", ""))
    storage_initializer: str = field(
        default_factory=lambda: _env(
            "KINFER_STORAGE_INITIALIZER_IMAGE",
            "ghcr.io/kinfer-dev/kinfer-storage-initializer:0.1.0",
        )
    )

    def __post_init__(self) -> None:
        if not self.onnxruntime_cuda:
            object.__setattr__(self, "onnxruntime_cuda", f"{self.onnxruntime}-cuda")


@dataclass(frozen=True)
class RenderOptions:
    images: Images = field(default_factory=Images)
    cluster_domain: str = field(
        default_factory=lambda: _env("KINFER_CLUSTER_DOMAIN", "cluster.local")
    )
    # hf:// storageUris: the hub (or a mirror), as huggingface_hub's HF_ENDPOINT.
    hf_endpoint: str = field(default_factory=lambda: _env("HF_ENDPOINT", "https://huggingface.co"))
