"""Settings of the local cluster: where its state lives, its nodes, its address ranges (pure)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

# Environment variables (each also has a flag on `kinfer cluster`).
ENV_STATE_DIR = "KINFER_CLUSTER_DIR"
ENV_CACHE_DIR = "KINFER_CACHE_DIR"
ENV_POD_CIDR = "KINFER_CLUSTER_POD_CIDR"
ENV_NODES_FILE = "KINFER_CLUSTER_NODES"
ENV_COLD_START_S = "KINFER_CLUSTER_COLD_START_SECONDS"
ENV_SIMULATED_PODS = "KINFER_CLUSTER_SIMULATED_PODS"

# Pod annotation (or InferenceService annotation, inherited by its pods) that
# delays a pod's server start, emulating a GPU pod's image pull and model load.
ANNOTATION_COLD_START_S = "kinfer.dev/simulated-cold-start-seconds"
# Pod annotation: "false" gives the pod's simulated GPUs no CUDA. By default a pod granted
# simulated GPUs stands for one with CUDA, and the pod runner drops kinfer-ort-server's
# --require-execution-provider (its server runs on this machine's CPU); with "false" the flag
# stays and the real server refuses to start, as on a CPU image (podplan.simulated_gpu_args).
ANNOTATION_SIMULATED_CUDA = "kinfer.dev/simulated-cuda"
# Pod annotations the pod runner writes; KWOK's Stages turn them into status.
ANNOTATION_SERVER_READY = "kinfer.dev/server-ready"
ANNOTATION_SERVER_RESTARTS = "kinfer.dev/server-restarts"
# A server that exited: CrashLoopBackOff while the runner waits to restart it, and its last
# exit (code; the log's tail, a kubelet's terminated.message under FallbackToLogsOnError).
ANNOTATION_SERVER_WAITING = "kinfer.dev/server-waiting"
ANNOTATION_SERVER_LAST_EXIT_CODE = "kinfer.dev/server-last-exit-code"
ANNOTATION_SERVER_LAST_EXIT_MESSAGE = "kinfer.dev/server-last-exit-message"
# InferenceService annotations the metrics simulator reads (simulated-pods mode only, see
# metrics_simulator.py): the load offered to the service ("idle", "steady:50",
# "square:20:200:60", ...) and what one pod serves before it saturates.
ANNOTATION_SIMULATED_LOAD = "kinfer.dev/simulated-load"
ANNOTATION_SIMULATED_CAPACITY_QPS = "kinfer.dev/simulated-capacity-qps"
# Nodes KWOK manages carry this annotation (KWOK's own convention).
ANNOTATION_KWOK_NODE = "kwok.x-k8s.io/node"

# Pods get addresses from this loopback range: every pod server binds its own
# 127.x address, so many pods can all listen on 8000/8001/8002.
DEFAULT_POD_CIDR = "127.1.0.0/16"
# Nothing ever connects to a ClusterIP here: the range only satisfies the API
# server's allocator (Services need a ClusterIP to be created). Clients of the
# local cluster always talk to pod IPs, which are loopback.
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
NVIDIA_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def env_flag(raw: str, name: str) -> bool:
    """A boolean environment variable: 1/true/yes or 0/false/no (any case)."""
    value = raw.strip().lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no", ""):
        return False
    raise ValueError(f"{name}={raw!r}: expected 1, true, yes, 0, false or no")


def state_dir_default() -> Path:
    if os.environ.get(ENV_STATE_DIR):
        return Path(os.environ[ENV_STATE_DIR]).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "kinfer" / "cluster"


def cache_dir_default() -> Path:
    if os.environ.get(ENV_CACHE_DIR):
        return Path(os.environ[ENV_CACHE_DIR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kinfer"


@dataclass(frozen=True)
class NodeSpec:
    """One simulated node: its GPUs (whole or MIG slices), CPU and memory."""

    name: str
    cpu: str = "32"
    memory: str = "256Gi"
    pods: int = 110
    gpu_product: str | None = None
    gpu_count: int = 0
    gpu_memory_mib: int = 0
    gpu_family: str | None = None
    gpu_compute: tuple[int, int] = (0, 0)
    # MIG profile -> slices exposed as nvidia.com/mig-<profile> (mixed strategy).
    mig: dict[str, int] = field(default_factory=dict)

    @property
    def has_gpus(self) -> bool:
        return self.gpu_count > 0 or bool(self.mig)


DEFAULT_NODES: tuple[NodeSpec, ...] = (
    NodeSpec(
        name="gpu-a100-0",
        cpu="64",
        memory="512Gi",
        gpu_product="NVIDIA-A100-SXM4-80GB",
        gpu_count=4,
        gpu_memory_mib=81920,
        gpu_family="ampere",
        gpu_compute=(8, 0),
    ),
    NodeSpec(
        name="gpu-l4-0",
        cpu="48",
        memory="192Gi",
        gpu_product="NVIDIA-L4",
        gpu_count=4,
        gpu_memory_mib=23034,
        gpu_family="ada-lovelace",
        gpu_compute=(8, 9),
    ),
    NodeSpec(
        name="gpu-mig-0",
        cpu="32",
        memory="256Gi",
        gpu_product="NVIDIA-A100-SXM4-80GB",
        gpu_memory_mib=81920,
        gpu_family="ampere",
        gpu_compute=(8, 0),
        mig={"1g.10gb": 7},
    ),
    NodeSpec(name="cpu-0", cpu="16", memory="64Gi"),
)

_NODE_FIELDS = {
    "name",
    "cpu",
    "memory",
    "pods",
    "gpuProduct",
    "gpuCount",
    "gpuMemoryMiB",
    "gpuFamily",
    "gpuCompute",
    "mig",
}


def node_from_dict(raw: dict[str, Any], where: str) -> NodeSpec:
    """A node of a nodes file (camelCase keys, as the docs show)."""
    unknown = set(raw) - _NODE_FIELDS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; valid: {sorted(_NODE_FIELDS)}")
    if not raw.get("name"):
        raise ValueError(f"{where}.name: required")
    compute = raw.get("gpuCompute", [0, 0])
    return NodeSpec(
        name=str(raw["name"]),
        cpu=str(raw.get("cpu", "32")),
        memory=str(raw.get("memory", "256Gi")),
        pods=int(raw.get("pods", 110)),
        gpu_product=raw.get("gpuProduct"),
        gpu_count=int(raw.get("gpuCount", 0)),
        gpu_memory_mib=int(raw.get("gpuMemoryMiB", 0)),
        gpu_family=raw.get("gpuFamily"),
        gpu_compute=(int(compute[0]), int(compute[1])),
        mig={str(k): int(v) for k, v in (raw.get("mig") or {}).items()},
    )


def load_nodes(path: Path) -> tuple[NodeSpec, ...]:
    """Nodes from a YAML file holding `nodes: [...]`."""
    data = yaml.safe_load(path.read_text()) or {}
    raw_nodes = data.get("nodes") if isinstance(data, dict) else None
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise ValueError(f"{path}: expected a mapping with a non-empty list `nodes`")
    nodes = tuple(node_from_dict(n, f"{path}: nodes[{i}]") for i, n in enumerate(raw_nodes))
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: node names must be unique, got {names}")
    return nodes


def validate_pod_cidr(cidr: str) -> ipaddress.IPv4Network:
    """The pod CIDR must lie inside 127.0.0.0/8 and leave room for a /24 per node."""
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError as error:
        raise ValueError(f"pod CIDR {cidr!r}: {error}") from None
    if not isinstance(network, ipaddress.IPv4Network) or not network.subnet_of(LOOPBACK):
        raise ValueError(
            f"pod CIDR {cidr!r} must be inside 127.0.0.0/8 (pods bind loopback addresses only)"
        )
    if network.prefixlen > 20:
        raise ValueError(f"pod CIDR {cidr!r} must be /20 or larger (one /24 per node)")
    if network.network_address == ipaddress.ip_address("127.0.0.0"):
        raise ValueError(f"pod CIDR {cidr!r} must not contain 127.0.0.1 (the control plane's)")
    return network


def node_pod_cidrs(pod_cidr: str, count: int) -> list[str]:
    """One /24 per node, from the second /24 of the pod CIDR on."""
    subnets = list(validate_pod_cidr(pod_cidr).subnets(new_prefix=24))
    if count + 1 > len(subnets):
        raise ValueError(f"pod CIDR {pod_cidr!r} holds {len(subnets) - 1} nodes, asked {count}")
    return [str(s) for s in subnets[1 : count + 1]]


def node_ips(pod_cidr: str, count: int) -> list[str]:
    """Node addresses: the first /24 of the pod CIDR, .1 upwards (loopback too)."""
    first = next(validate_pod_cidr(pod_cidr).subnets(new_prefix=24))
    hosts = list(first.hosts())
    return [str(hosts[i]) for i in range(count)]


@dataclass(frozen=True)
class ClusterConfig:
    """Everything `kinfer cluster up` needs to know before it starts."""

    state_dir: Path
    cache_dir: Path
    nodes: tuple[NodeSpec, ...] = DEFAULT_NODES
    pod_cidr: str = DEFAULT_POD_CIDR
    cold_start_s: float = 0.0
    scrape_interval_s: int = 2
    # Fleet runs: KWOK makes kinfer's pods Ready without a model server, and the metrics
    # simulator serves their metrics (docs/local-cluster.md, "Fleet runs: simulated pods").
    simulated_pods: bool = False

    @classmethod
    def from_env(cls, **overrides: Any) -> ClusterConfig:
        """Defaults, then the environment, then explicit (non-None) overrides."""
        values: dict[str, Any] = {
            "state_dir": state_dir_default(),
            "cache_dir": cache_dir_default(),
        }
        if os.environ.get(ENV_POD_CIDR):
            values["pod_cidr"] = os.environ[ENV_POD_CIDR]
        if os.environ.get(ENV_NODES_FILE):
            values["nodes"] = load_nodes(Path(os.environ[ENV_NODES_FILE]))
        if os.environ.get(ENV_COLD_START_S):
            values["cold_start_s"] = float(os.environ[ENV_COLD_START_S])
        if os.environ.get(ENV_SIMULATED_PODS):
            values["simulated_pods"] = env_flag(os.environ[ENV_SIMULATED_PODS], ENV_SIMULATED_PODS)
        values.update({k: v for k, v in overrides.items() if v is not None})
        config = cls(**values)
        validate_pod_cidr(config.pod_cidr)
        node_pod_cidrs(config.pod_cidr, len(config.nodes))
        if config.cold_start_s < 0:
            raise ValueError(f"cold start {config.cold_start_s}: must be >= 0 seconds")
        return config

    def with_state_dir(self, state_dir: Path) -> ClusterConfig:
        return replace(self, state_dir=state_dir)
