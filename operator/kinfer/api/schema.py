"""The InferenceService CRD, generated from one Python definition.

`crds/kinfer.dev_inferenceservices.yaml` is this module's output (`kinfer crd`),
and a test keeps the two equal. Each CEL rule sits next to its Python twin
(`CrossFieldRule.check`), which `kinfer render` and the operator use, so the
API server and the code reject the same specs with the same field paths.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kinfer.api import constants as c
from kinfer.api import storage

Schema = dict[str, Any]


# Every integer ends up in an int32 field (Deployment replicas, the scale subresource, a pod
# spec): larger values are refused where the user sees them, not by a child's validation.
INT32_MAX = 2**31 - 1


def _int(minimum: int | None = None, maximum: int | None = None, **extra: Any) -> Schema:
    schema: Schema = {"type": "integer", **extra}
    if minimum is not None:
        schema["minimum"] = minimum
    schema["maximum"] = INT32_MAX if maximum is None else maximum
    return schema


def _str(description: str, **extra: Any) -> Schema:
    return {"type": "string", "description": description, **extra}


def _quantity(description: str, default: str) -> Schema:
    return {
        "description": description,
        "x-kubernetes-int-or-string": True,
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": c.QUANTITY_PATTERN,
        "minimum": 0,
        "default": default,
    }


STORAGE_URI = _str(
    "Where the model is fetched from: s3://bucket/key, gs://bucket/key, http(s)://host/path, "
    "pvc://<claim>/<path>, hf://<org>/<repo>[@<revision>]/<file> (a file of a Hugging Face "
    "repository) or oci://<registry>/<repository>:<tag> (a modelcar image: its /models is "
    "copied). A URI ending in the format's file name (model.onnx, ...) or extension is one "
    "file; one ending in .tar.gz, .tgz or .zip is an archive unpacked into the model version; "
    "anything else is a directory copied into it (docs/model-storage.md).",
    pattern=c.STORAGE_URI_PATTERN,
    maxLength=2048,
)


def _tensors(kind: str) -> Schema:
    """spec.model.inputs / outputs: a model's signature, as Triton's config.pbtxt lists it."""
    return {
        "type": "array",
        "description": f"The model's {kind}s, rendered into config.pbtxt ({kind} entries: "
        "name, data_type TYPE_<dataType>, dims). Needed for format torchscript; optional "
        "otherwise (onnx, tensorrt and python models are read for their signature; "
        "kinfer-ort-server checks what is given against the ONNX model). Default: unset, "
        "read from the model.",
        "maxItems": 64,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["name"],
        "items": {
            "type": "object",
            "description": f"One {kind}: its name, data type and shape.",
            "required": ["name", "dataType", "shape"],
            "properties": {
                "name": _str(f"The {kind}'s name in the model.", minLength=1, maxLength=256),
                "dataType": _str(
                    "Triton's data type without TYPE_: " + ", ".join(c.TENSOR_DATA_TYPES) + ".",
                    enum=list(c.TENSOR_DATA_TYPES),
                ),
                "shape": {
                    "type": "array",
                    "description": "Dimensions, -1 for a variable one; without the batch "
                    "dimension when batching.maxBatchSize > 0 (Triton's dims), the full shape "
                    "when it is 0.",
                    "maxItems": 16,
                    "items": _int(-1, None, description="One dimension (-1: variable)."),
                },
            },
        },
    }


# A storageUri naming one model file (any format's extension, before an optional query).
_MODEL_FILE_URI = r"[.](onnx|plan|pt|py)([?].*)?$"


def _shipped_needs_directory(model: dict[str, Any]) -> bool:
    if model.get("config", c.DEFAULT_MODEL_CONFIG_SOURCE) != "shipped":
        return True
    uri = model.get("storageUri")
    return uri is not None and not re.search(_MODEL_FILE_URI, uri)


@dataclass(frozen=True)
class CrossFieldRule:
    """A rule across fields: CEL for the API server, `check` for kinfer's own code.

    `where` is the path from the object's root to the object the rule is
    attached to (CEL's `self`), `field` the path (relative to it) of the field
    the error names. CEL guards fields with has(): the API server also checks
    the rules against the schema's defaults ({}), before nested defaults apply.
    """

    where: tuple[str, ...]
    cel: str
    message: str
    field: str
    check: Callable[[dict[str, Any]], bool]

    @property
    def field_path(self) -> str:
        return ".".join(self.where) + self.field


def _tiers(precision: dict[str, Any]) -> list[dict[str, Any]]:
    return list(precision.get("tiers") or [])


def _storage_uris(spec: dict[str, Any]) -> list[str]:
    uris = [(spec.get("model") or {}).get("storageUri")]
    uris += [tier.get("storageUri") for tier in _tiers(spec.get("precision") or {})]
    return [uri for uri in uris if isinstance(uri, str)]


def _tier_named(precision: dict[str, Any], key: str) -> bool:
    return key not in precision or any(
        tier.get("name") == precision[key] for tier in _tiers(precision)
    )


CROSS_FIELD_RULES: tuple[CrossFieldRule, ...] = (
    CrossFieldRule(
        where=(),
        cel="size(self.metadata.name) <= 63 "
        "&& self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
        message="metadata.name must be a DNS-1035 label (lowercase letters, digits and '-', "
        "starting with a letter, at most 63 characters): it names the Service and the Deployment",
        field="metadata.name",
        check=lambda obj: (
            bool(
                re.fullmatch(
                    r"[a-z]([-a-z0-9]*[a-z0-9])?", (obj.get("metadata") or {}).get("name", "")
                )
            )
            and len(obj["metadata"]["name"]) <= 63
        ),
    ),
    CrossFieldRule(
        where=("spec",),
        cel="self.runtime != 'onnxruntime' || !has(self.model.format) "
        "|| self.model.format == 'onnx'",
        message="runtime onnxruntime serves only model.format onnx",
        field=".model.format",
        check=lambda spec: (
            spec.get("runtime") != "onnxruntime"
            or (spec.get("model") or {}).get("format", c.DEFAULT_MODEL_FORMAT) == "onnx"
        ),
    ),
    CrossFieldRule(
        where=("spec",),
        cel="has(self.model.storageUri) || (has(self.precision) && has(self.precision.tiers) "
        "&& size(self.precision.tiers) > 0)",
        message="model.storageUri is required unless precision.tiers lists the model's tiers",
        field=".model.storageUri",
        check=lambda spec: (
            "storageUri" in (spec.get("model") or {}) or bool(_tiers(spec.get("precision") or {}))
        ),
    ),
    CrossFieldRule(
        where=("spec",),
        cel="!has(self.model.storageUri) || !has(self.precision) || !has(self.precision.tiers) "
        "|| size(self.precision.tiers) == 0",
        message="model.storageUri and precision.tiers are exclusive: "
        "with tiers, each tier names its own storageUri",
        field=".model.storageUri",
        check=lambda spec: (
            "storageUri" not in (spec.get("model") or {}) or not _tiers(spec.get("precision") or {})
        ),
    ),
    CrossFieldRule(
        where=("spec",),
        cel="!has(self.model.s3) || (has(self.model.storageUri) "
        "&& self.model.storageUri.startsWith('s3://')) || (has(self.precision) "
        "&& has(self.precision.tiers) && self.precision.tiers.exists(t, "
        "t.storageUri.startsWith('s3://')))",
        message="model.s3 applies to s3:// storageUris only, and no storageUri is s3://",
        field=".model.s3",
        check=lambda spec: (
            "s3" not in (spec.get("model") or {})
            or any(uri.startswith("s3://") for uri in _storage_uris(spec))
        ),
    ),
    CrossFieldRule(
        where=("spec",),
        cel="!has(self.env) || self.env.all(e, !has(e.value) || !has(e.valueFrom))",
        message="an env entry sets value or valueFrom, not both",
        field=".env",
        check=lambda spec: (
            not any(
                isinstance(e, dict) and "value" in e and "valueFrom" in e
                for e in spec.get("env") or []
            )
        ),
    ),
    CrossFieldRule(
        where=("spec",),
        cel="!has(self.tolerations) || self.tolerations.all(t, !has(t.operator) "
        "|| t.operator != 'Exists' || !has(t.value) || t.value == '')",
        message="a toleration with operator Exists has no value",
        field=".tolerations",
        check=lambda spec: (
            not any(
                isinstance(t, dict) and t.get("operator") == "Exists" and t.get("value")
                for t in spec.get("tolerations") or []
            )
        ),
    ),
    CrossFieldRule(
        where=("spec",),
        cel="!has(self.tolerations) || self.tolerations.all(t, has(t.key) && t.key != '' "
        "|| (has(t.operator) && t.operator == 'Exists'))",
        message="a toleration without a key must have operator Exists (it then tolerates every "
        "taint)",
        field=".tolerations",
        check=lambda spec: (
            not any(
                isinstance(t, dict) and not t.get("key") and t.get("operator") != "Exists"
                for t in spec.get("tolerations") or []
            )
        ),
    ),
    CrossFieldRule(
        where=("spec", "resources"),
        cel="!has(self.migProfile) || !has(self.gpus) || self.gpus <= 1",
        message="a replica gets one MIG slice: with migProfile, gpus must be 0 or 1",
        field=".migProfile",
        check=lambda res: "migProfile" not in res or int(res.get("gpus", c.DEFAULT_GPUS)) <= 1,
    ),
    CrossFieldRule(
        where=("spec", "resources"),
        cel="!has(self.gpuProduct) || (has(self.gpus) && self.gpus > 0) || has(self.migProfile)",
        message="gpuProduct needs gpus > 0 or a migProfile (gpus 0 means CPU only)",
        field=".gpuProduct",
        check=lambda res: (
            "gpuProduct" not in res
            or int(res.get("gpus", c.DEFAULT_GPUS)) > 0
            or "migProfile" in res
        ),
    ),
    CrossFieldRule(
        where=("spec", "scaling"),
        cel="!has(self.minReplicas) || !has(self.maxReplicas) "
        "|| self.minReplicas <= self.maxReplicas",
        message="scaling.minReplicas must be <= scaling.maxReplicas",
        field=".minReplicas",
        check=lambda s: (
            int(s.get("minReplicas", c.DEFAULT_MIN_REPLICAS))
            <= int(s.get("maxReplicas", c.DEFAULT_MAX_REPLICAS))
        ),
    ),
    CrossFieldRule(
        where=("spec", "precision"),
        cel="!has(self.pinned) || self.tiers.exists(t, t.name == self.pinned)",
        message="precision.pinned must name one of precision.tiers",
        field=".pinned",
        check=lambda p: _tier_named(p, "pinned"),
    ),
    CrossFieldRule(
        where=("spec", "precision"),
        cel="!has(self.minTier) || self.tiers.exists(t, t.name == self.minTier)",
        message="precision.minTier must name one of precision.tiers",
        field=".minTier",
        check=lambda p: _tier_named(p, "minTier"),
    ),
    CrossFieldRule(
        where=("spec", "model"),
        cel="!has(self.format) || self.format != 'torchscript' "
        "|| (has(self.config) && self.config == 'shipped') "
        "|| (has(self.inputs) && size(self.inputs) > 0 "
        "&& has(self.outputs) && size(self.outputs) > 0)",
        message="format torchscript needs model.inputs and model.outputs (a TorchScript file "
        "carries no signature Triton can read), unless model.config is shipped",
        field=".inputs",
        check=lambda m: (
            m.get("format") not in c.FORMATS_NEEDING_SIGNATURE
            or m.get("config") == "shipped"
            or (bool(m.get("inputs")) and bool(m.get("outputs")))
        ),
    ),
    CrossFieldRule(
        where=("spec", "model"),
        cel="!has(self.config) || self.config != 'shipped' "
        "|| (!has(self.inputs) && !has(self.outputs))",
        message="with model.config shipped the model's config.pbtxt lists inputs and outputs: "
        "leave model.inputs and model.outputs unset",
        field=".config",
        check=lambda m: m.get("config") != "shipped" or ("inputs" not in m and "outputs" not in m),
    ),
    CrossFieldRule(
        where=("spec", "model"),
        cel="!has(self.config) || self.config != 'shipped' || (has(self.storageUri) "
        f"&& !self.storageUri.matches('{_MODEL_FILE_URI}'))",
        message="model.config shipped needs model.storageUri naming the model's directory "
        "(config.pbtxt beside <version>/<model file>), not a file, and no precision.tiers",
        field=".config",
        check=_shipped_needs_directory,
    ),
    CrossFieldRule(
        where=("spec", "batching"),
        cel="!has(self.maxBatchSize) || self.maxBatchSize > 0 "
        "|| !has(self.maxQueueDelayMicroseconds)",
        message="dynamic batching needs maxBatchSize > 0: with maxBatchSize 0 leave "
        "maxQueueDelayMicroseconds unset",
        field=".maxQueueDelayMicroseconds",
        check=lambda b: (
            int(b.get("maxBatchSize", c.DEFAULT_MAX_BATCH_SIZE)) > 0
            or "maxQueueDelayMicroseconds" not in b
        ),
    ),
    CrossFieldRule(
        where=("spec", "podMetadata"),
        cel="!has(self.labels) || ("
        + " && ".join(f"!('{key}' in self.labels)" for key in c.RESERVED_POD_LABELS)
        + ")",
        message="podMetadata.labels may not set the labels kinfer sets: "
        + ", ".join(c.RESERVED_POD_LABELS),
        field=".labels",
        check=lambda m: not set(m.get("labels") or {}) & set(c.RESERVED_POD_LABELS),
    ),
    CrossFieldRule(
        where=("spec", "podMetadata"),
        cel="!has(self.annotations) || ("
        + " && ".join(f"!('{key}' in self.annotations)" for key in c.RESERVED_POD_ANNOTATIONS)
        + ")",
        message="podMetadata.annotations may not set the annotations kinfer sets: "
        + ", ".join(c.RESERVED_POD_ANNOTATIONS),
        field=".annotations",
        check=lambda m: not set(m.get("annotations") or {}) & set(c.RESERVED_POD_ANNOTATIONS),
    ),
)


def _default_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def with_defaults_described(node: Schema) -> Schema:
    """A copy of a schema whose every default is also in its description ("Default: 8."):
    `kubectl explain` prints descriptions, never defaults. Object defaults ({}) are left out."""
    out = dict(node)
    default = out.get("default")
    if default is not None and default != {} and "description" in out:
        out["description"] = f"{out['description']} Default: {_default_text(default)}."
    if "properties" in out:
        out["properties"] = {k: with_defaults_described(v) for k, v in out["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = with_defaults_described(out[key])
    return out


def _rules_at(where: tuple[str, ...]) -> list[Schema]:
    rules = []
    for rule in CROSS_FIELD_RULES:
        if rule.where == where:
            entry = {"rule": rule.cel, "message": rule.message, "reason": "FieldValueInvalid"}
            # fieldPath must name a field the schema declares; metadata's are not.
            if rule.field.startswith("."):
                entry["fieldPath"] = rule.field
            rules.append(entry)
    return rules


def spec_schema() -> Schema:
    """The openAPIV3Schema of `.spec`."""
    return {
        "type": "object",
        "description": "Desired state: the model server (runtime), the model or its precision "
        "tiers, per-replica resources and GPU scheduling, replicas, autoscaling and batching.",
        "required": ["runtime"],
        "x-kubernetes-validations": _rules_at(("spec",)),
        "properties": {
            "runtime": _str(
                "The model server: triton (NVIDIA Triton Inference Server) or onnxruntime "
                "(kinfer's ONNX Runtime server). Both speak the Open Inference Protocol v2.",
                enum=list(c.RUNTIMES),
            ),
            "model": {
                "type": "object",
                "description": "The served model: the name clients call it by, its format and "
                "where it is fetched from (with precision.tiers, each tier names its own "
                "storageUri instead).",
                "default": {},
                "x-kubernetes-validations": _rules_at(("spec", "model")),
                "properties": {
                    "name": _str(
                        "Name clients call the model by (/v2/models/<name>/infer; "
                        "status.modelName). Default: metadata.name.",
                        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                        maxLength=128,
                    ),
                    "format": _str(
                        "Model format, and the file each model version holds: onnx "
                        "(model.onnx), tensorrt (model.plan), torchscript (model.pt) or python "
                        "(model.py). Runtime onnxruntime accepts only onnx.",
                        enum=list(c.MODEL_FORMATS),
                        default=c.DEFAULT_MODEL_FORMAT,
                    ),
                    "storageUri": STORAGE_URI,
                    **storage.schema_properties(),
                    "config": _str(
                        "Who writes the model's config.pbtxt. generated: kinfer, from this "
                        "spec (format, inputs, outputs, batching, resources), mounted over any "
                        "config.pbtxt the model ships. shipped: the model's own; storageUri "
                        "then names the model's directory in Triton's layout (config.pbtxt "
                        "beside <version>/<model file>), copied as it is, and batching, "
                        "inputs and outputs come from that config (docs/api.md#model-formats).",
                        enum=list(c.MODEL_CONFIG_SOURCES),
                        default=c.DEFAULT_MODEL_CONFIG_SOURCE,
                    ),
                    "inputs": _tensors("input"),
                    "outputs": _tensors("output"),
                },
            },
            "precision": {
                "type": "object",
                "description": "Precision tiers: variants of one model, highest quality first, "
                "between which the operator switches the running pods (docs/tiers.md). Absent: "
                "one model version (model.storageUri), no tier switching.",
                "required": ["tiers"],
                "x-kubernetes-validations": _rules_at(("spec", "precision")),
                "properties": {
                    "tiers": {
                        "type": "array",
                        "description": "Ordered tiers, highest quality first (e.g. fp32, "
                        "fp16, int8); the first tier is served as model version 1, the next "
                        "as 2, and so on.",
                        "minItems": 1,
                        "maxItems": 8,
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["name"],
                        "items": {
                            "type": "object",
                            "description": "One tier: its name and where its variant of the "
                            "model (the same inputs and outputs) is fetched from.",
                            "required": ["name", "storageUri"],
                            "properties": {
                                "name": _str(
                                    "Tier name, e.g. fp32 (it names the pod's fetch-<name> "
                                    "init container, so at most 57 characters).",
                                    pattern=c.TIER_NAME_PATTERN,
                                    maxLength=c.TIER_NAME_MAX_LENGTH,
                                ),
                                "storageUri": STORAGE_URI,
                            },
                        },
                    },
                    "pinned": _str(
                        "Serve this tier and never switch (turns tier switching off); one of "
                        "tiers[].name. Default: unset, the tier policy decides (docs/tiers.md).",
                        maxLength=c.TIER_NAME_MAX_LENGTH,
                    ),
                    "minTier": _str(
                        "Accuracy floor: the lowest-quality tier the autoscaler may use; one "
                        "of tiers[].name. Default: the last tier.",
                        maxLength=c.TIER_NAME_MAX_LENGTH,
                    ),
                    "dwellSeconds": _int(
                        0,
                        3600,
                        default=c.DEFAULT_TIER_DWELL_S,
                        description="Least time in seconds between two tier switches, except "
                        "a further step down while the latency target is still missed.",
                    ),
                    "absorbBursts": {
                        "type": "boolean",
                        "default": c.DEFAULT_TIER_ABSORB_BURSTS,
                        "description": (
                            "Absorb a burst on a lower tier instead of scaling out: no "
                            "scale-up while a lower tier (the one serving for less than "
                            "scaling.metricsWindowSeconds, or the one the policy steps down "
                            "to), measured, holds on the Ready pods what the rules ask for "
                            "at the first tier with 10% headroom; after that window, or when "
                            "the tier is unmeasured or does not hold it, pods are added as "
                            "without it. Fewer replica-seconds on bursty load, for more time "
                            "served on a lower tier and a scrape later for a burst the tier "
                            "does not hold. Only meaningful with two tiers or more."
                        ),
                    },
                },
            },
            "resources": {
                "type": "object",
                "description": "Per-replica resources and GPU scheduling (requests equal limits).",
                "default": {},
                "x-kubernetes-validations": _rules_at(("spec", "resources")),
                "properties": {
                    "gpus": _int(
                        0,
                        16,
                        default=c.DEFAULT_GPUS,
                        description="GPUs per replica (limits nvidia.com/gpu); 0 = CPU only. "
                        "A GPU replica also tolerates the nvidia.com/gpu NoSchedule taint.",
                    ),
                    "gpuProduct": _str(
                        "GPU product the pods are placed on: node selector "
                        "nvidia.com/gpu.product (a GPU Feature Discovery label), e.g. "
                        "NVIDIA-A100-SXM4-80GB. Default: unset, any GPU.",
                        pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
                        maxLength=63,
                    ),
                    "migProfile": _str(
                        "MIG profile, e.g. 1g.10gb: each replica requests one "
                        "nvidia.com/mig-<profile> slice instead of whole GPUs. Default: unset, "
                        "whole GPUs.",
                        pattern=c.MIG_PROFILE_PATTERN,
                    ),
                    "cpu": _quantity(
                        "CPU request and limit per replica, in cores (a quantity: 500m, 2).",
                        c.DEFAULT_CPU,
                    ),
                    "memory": _quantity(
                        "Memory request and limit per replica, in bytes (a quantity: 512Mi, 4Gi).",
                        c.DEFAULT_MEMORY,
                    ),
                },
            },
            "replicas": _int(
                0,
                None,
                default=c.DEFAULT_REPLICAS,
                description="Desired replicas: written by users, kubectl scale and the "
                "autoscaler (kept within scaling.minReplicas..maxReplicas when autoscaling).",
            ),
            "scaling": {
                "type": "object",
                "description": "Autoscaling on p95 latency and QPS per replica, read from "
                "Prometheus (docs/autoscaling.md). Active when targetLatencyP95Ms or "
                "targetQPSPerReplica is set; otherwise spec.replicas is taken as is.",
                "default": {},
                "x-kubernetes-validations": _rules_at(("spec", "scaling")),
                "properties": {
                    "minReplicas": _int(
                        0,
                        None,
                        default=c.DEFAULT_MIN_REPLICAS,
                        description="Fewest replicas while autoscaling: a lower spec.replicas "
                        "runs this many. At most maxReplicas.",
                    ),
                    "maxReplicas": _int(
                        1,
                        None,
                        default=c.DEFAULT_MAX_REPLICAS,
                        description="Most replicas while autoscaling: a higher spec.replicas "
                        "runs this many.",
                    ),
                    "targetLatencyP95Ms": {
                        "type": "number",
                        "exclusiveMinimum": True,
                        "minimum": 0,
                        "description": "Target p95 request latency in milliseconds (the "
                        "SLO): the latency and overload recommenders and the tier policy use "
                        "it. Default: unset, no latency target.",
                    },
                    "targetQPSPerReplica": {
                        "type": "number",
                        "exclusiveMinimum": True,
                        "minimum": 0,
                        "description": "Requests per second one replica should serve (the "
                        "QPS recommender's target). Default: unset, no QPS target.",
                    },
                    "tolerance": {
                        "type": "number",
                        "minimum": 0,
                        "maximum": 1,
                        "default": c.DEFAULT_TOLERANCE,
                        "description": "Dead band, a fraction: no QPS-driven change while "
                        "QPS / (replicas x targetQPSPerReplica) is within 1 +- tolerance; a "
                        "p95 above targetLatencyP95Ms x (1 + tolerance) is an overload.",
                    },
                    "scaleUpStabilizationSeconds": _int(
                        0,
                        3600,
                        default=c.DEFAULT_SCALE_UP_STABILIZATION_S,
                        description="Scale-up stabilization window in seconds: scale up to "
                        "the lowest recommendation of this long (0: at once).",
                    ),
                    "scaleDownStabilizationSeconds": _int(
                        0,
                        3600,
                        default=c.DEFAULT_SCALE_DOWN_STABILIZATION_S,
                        description=(
                            "Scale-down stabilization window in seconds: scale down to the "
                            "highest "
                            "recommendation of this long. A one-off fall of the load, or one "
                            "a faster tier would absorb, uses the quick window (30 s) instead."
                        ),
                    ),
                    "scaleUpMaxStep": _int(
                        1,
                        None,
                        default=c.DEFAULT_SCALE_UP_MAX_STEP,
                        description="Most replicas added per period (periodSeconds), or "
                        "+100 % of the current count if more.",
                    ),
                    "scaleDownMaxStepPercent": _int(
                        1,
                        100,
                        default=c.DEFAULT_SCALE_DOWN_MAX_STEP_PERCENT,
                        description="Most replicas removed per period, in percent of the "
                        "current count (at least one).",
                    ),
                    "periodSeconds": _int(
                        1,
                        600,
                        default=c.DEFAULT_SCALING_PERIOD_S,
                        description="Seconds between two autoscaling decisions.",
                    ),
                    "metricsWindowSeconds": _int(
                        10,
                        3600,
                        default=c.DEFAULT_METRICS_WINDOW_S,
                        description="Window in seconds of the PromQL rate and "
                        "histogram_quantile the autoscaler reads.",
                    ),
                },
            },
            "batching": {
                "type": "object",
                "description": "Server-side dynamic batching: max_batch_size and "
                "dynamic_batching of the model's config.pbtxt, which Triton and kinfer's ONNX "
                "Runtime server both read.",
                "default": {},
                "x-kubernetes-validations": _rules_at(("spec", "batching")),
                "properties": {
                    "maxBatchSize": _int(
                        0,
                        1024,
                        default=c.DEFAULT_MAX_BATCH_SIZE,
                        description="Largest batch (first dimension) the server runs: "
                        "concurrent requests are merged up to it (dynamic batching), a "
                        "request above it is rejected. 0: the model has no batch dimension "
                        "(inputs and outputs take their full shapes; no dynamic batching, so "
                        "maxQueueDelayMicroseconds stays unset); the server does not add one.",
                    ),
                    "maxQueueDelayMicroseconds": _int(
                        0,
                        1_000_000,
                        description="Longest time in microseconds a request waits in the "
                        "server's queue for others to batch with "
                        "(dynamic_batching.max_queue_delay_microseconds); only with "
                        f"maxBatchSize > 0. Default: {c.DEFAULT_MAX_QUEUE_DELAY_US}.",
                    ),
                },
            },
            "image": _str(
                "Container image of the model server. Default: the operator's image for the "
                "runtime (KINFER_TRITON_IMAGE, KINFER_ORT_SERVER_IMAGE).",
                maxLength=512,
            ),
            "env": {
                "type": "array",
                "description": "Extra environment variables (a Pod's env entries) for the "
                "model server container and the model fetch (fetch-*) init containers, e.g. "
                "S3 or GCS credentials from a Secret through valueFrom.",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "maxItems": 256,
                "items": {
                    "type": "object",
                    "description": "One variable: its name, and value or valueFrom (not both).",
                    "required": ["name"],
                    "x-kubernetes-preserve-unknown-fields": True,
                    "properties": {
                        "name": _str("Variable name.", minLength=1),
                        "value": _str("Literal value. Default: empty."),
                        "valueFrom": {
                            "type": "object",
                            "description": "Where the value comes from, as in a Pod's env: "
                            "secretKeyRef, configMapKeyRef, fieldRef or resourceFieldRef "
                            "(checked by the API server when the Deployment is applied).",
                            "x-kubernetes-preserve-unknown-fields": True,
                        },
                    },
                },
            },
            "nodeSelector": {
                "type": "object",
                "description": "Extra node selector labels for the pods, beside "
                "nvidia.com/gpu.product from resources.gpuProduct (keys and values as for any "
                "label; values are checked at apply, keys by kinfer: SpecValid=False "
                "InvalidSpec).",
                "maxProperties": 64,
                "additionalProperties": {
                    "type": "string",
                    "maxLength": 63,
                    "pattern": c.LABEL_VALUE_PATTERN,
                },
            },
            "tolerations": {
                "type": "array",
                "description": "Extra tolerations for the pods, beside the nvidia.com/gpu "
                "NoSchedule one of GPU replicas.",
                "maxItems": 64,
                "items": {
                    "type": "object",
                    "description": "One toleration, as in a Pod's spec.tolerations.",
                    "x-kubernetes-preserve-unknown-fields": True,
                    "properties": {
                        "key": _str("Taint key; empty with operator Exists: every taint."),
                        "operator": _str(
                            "Equal or Exists. Default: Equal.", enum=list(c.TOLERATION_OPERATORS)
                        ),
                        "value": _str("Taint value (Equal only)."),
                        "effect": _str(
                            "Taint effect; empty: every effect.", enum=["", *c.TAINT_EFFECTS]
                        ),
                        "tolerationSeconds": {
                            "type": "integer",
                            "description": "With NoExecute: how long in seconds the pod stays "
                            "after the taint appears. Default: unset, for ever.",
                        },
                    },
                },
            },
            "imagePullSecrets": {
                "type": "array",
                "description": "Names of Secrets (kubernetes.io/dockerconfigjson) in the "
                "namespace that pull the pods' images (model server and fetch), as the pod's "
                "imagePullSecrets. Default: none.",
                "x-kubernetes-list-type": "set",
                "maxItems": 16,
                "items": _str(
                    "A Secret's name.", pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", maxLength=253
                ),
            },
            "priorityClassName": _str(
                "PriorityClass of the pods (the scheduler preempts lower-priority pods for "
                "them; the API server refuses the pods while it does not exist). Default: none, "
                "the cluster's default priority.",
                pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                maxLength=253,
            ),
            "affinity": {
                "type": "object",
                "description": "The pods' affinity, as a Pod's spec.affinity (nodeAffinity, "
                "podAffinity, podAntiAffinity), passed as it is and checked by the API server "
                "when the Deployment is applied. The scheduler requires it and kinfer's GPU "
                "placement (the nvidia.com/gpu.product node selector, the GPU toleration) "
                "both. Default: none.",
                "x-kubernetes-preserve-unknown-fields": True,
                "properties": {
                    key: {
                        "type": "object",
                        "description": f"As a Pod's spec.affinity.{key}.",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                    for key in ("nodeAffinity", "podAffinity", "podAntiAffinity")
                },
            },
            "topologySpreadConstraints": {
                "type": "array",
                "description": "How the pods spread over topology domains, as a Pod's "
                "spec.topologySpreadConstraints. A constraint without labelSelector gets the "
                "service's pod selector (kinfer.dev/inferenceservice=<name>). Default: none.",
                "maxItems": 16,
                # As the Pod's: one constraint per domain key and policy.
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["topologyKey", "whenUnsatisfiable"],
                "items": {
                    "type": "object",
                    "description": "One constraint (maxSkew, topologyKey, whenUnsatisfiable, "
                    "and optionally labelSelector, minDomains, ... as in a Pod), checked by the "
                    "API server when the Deployment is applied.",
                    "required": ["maxSkew", "topologyKey", "whenUnsatisfiable"],
                    "x-kubernetes-preserve-unknown-fields": True,
                    "properties": {
                        "maxSkew": _int(
                            1, None, description="Most pods one domain may have above another."
                        ),
                        "topologyKey": _str(
                            "Node label whose values are the domains, e.g. "
                            "topology.kubernetes.io/zone.",
                            minLength=1,
                        ),
                        "whenUnsatisfiable": _str(
                            "DoNotSchedule or ScheduleAnyway.",
                            enum=["DoNotSchedule", "ScheduleAnyway"],
                        ),
                        "labelSelector": {
                            "type": "object",
                            "description": "The pods counted (a LabelSelector). Default: this "
                            "service's pods.",
                            "x-kubernetes-preserve-unknown-fields": True,
                        },
                    },
                },
            },
            "podMetadata": {
                "type": "object",
                "description": "Extra labels and annotations for the model server pods "
                "(beside kinfer's own, which they may not set).",
                "x-kubernetes-validations": _rules_at(("spec", "podMetadata")),
                "properties": {
                    "labels": {
                        "type": "object",
                        "description": "Pod labels (keys checked by kinfer: SpecValid=False "
                        "InvalidSpec). Default: none.",
                        "maxProperties": 64,
                        "additionalProperties": {
                            "type": "string",
                            "maxLength": 63,
                            "pattern": c.LABEL_VALUE_PATTERN,
                        },
                    },
                    "annotations": {
                        "type": "object",
                        "description": "Pod annotations (keys checked by kinfer: "
                        "SpecValid=False InvalidSpec). Default: none.",
                        "maxProperties": 64,
                        "additionalProperties": {"type": "string", "maxLength": 65536},
                    },
                },
            },
            "serviceAccountName": _str(
                "ServiceAccount of the model server pods (e.g. for storage credentials through "
                "IRSA or Workload Identity); the pods mount no API token. Default: the "
                "namespace's default ServiceAccount.",
                pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                maxLength=253,
            ),
        },
    }


def status_schema() -> Schema:
    condition = {
        "type": "object",
        "description": "One condition (Kubernetes API conventions).",
        "required": ["type", "status"],
        "properties": {
            "type": _str(
                "Condition type: Ready, SpecValid, GPUCapacityAvailable, MetricsAvailable, "
                "AutoscalingActive or TierConverged."
            ),
            "status": _str("True, False or Unknown.", enum=["True", "False", "Unknown"]),
            "reason": _str(
                "Why, in one CamelCase word users and tests filter on (e.g. InvalidSpec, "
                "InsufficientGPUs, ModelFetchFailed; docs/api.md lists them)."
            ),
            "message": _str("What happened, in words."),
            "lastTransitionTime": _str("When status last changed (RFC 3339).", format="date-time"),
            "observedGeneration": {
                "type": "integer",
                "description": "The metadata.generation the condition describes.",
            },
        },
    }
    return {
        "type": "object",
        "description": "Observed state, written by the operator. Beside these fields: "
        "autoscaling (with a scaling target: the last decision and its trail, "
        "docs/autoscaling.md) and tiers (with tiers: desired, pods, errors, docs/tiers.md), "
        "which this schema does not check.",
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": {
            "observedGeneration": {
                "type": "integer",
                "description": "The metadata.generation this status describes.",
            },
            "replicas": {
                "type": "integer",
                "description": "Pods of the Deployment, Ready or not (the scale "
                "subresource's replica count).",
            },
            "readyReplicas": {"type": "integer", "description": "Ready pods of the Deployment."},
            "updatedReplicas": {
                "type": "integer",
                "description": "Pods of the Deployment on its current pod template.",
            },
            "selector": _str(
                "Label selector of the pods (kinfer.dev/inferenceservice=<name>), for the "
                "scale subresource and an HPA."
            ),
            "activeTier": _str(
                "The precision tier every Ready pod serves (with tiers; column Tier)."
            ),
            "url": _str(
                "In-cluster Open Inference Protocol v2 base URL, "
                "http://<name>.<namespace>.svc.<cluster domain>:8000 (append "
                "/v2/models/<model>/infer)."
            ),
            "grpcAddress": _str(
                "In-cluster gRPC address, <name>.<namespace>.svc.<cluster domain>:8001."
            ),
            "modelName": _str("The name clients call the model by (spec.model.name)."),
            "energy": {
                "type": "object",
                "description": "GPU energy per inference over the last windowSeconds, where the "
                "cluster exports it (dcgm-exporter, or Triton's own counter; docs/energy.md).",
                "properties": {
                    "joulesPerInference": {
                        "type": "object",
                        "description": "Joules per inference by tier (by model version for "
                        "a service without tiers).",
                        "additionalProperties": {"type": "number"},
                    },
                    "windowSeconds": {
                        "type": "integer",
                        "description": "The window in seconds the figures are over.",
                    },
                    "source": _str(
                        "Where the energy was read: dcgm (dcgm-exporter) or triton (Triton's "
                        "own energy counter).",
                        enum=list(c.ENERGY_SOURCES),
                    ),
                    "observedAt": _str("When it was read (RFC 3339, UTC).", format="date-time"),
                },
            },
            "slo": {
                "type": "object",
                "description": "SLO accounting over the last windowSeconds (written with the "
                "rest of the status, never on its own). The counts live in the operator's "
                "memory: a restarted operator starts them afresh.",
                "properties": {
                    "windowSeconds": {
                        "type": "integer",
                        "description": "The window in seconds every figure is over.",
                    },
                    "withinTarget": {
                        "type": "number",
                        "description": "Share of requests within the p95 target, counted at "
                        "the server's latency bucket at or below it (onnxruntime only; absent "
                        "when unknown).",
                    },
                    "lowerTierSeconds": {
                        "type": "number",
                        "description": "Seconds the Ready pods served a tier other than the "
                        "first of spec.precision.tiers (0 without tiers).",
                    },
                    "scaleOuts": {
                        "type": "integer",
                        "description": "Increases of spec.replicas the autoscaler made.",
                    },
                    "tierSwitches": {
                        "type": "integer",
                        "description": "Changes of status.activeTier.",
                    },
                    "observedAt": _str(
                        "When the figures were computed (RFC 3339, UTC).", format="date-time"
                    ),
                },
            },
            "conditions": {
                "type": "array",
                "description": "Ready, SpecValid and GPUCapacityAvailable; with autoscaling "
                "MetricsAvailable and AutoscalingActive; with tiers TierConverged "
                "(docs/api.md#status). kubectl wait --for=condition=Ready waits for serving.",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
                "items": condition,
            },
        },
    }


PRINTER_COLUMNS: list[Schema] = [
    {"name": "Runtime", "type": "string", "jsonPath": ".spec.runtime"},
    {"name": "Tier", "type": "string", "jsonPath": ".status.activeTier"},
    {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
    {"name": "Desired", "type": "integer", "jsonPath": ".spec.replicas"},
    {
        "name": "Status",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    },
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
        "priority": 1,
    },
    {"name": "URL", "type": "string", "jsonPath": ".status.url", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def crd() -> Schema:
    """The CustomResourceDefinition object."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": c.CRD_NAME},
        "spec": {
            "group": c.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": c.KIND,
                "listKind": f"{c.KIND}List",
                "plural": c.PLURAL,
                "singular": c.SINGULAR,
                "shortNames": list(c.SHORT_NAMES),
                "categories": ["kinfer", "all"],
            },
            "versions": [
                {
                    "name": c.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "InferenceService serves one model (optionally in "
                            "several precision tiers) on Triton or kinfer's ONNX Runtime "
                            "server, with GPU scheduling and autoscaling.",
                            "required": ["spec"],
                            "x-kubernetes-validations": _rules_at(()),
                            "properties": {
                                "apiVersion": _str(f"API version: {c.API_VERSION}."),
                                "kind": _str(f"Kind: {c.KIND}."),
                                # The API server refuses anything else here (a description
                                # included) and publishes ObjectMeta's own description.
                                "metadata": {"type": "object"},
                                "spec": with_defaults_described(spec_schema()),
                                "status": status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }
