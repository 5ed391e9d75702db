"""How the pod runner runs a pod locally: its volumes, model fetches and server command (pure).

A pod's production spec (rclone init containers, `tritonserver` or
`kinfer-ort-server` with /mnt/models, ports 8000-8002) becomes a plan with
every container path mapped into the pod's local work dir and every listener
bound to the pod's loopback IP. Anything that would leave this machine (a GCS
source, an HTTP or S3 source that is not loopback) or needs a container runtime
(an oci:// modelcar image) is refused here.
"""

from __future__ import annotations

import ipaddress
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kinfer_dev.localcluster.config import (
    ANNOTATION_COLD_START_S,
    ANNOTATION_SIMULATED_CUDA,
    LOOPBACK,
)

LABEL_ISVC = "kinfer.dev/inferenceservice"
LABEL_RUNTIME = "kinfer.dev/runtime"
RUNTIME_COMMANDS = {"tritonserver": "triton", "kinfer-ort-server": "onnxruntime"}
DEFAULT_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}


class UnsupportedPod(ValueError):
    """The pod asks for something the local cluster will not or cannot do."""


@dataclass(frozen=True)
class Fetch:
    """One init container's rclone command with container paths mapped to local ones."""

    container: str
    argv: tuple[str, ...]
    env: dict[str, str]
    # A kubelet puts the log's tail into terminated.message only with this policy.
    message_from_log: bool = False
    # The container's envFrom and env as written (plain values mapped to local paths): the
    # runner resolves Secrets and $(VAR) references as a kubelet does (container_env).
    env_from: tuple[dict[str, Any], ...] = ()
    env_entries: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class ConfigFile:
    """A ConfigMap key copied to a local path (what a subPath mount shows the container)."""

    configmap: str
    key: str
    path: Path


@dataclass(frozen=True)
class PodPlan:
    """Everything the runner needs to run one pod's model server locally."""

    namespace: str
    name: str
    uid: str
    pod_ip: str
    runtime: str
    work_dir: Path
    model_repository: Path
    fetches: tuple[Fetch, ...]
    config_files: tuple[ConfigFile, ...]
    configmap_volumes: dict[str, Path]
    server_args: tuple[str, ...]
    ports: dict[str, int]
    cold_start_s: float | None
    env: dict[str, str] = field(default_factory=dict)
    container: str = "server"  # the model server's container name (`kubectl logs -c`)
    # A kubelet puts the server log's tail into terminated.message only with this policy.
    server_message_from_log: bool = False
    # The server container's preStop sleep: how long a deleted pod's server keeps running.
    prestop_sleep_s: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")) in LOOPBACK or host.strip("[]") == "::1"
    except ValueError:
        return False


def work_dir_for(state_dir: Path, pod: dict[str, Any]) -> Path:
    meta = pod["metadata"]
    return state_dir / "pods" / f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}"


def _volume_dirs(pod: dict[str, Any], work_dir: Path, state_dir: Path) -> dict[str, Path]:
    """Each pod volume's local directory; a PVC is a folder of the cluster: <state>/pvc/<claim>."""
    dirs = {}
    for volume in pod["spec"].get("volumes") or []:
        name = volume["name"]
        if "persistentVolumeClaim" in volume:
            dirs[name] = state_dir / "pvc" / volume["persistentVolumeClaim"]["claimName"]
        else:
            dirs[name] = work_dir / "volumes" / name
    return dirs


def map_path(path: str, mounts: list[dict[str, Any]], volume_dirs: dict[str, Path]) -> Path:
    """A container path -> the local path, through the deepest mount that holds it."""
    best: dict[str, Any] | None = None
    for mount in mounts:
        mount_path = mount["mountPath"].rstrip("/") or "/"
        holds = path == mount_path or path.startswith(mount_path + "/")
        if holds and (best is None or len(mount_path) > len(best["mountPath"].rstrip("/"))):
            best = mount
    if best is None:
        raise UnsupportedPod(f"path {path!r} is on no volume mount of the container")
    mount_path = best["mountPath"].rstrip("/")
    rest = path[len(mount_path) :].lstrip("/")
    base = volume_dirs[best["name"]]
    if best.get("subPath"):
        base = base / best["subPath"]
    trailing = "/" if path.endswith("/") and rest else ""
    return Path(str(base / rest) + trailing) if rest else base


def _map_arg(arg: str, mounts: list[dict[str, Any]], volume_dirs: dict[str, Path]) -> str:
    """Map `/abs/path` and `--flag=/abs/path` arguments that fall on a mount."""
    prefix, value = "", arg
    if arg.startswith("-") and "=" in arg:
        prefix, value = arg.split("=", 1)
        prefix += "="
    if value.startswith("/"):
        try:
            mapped = map_path(value, mounts, volume_dirs)
        except UnsupportedPod:
            return arg
        suffix = "/" if value.endswith("/") and not str(mapped).endswith("/") else ""
        return f"{prefix}{mapped}{suffix}"
    return arg


