"""The InferenceService model: a typed, defaulted view of the object's spec.

`parse()` turns the object as the API server (or a YAML file) holds it into
these dataclasses, applying the same defaults as the CRD schema and reporting
every invalid field at once (see `validation.py`). Everything downstream
(render, autoscale, tiers) works on this model, never on raw dicts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from kinfer.api import constants as c
from kinfer.api.storage import StorageSpec, parse_storage
from kinfer.api.validation import FieldError, InvalidSpecError, validate_object


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: name, Triton data type (FP32, ...) and shape."""

    name: str
    data_type: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    format: str
    storage_uri: str | None
    storage: StorageSpec = field(default_factory=StorageSpec)
    config: str = c.DEFAULT_MODEL_CONFIG_SOURCE
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()

    @property
    def config_shipped(self) -> bool:
        """The model brings its own config.pbtxt (kinfer mounts none)."""
        return self.config == "shipped"


@dataclass(frozen=True)
class TierSpec:
    name: str
    storage_uri: str


@dataclass(frozen=True)
class PrecisionSpec:
    tiers: tuple[TierSpec, ...] = ()
    pinned: str | None = None
    min_tier: str | None = None
    dwell_s: int = c.DEFAULT_TIER_DWELL_S
    absorb_bursts: bool = c.DEFAULT_TIER_ABSORB_BURSTS

    def tier_names(self) -> list[str]:
        return [tier.name for tier in self.tiers]

    def index_of(self, tier_name: str) -> int:
        """Position of a tier (0 = highest quality); its model version is index + 1."""
        return self.tier_names().index(tier_name)

    @property
    def floor_index(self) -> int:
        """The lowest-quality tier the autoscaler may use (the accuracy floor)."""
        if self.min_tier is None:
            return len(self.tiers) - 1
        return self.index_of(self.min_tier)


@dataclass(frozen=True)
class ResourcesSpec:
    gpus: int = c.DEFAULT_GPUS
    gpu_product: str | None = None
    mig_profile: str | None = None
    cpu: str = c.DEFAULT_CPU
    memory: str = c.DEFAULT_MEMORY

    @property
    def gpu_resource_name(self) -> str | None:
        """The extended resource a replica requests: a MIG slice, whole GPUs, or none."""
        if self.mig_profile:
            return f"nvidia.com/mig-{self.mig_profile}"
        if self.gpus > 0:
            return "nvidia.com/gpu"
        return None

    @property
    def gpu_count(self) -> int:
        """How many units of `gpu_resource_name` one replica requests."""
        if self.mig_profile:
            return 1
        return self.gpus


@dataclass(frozen=True)
class ScalingSpec:
    min_replicas: int = c.DEFAULT_MIN_REPLICAS
    max_replicas: int = c.DEFAULT_MAX_REPLICAS
    target_latency_p95_ms: float | None = None
    target_qps_per_replica: float | None = None
    tolerance: float = c.DEFAULT_TOLERANCE
    scale_up_stabilization_s: int = c.DEFAULT_SCALE_UP_STABILIZATION_S
    scale_down_stabilization_s: int = c.DEFAULT_SCALE_DOWN_STABILIZATION_S
    scale_up_max_step: int = c.DEFAULT_SCALE_UP_MAX_STEP
    scale_down_max_step_percent: int = c.DEFAULT_SCALE_DOWN_MAX_STEP_PERCENT
    period_s: int = c.DEFAULT_SCALING_PERIOD_S
    metrics_window_s: int = c.DEFAULT_METRICS_WINDOW_S

    @property
    def enabled(self) -> bool:
        """The autoscaler acts only when the user gave it a target."""
        return self.target_latency_p95_ms is not None or self.target_qps_per_replica is not None


@dataclass(frozen=True)
class BatchingSpec:
    max_batch_size: int = c.DEFAULT_MAX_BATCH_SIZE
    max_queue_delay_us: int = c.DEFAULT_MAX_QUEUE_DELAY_US


@dataclass(frozen=True)
class Spec:
    runtime: str
    model: ModelSpec
    precision: PrecisionSpec
    resources: ResourcesSpec
    replicas: int
    scaling: ScalingSpec
    batching: BatchingSpec
    image: str | None = None
    env: tuple[dict[str, Any], ...] = ()
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    service_account_name: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    priority_class_name: str | None = None
    affinity: dict[str, Any] = field(default_factory=dict)
    topology_spread_constraints: tuple[dict[str, Any], ...] = ()
    pod_labels: dict[str, str] = field(default_factory=dict)
    pod_annotations: dict[str, str] = field(default_factory=dict)

    @property
    def served_tier(self) -> TierSpec | None:
        """The tier a fresh pod starts on: the first (highest quality).

        The control loop then brings every Ready pod to the active tier (the pinned
        one, or the autoscaler's) within seconds, so pinning or unpinning a tier is a
        switch on the running pods, never a rollout.
        """
        return self.precision.tiers[0] if self.precision.tiers else None

    @property
    def model_sources(self) -> list[tuple[int, str, str]]:
        """(model version, tier name, storageUri) for every version the pod fetches."""
        if self.precision.tiers:
            return [
                (index + 1, tier.name, tier.storage_uri)
                for index, tier in enumerate(self.precision.tiers)
            ]
        assert self.model.storage_uri is not None  # guaranteed by validation
        return [(1, "model", self.model.storage_uri)]


@dataclass(frozen=True)
class InferenceService:
    name: str
    namespace: str
    uid: str | None
    generation: int | None
    spec: Spec
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def selector(self) -> dict[str, str]:
        return {c.LABEL_ISVC: self.name}

    @property
    def selector_string(self) -> str:
        return ",".join(f"{key}={value}" for key, value in self.selector.items())


def parse(obj: dict[str, Any], *, default_namespace: str = "default") -> InferenceService:
    """Validate and default an InferenceService object; raise InvalidSpecError listing
    every invalid field (with its path) when it is not valid."""
    errors = validate_object(obj)
    if errors:
        raise InvalidSpecError(errors)
    return _build(obj, default_namespace)


def _build(obj: dict[str, Any], default_namespace: str = "default") -> InferenceService:
    metadata = obj.get("metadata") or {}
    name = metadata["name"]
    spec = obj.get("spec") or {}
    return InferenceService(
        name=name,
        namespace=metadata.get("namespace") or default_namespace,
        uid=metadata.get("uid"),
        generation=metadata.get("generation"),
        spec=_parse_spec(name, spec),
        annotations=dict(metadata.get("annotations") or {}),
    )


