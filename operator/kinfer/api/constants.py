"""Names and defaults of the InferenceService API: defined once, used by the
schema generator, the parser, the renderer and the docs tests."""

from __future__ import annotations

GROUP = "kinfer.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "InferenceService"
PLURAL = "inferenceservices"
SINGULAR = "inferenceservice"
SHORT_NAMES = ["kisvc"]
CRD_NAME = f"{PLURAL}.{GROUP}"

# Every child object carries this label (value: the InferenceService's name).
LABEL_ISVC = "kinfer.dev/inferenceservice"
LABEL_RUNTIME = "kinfer.dev/runtime"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "kinfer"
# Pod-template annotation: a digest of the rendered model config, so a config
# change rolls the pods (a subPath-mounted ConfigMap is never refreshed).
ANNOTATION_CONFIG_DIGEST = "kinfer.dev/model-config-digest"
FIELD_MANAGER = "kinfer"
# The pod labels and annotations kinfer sets itself: spec.podMetadata may not set them (the
# selector, the runtime, Prometheus' scrape and the config digest depend on them).
RESERVED_POD_LABELS = (
    LABEL_ISVC,
    LABEL_RUNTIME,
    LABEL_MANAGED_BY,
    "app.kubernetes.io/name",
    "app.kubernetes.io/component",
)
RESERVED_POD_ANNOTATIONS = (
    "prometheus.io/scrape",
    "prometheus.io/port",
    "prometheus.io/path",
    ANNOTATION_CONFIG_DIGEST,
)

RUNTIMES = ("triton", "onnxruntime")
MODEL_FORMATS = ("onnx", "tensorrt", "torchscript", "python")
# The file a format's model is stored as inside a Triton version directory.
MODEL_FILENAMES = {
    "onnx": "model.onnx",
    "tensorrt": "model.plan",
    "torchscript": "model.pt",
    "python": "model.py",
}
# Triton backend (platform) per format.
TRITON_BACKENDS = {
    "onnx": "onnxruntime",
    "tensorrt": "tensorrt",
    "torchscript": "pytorch",
    "python": "python",
}
# spec.model.config: who writes config.pbtxt. generated: kinfer, mounted from its ConfigMap;
# shipped: the model's own, fetched with it (storageUri is the Triton model directory).
MODEL_CONFIG_SOURCES = ("generated", "shipped")
DEFAULT_MODEL_CONFIG_SOURCE = "generated"
# spec.model.inputs[].dataType: Triton's data types without their TYPE_ prefix.
TENSOR_DATA_TYPES = (
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BF16",
    "BYTES",
)
# Formats whose model file carries no signature Triton can read: inputs and outputs must be
# given (spec.model.inputs/outputs), unless the model ships its own config.pbtxt.
FORMATS_NEEDING_SIGNATURE = ("torchscript",)
# Triton platform per format, where Triton names one beside the backend.
TRITON_PLATFORMS = {"tensorrt": "tensorrt_plan", "torchscript": "pytorch_libtorch"}
STORAGE_SCHEMES = ("s3", "gs", "http", "https", "pvc", "hf", "oci")
# A storageUri: s3://bucket/key, gs://bucket/key, http(s)://host/path, pvc://claim/path.
STORAGE_URI_PATTERN = (
    r"^((s3|gs)://[a-z0-9][a-z0-9._-]{1,62}(/.*)?"
    r"|https?://[^/\s]+(/\S*)?"
    r"|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/\S*)?"
    r"|hf://[A-Za-z0-9][-A-Za-z0-9_.]*/[-A-Za-z0-9_.]+(@[-A-Za-z0-9_.]+)?/[^\s?#]+"
    r"|oci://[^/\s]+/[^\s:@]+(:[\w][\w.-]{0,127}|@sha256:[0-9a-f]{64}))$"
)
TIER_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A tier names its model-fetch init container `fetch-<tier>`, a 63-character DNS label.
TIER_NAME_MAX_LENGTH = 63 - len("fetch-")
# Label values (nodeSelector) and keys' name part: Kubernetes' qualified-name rules.
LABEL_VALUE_PATTERN = r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$"
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
TOLERATION_OPERATORS = ("Exists", "Equal")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
MIG_PROFILE_PATTERN = r"^[1-7]g\.[0-9]+gb(\+me)?$"
# A Kubernetes resource quantity (cpu: "500m", "2"; memory: "4Gi").
# No sign: a negative CPU or memory is a quantity, but no pod may ask for one.
QUANTITY_PATTERN = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

# Data-plane ports: the same on Triton and kinfer's ONNX Runtime server.
HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002

# Where the pod lays out its Triton model repository.
MODEL_REPOSITORY_PATH = "/mnt/models"

# Defaults (the CRD schema's `default:` values come from here).
DEFAULT_MODEL_FORMAT = "onnx"
DEFAULT_REPLICAS = 1
DEFAULT_GPUS = 0
DEFAULT_CPU = "1"
DEFAULT_MEMORY = "2Gi"
DEFAULT_MIN_REPLICAS = 1
DEFAULT_MAX_REPLICAS = 10
DEFAULT_TOLERANCE = 0.1
DEFAULT_SCALE_UP_STABILIZATION_S = 0
DEFAULT_SCALE_DOWN_STABILIZATION_S = 120
# Pods a scale-up may add per period beyond +100 %: HPA's default is 4 per 15 s; with a 5 s
# period and asks measured at the first saturated scrape (the arrival-rate gauge), 8 lets a
# small fleet take a step of 2.5x and more in one period (docs/design-notes.md).
DEFAULT_SCALE_UP_MAX_STEP = 8
DEFAULT_SCALE_DOWN_MAX_STEP_PERCENT = 50
DEFAULT_SCALING_PERIOD_S = 5
DEFAULT_METRICS_WINDOW_S = 60
DEFAULT_TIER_DWELL_S = 30
# With tiers, hold a scale-up while a measured lower tier holds the ask (opt-in: fewer
# replica-seconds on bursty load for more time on a lower tier; docs/tiers.md).
DEFAULT_TIER_ABSORB_BURSTS = False
DEFAULT_MAX_BATCH_SIZE = 8
DEFAULT_MAX_QUEUE_DELAY_US = 500

# Condition types on status.conditions.
CONDITION_READY = "Ready"
CONDITION_SPEC_VALID = "SpecValid"
CONDITION_GPU_CAPACITY = "GPUCapacityAvailable"
CONDITION_METRICS_AVAILABLE = "MetricsAvailable"
CONDITION_AUTOSCALING = "AutoscalingActive"
CONDITION_TIER_CONVERGED = "TierConverged"

# status.energy.source: where a service's GPU energy was read (kinfer.autoscale.energy).
ENERGY_SOURCE_DCGM = "dcgm"
ENERGY_SOURCE_TRITON = "triton"
ENERGY_SOURCES = (ENERGY_SOURCE_DCGM, ENERGY_SOURCE_TRITON)