def _fetch_operands(container: dict[str, Any], args: list[str]) -> tuple[str, str]:
    """SRC and DST of `rclone copy|copyto|archive extract SRC DST`."""
    positional = [a for a in args if not a.startswith("-")]
    if positional[:2] == ["archive", "extract"]:
        positional = positional[1:]
    if len(positional) < 3 or positional[0] not in ("copy", "copyto", "extract"):
        raise UnsupportedPod(
            f"init container {container['name']!r}: expected `rclone copy|copyto|archive "
            f"extract SRC DST`, got args {args}"
        )
    return positional[1], positional[2]


def _check_fetch_is_local(container: dict[str, Any], args: list[str]) -> None:
    """Network safety: only loopback HTTP(S) and S3 sources and local (PVC) paths are
    fetched."""
    source, destination = _fetch_operands(container, args)
    if not destination.startswith("/"):
        raise UnsupportedPod(
            f"init container {container['name']!r}: destination {destination!r} is not a "
            "local path; the local cluster only fetches into the pod's volumes"
        )
    flags = dict(a.split("=", 1) for a in args if a.startswith("--") and "=" in a)
    if source.startswith(":http:"):
        url = flags.get("--http-url", "")
        if not is_loopback_host(urlsplit(url).hostname):
            raise UnsupportedPod(
                f"init container {container['name']!r}: --http-url={url!r} is not a loopback "
                "address; the local cluster fetches models only from 127.0.0.0/8 "
                "(serve test models on 127.0.0.1)"
            )
        return
    if source.startswith(":s3:"):
        endpoint = flags.get("--s3-endpoint", "")
        if not is_loopback_host(urlsplit(endpoint).hostname):
            raise UnsupportedPod(
                f"init container {container['name']!r}: --s3-endpoint={endpoint!r} is not a "
                "loopback address; the local cluster fetches s3:// only from an S3 server on "
                "127.0.0.0/8 (spec.model.s3.endpoint)"
            )
        return
    if source.startswith("/"):
        return
    raise UnsupportedPod(
        f"init container {container['name']!r}: source {source!r} would leave this machine; "
        "the local cluster fetches only http(s)://127.x... and pvc:// sources"
    )


def _ports(container: dict[str, Any]) -> dict[str, int]:
    ports = dict(DEFAULT_PORTS)
    for port in container.get("ports") or []:
        if port.get("name") in ports:
            ports[port["name"]] = int(port["containerPort"])
    return ports


def _runtime(pod: dict[str, Any], container: dict[str, Any]) -> str:
    command = (container.get("command") or [""])[0]
    by_command = RUNTIME_COMMANDS.get(posixpath.basename(command))
    runtime = by_command or (pod["metadata"].get("labels") or {}).get(LABEL_RUNTIME)
    if runtime not in RUNTIME_COMMANDS.values():
        raise UnsupportedPod(
            f"container {container['name']!r}: command {container.get('command')} runs no "
            f"known model server; valid: {sorted(RUNTIME_COMMANDS)}"
        )
    return str(runtime)


def cold_start_seconds(pod: dict[str, Any]) -> float | None:
    raw = (pod["metadata"].get("annotations") or {}).get(ANNOTATION_COLD_START_S)
    if raw in (None, ""):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise UnsupportedPod(
            f"annotation {ANNOTATION_COLD_START_S}={raw!r}: must be a number of seconds"
        ) from None
    if value < 0:
        raise UnsupportedPod(f"annotation {ANNOTATION_COLD_START_S}={raw!r}: must be >= 0")
    return value


REQUIRE_PROVIDER_FLAG = "--require-execution-provider="


def simulated_gpu_args(pod: dict[str, Any], server: dict[str, Any], args: list[str]) -> list[str]:
    """The GPU simulator's part in a server's flags. A pod granted simulated GPUs runs its
    server on this machine's CPU: the simulated GPU stands for one with CUDA, so
    kinfer-ort-server's --require-execution-provider is dropped. With the pod annotation
    kinfer.dev/simulated-cuda: "false" the flags stay, and the real server refuses to start
    as it does on an image without CUDA."""
    limits = (server.get("resources") or {}).get("limits") or {}
    granted_gpu = any(name.startswith("nvidia.com/") for name in limits)
    annotations = pod["metadata"].get("annotations") or {}
    if not granted_gpu or annotations.get(ANNOTATION_SIMULATED_CUDA) == "false":
        return args
    return [arg for arg in args if not arg.startswith(REQUIRE_PROVIDER_FLAG)]