def _parse_spec(name: str, spec: dict[str, Any]) -> Spec:
    model = spec.get("model") or {}
    precision = spec.get("precision") or {}
    resources = spec.get("resources") or {}
    scaling = spec.get("scaling") or {}
    batching = spec.get("batching") or {}
    return Spec(
        runtime=spec["runtime"],
        model=ModelSpec(
            name=model.get("name") or name,
            format=model.get("format", c.DEFAULT_MODEL_FORMAT),
            storage_uri=model.get("storageUri"),
            storage=parse_storage(model),
            config=model.get("config", c.DEFAULT_MODEL_CONFIG_SOURCE),
            inputs=_tensors(model.get("inputs")),
            outputs=_tensors(model.get("outputs")),
        ),
        precision=PrecisionSpec(
            tiers=tuple(
                TierSpec(name=tier["name"], storage_uri=tier["storageUri"])
                for tier in precision.get("tiers") or ()
            ),
            pinned=precision.get("pinned"),
            min_tier=precision.get("minTier"),
            dwell_s=int(precision.get("dwellSeconds", c.DEFAULT_TIER_DWELL_S)),
            absorb_bursts=bool(precision.get("absorbBursts", c.DEFAULT_TIER_ABSORB_BURSTS)),
        ),
        resources=ResourcesSpec(
            gpus=int(resources.get("gpus", c.DEFAULT_GPUS)),
            gpu_product=resources.get("gpuProduct"),
            mig_profile=resources.get("migProfile"),
            cpu=str(resources.get("cpu", c.DEFAULT_CPU)),
            memory=str(resources.get("memory", c.DEFAULT_MEMORY)),
        ),
        replicas=int(spec.get("replicas", c.DEFAULT_REPLICAS)),
        scaling=ScalingSpec(
            min_replicas=int(scaling.get("minReplicas", c.DEFAULT_MIN_REPLICAS)),
            max_replicas=int(scaling.get("maxReplicas", c.DEFAULT_MAX_REPLICAS)),
            target_latency_p95_ms=_optional_float(scaling.get("targetLatencyP95Ms")),
            target_qps_per_replica=_optional_float(scaling.get("targetQPSPerReplica")),
            tolerance=float(scaling.get("tolerance", c.DEFAULT_TOLERANCE)),
            scale_up_stabilization_s=int(
                scaling.get("scaleUpStabilizationSeconds", c.DEFAULT_SCALE_UP_STABILIZATION_S)
            ),
            scale_down_stabilization_s=int(
                scaling.get("scaleDownStabilizationSeconds", c.DEFAULT_SCALE_DOWN_STABILIZATION_S)
            ),
            scale_up_max_step=int(scaling.get("scaleUpMaxStep", c.DEFAULT_SCALE_UP_MAX_STEP)),
            scale_down_max_step_percent=int(
                scaling.get("scaleDownMaxStepPercent", c.DEFAULT_SCALE_DOWN_MAX_STEP_PERCENT)
            ),
            period_s=int(scaling.get("periodSeconds", c.DEFAULT_SCALING_PERIOD_S)),
            metrics_window_s=int(scaling.get("metricsWindowSeconds", c.DEFAULT_METRICS_WINDOW_S)),
        ),
        batching=BatchingSpec(
            max_batch_size=int(batching.get("maxBatchSize", c.DEFAULT_MAX_BATCH_SIZE)),
            max_queue_delay_us=int(
                batching.get("maxQueueDelayMicroseconds", c.DEFAULT_MAX_QUEUE_DELAY_US)
            ),
        ),
        image=spec.get("image"),
        env=tuple(spec.get("env") or ()),
        node_selector=dict(spec.get("nodeSelector") or {}),
        tolerations=tuple(spec.get("tolerations") or ()),
        service_account_name=spec.get("serviceAccountName"),
        image_pull_secrets=tuple(spec.get("imagePullSecrets") or ()),
        priority_class_name=spec.get("priorityClassName"),
        affinity=dict(spec.get("affinity") or {}),
        topology_spread_constraints=tuple(spec.get("topologySpreadConstraints") or ()),
        pod_labels=dict((spec.get("podMetadata") or {}).get("labels") or {}),
        pod_annotations=dict((spec.get("podMetadata") or {}).get("annotations") or {}),
    )


def _tensors(items: list[dict[str, Any]] | None) -> tuple[TensorSpec, ...]:
    return tuple(
        TensorSpec(name=item["name"], data_type=item["dataType"], shape=tuple(item["shape"]))
        for item in items or ()
    )


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


__all__ = [
    "BatchingSpec",
    "FieldError",
    "InferenceService",
    "InvalidSpecError",
    "ModelSpec",
    "PrecisionSpec",
    "ResourcesSpec",
    "ScalingSpec",
    "Spec",
    "TensorSpec",
    "TierSpec",
    "parse",
]


# The last results of `checked`, by what they depend on (oldest first; bounded).
_CHECKED: dict[str, tuple[list[FieldError], InferenceService | None]] = {}
CHECKED_MAX = 4096


def checked(obj: dict[str, Any]) -> tuple[list[FieldError], InferenceService | None]:
    """(every reason the object is invalid, its parsed model or None when invalid): what
    `validate_object` and `parse` give, computed once per distinct content. The key is the
    canonical JSON of everything validation and parsing read (not status), so an object seen
    again by a later watch event or tick costs one `json.dumps`, not a schema validation."""
    try:
        key = _checked_key(obj)
    except (TypeError, ValueError, AttributeError):
        key = None  # not JSON-shaped: validation says what is wrong, uncached
    found = _CHECKED.get(key) if key is not None else None
    if found is not None:
        return found
    errors = validate_object(obj)
    result = (errors, None if errors else _build(obj))
    if key is not None:
        _CHECKED[key] = result
        while len(_CHECKED) > CHECKED_MAX:
            _CHECKED.pop(next(iter(_CHECKED)), None)
    return result


def _checked_key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    kept = {
        k: meta.get(k) for k in ("name", "namespace", "uid", "generation", "labels", "annotations")
    }
    return json.dumps(
        [obj.get("apiVersion"), obj.get("kind"), kept, obj.get("spec")], sort_keys=True
    )