def plan_pod(pod: dict[str, Any], state_dir: Path) -> PodPlan:
    """The local plan for a scheduled pod with an IP (raises UnsupportedPod with the reason)."""
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    pod_ip = status.get("podIP")
    if not pod_ip or ipaddress.ip_address(pod_ip) not in LOOPBACK:
        raise UnsupportedPod(f"pod IP {pod_ip!r} is not a loopback address; refusing to run it")
    work_dir = work_dir_for(state_dir, pod)
    volume_dirs = _volume_dirs(pod, work_dir, state_dir)

    fetches = []
    for init in spec.get("initContainers") or []:
        if init.get("command") and init["command"][0] != "rclone":
            raise UnsupportedPod(
                f"init container {init['name']!r} runs {init['command'][0]!r} from image "
                f"{init.get('image')!r} (an oci:// modelcar): the local cluster runs no "
                "images, only the model fetch's rclone; serve oci:// models on kind"
            )
        args = list(init.get("command") or [])[1:] + list(init.get("args") or [])
        _check_fetch_is_local(init, args)
        mounts = init.get("volumeMounts") or []
        env = {
            e["name"]: _map_arg(e["value"], mounts, volume_dirs)
            for e in init.get("env") or []
            if "value" in e
        }
        mapped = tuple(_map_arg(a, mounts, volume_dirs) for a in args)
        from_log = init.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        entries = tuple(
            {**e, "value": _map_arg(e["value"], mounts, volume_dirs)} if "value" in e else e
            for e in init.get("env") or []
        )
        env_from = tuple(init.get("envFrom") or ())
        fetches.append(Fetch(init["name"], ("rclone", *mapped), env, from_log, env_from, entries))

    containers = spec.get("containers") or []
    if not containers:
        raise UnsupportedPod("the pod has no containers")
    server = containers[0]
    runtime = _runtime(pod, server)
    mounts = server.get("volumeMounts") or []
    args = list(server.get("command") or [])[1:] + list(server.get("args") or [])
    repository = next(
        (a.split("=", 1)[1] for a in args if a.startswith("--model-repository=")), None
    )
    if repository is None:
        raise UnsupportedPod(f"container {server['name']!r}: no --model-repository=PATH argument")

    config_files = []
    configmap_volumes = {}
    configmaps = {
        v["name"]: v["configMap"]["name"] for v in spec.get("volumes") or [] if "configMap" in v
    }
    for init in spec.get("initContainers") or []:
        # A ConfigMap only the fetch mounts (spec.model.s3.caBundleConfigMap's CA bundle).
        for mount in init.get("volumeMounts") or []:
            if mount["name"] in configmaps and not mount.get("subPath"):
                configmap_volumes[configmaps[mount["name"]]] = volume_dirs[mount["name"]]
    for mount in mounts:
        if mount["name"] not in configmaps:
            continue
        if mount.get("subPath"):
            # A subPath file mounted inside another volume (config.pbtxt inside
            # the model repository): the local equivalent is a copy in place.
            outer = [m for m in mounts if m is not mount]
            config_files.append(
                ConfigFile(
                    configmaps[mount["name"]],
                    mount["subPath"],
                    map_path(mount["mountPath"], outer, volume_dirs),
                )
            )
        else:
            configmap_volumes[configmaps[mount["name"]]] = volume_dirs[mount["name"]]

    env = {e["name"]: e["value"] for e in server.get("env") or [] if "value" in e}
    return PodPlan(
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta["uid"],
        pod_ip=pod_ip,
        runtime=runtime,
        work_dir=work_dir,
        model_repository=map_path(repository, mounts, volume_dirs),
        fetches=tuple(fetches),
        config_files=tuple(config_files),
        configmap_volumes=configmap_volumes,
        server_args=tuple(
            _map_arg(a, mounts, volume_dirs) for a in simulated_gpu_args(pod, server, args)
        ),
        ports=_ports(server),
        cold_start_s=cold_start_seconds(pod),
        env=env,
        container=server["name"],
        server_message_from_log=server.get("terminationMessagePolicy") == "FallbackToLogsOnError",
        prestop_sleep_s=_prestop_sleep_s(server, spec),
    )


def _prestop_sleep_s(server: dict[str, Any], spec: dict[str, Any]) -> float:
    """A preStop `sleep` action's seconds, bounded by the grace period, as a kubelet runs it
    (other preStop actions are not run here)."""
    sleep = (((server.get("lifecycle") or {}).get("preStop") or {}).get("sleep")) or {}
    seconds = float(sleep.get("seconds") or 0)
    return max(0.0, min(seconds, float(spec.get("terminationGracePeriodSeconds", 30))))


def local_server_args(plan: PodPlan) -> list[str]:
    """The server's flags with every listener on the pod IP (both runtimes take Triton's names)."""
    address_flags = ("--http-address", "--grpc-address", "--metrics-address")
    args = [a for a in plan.server_args if not a.startswith(address_flags)]
    return [*args, *(f"{flag}={plan.pod_ip}" for flag in address_flags)]
