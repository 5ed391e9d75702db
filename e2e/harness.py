"""What the e2e tests drive: the cluster (local or KUBECONFIG's), kubectl, the operator, the models."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kinfer.localcluster.kubectl import Kubectl

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "manifests" / "samples"
CRDS = REPO / "crds"
# The samples' storageUris point here; the e2e suite serves the same paths itself.
SAMPLE_MODEL_BASE = "https://models.example.com/"
ISVC_LABEL = "kinfer.dev/inferenceservice"

# Environment that steers the suite (see docs/local-cluster.md):
ENV_OPERATOR = (
    "KINFER_E2E_OPERATOR"  # "local" (default): `kinfer run` here; "installed": in-cluster
)
ENV_MODEL_BASE_URL = "KINFER_E2E_MODEL_BASE_URL"  # where pods fetch models (kind: in-cluster)
ENV_STATE_DIR = "KINFER_E2E_STATE_DIR"  # the e2e local cluster's state dir
ENV_KEEP = "KINFER_E2E_KEEP_CLUSTER"  # "1": leave the e2e local cluster up
ENV_REAL_GPUS = "KINFER_E2E_REAL_GPUS"  # "1": the (non-local) cluster's GPU nodes are real


class WaitTimeout(AssertionError):
    """A bounded wait ran out; the message says what was awaited and the last seen state."""


def wait_for(
    what: str, condition: Callable[[], Any], timeout_s: float, interval_s: float = 0.5
) -> Any:
    """Poll until `condition()` returns a truthy value (returned); fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except Exception as error:  # a transient API error is retried
            last_error = error
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise WaitTimeout(f"timed out after {timeout_s:.0f}s waiting for {what}{detail}")
        time.sleep(interval_s)


@dataclass
class Cluster:
    """A cluster reached through a kubeconfig and a kubectl binary."""

    kubeconfig: Path
    kubectl_binary: str
    is_local: bool
    prometheus_url: str | None = None

    @property
    def env(self) -> dict[str, str]:
        return Kubectl(self.kubectl_binary, self.kubeconfig).env

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout_s: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return Kubectl(self.kubectl_binary, self.kubeconfig)(
            *args, stdin=stdin, check=check, timeout_s=timeout_s
        )

    def get(self, *args: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def items(self, *args: str) -> list[dict[str, Any]]:
        return list(self.get(*args)["items"])

    def apply(self, obj: dict[str, Any] | list[dict[str, Any]]) -> None:
        docs = obj if isinstance(obj, list) else [obj]
        self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))

    def wait_ready(self, namespace: str, name: str, timeout_s: float = 300) -> None:
        """`kubectl wait --for=condition=Ready`, the contract users script against."""
        result = self.kubectl(
            "wait",
            "--for=condition=Ready",
            f"kisvc/{name}",
            "-n",
            namespace,
            f"--timeout={int(timeout_s)}s",
            check=False,
            timeout_s=timeout_s + 30,
        )
        if result.returncode != 0:
            isvc = self.kubectl("get", "kisvc", name, "-n", namespace, "-o", "yaml", check=False)
            pods = self.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False)
            raise AssertionError(
                f"kisvc {namespace}/{name} not Ready in {timeout_s:.0f}s: {result.stderr}\n"
                f"{isvc.stdout}\n{pods.stdout}"
            )

    def pods(self, namespace: str, isvc: str) -> list[dict[str, Any]]:
        return self.items("pods", "-n", namespace, "-l", f"{ISVC_LABEL}={isvc}")

    def ready_pods(self, namespace: str, isvc: str) -> list[dict[str, Any]]:
        return [
            p
            for p in self.pods(namespace, isvc)
            if not p["metadata"].get("deletionTimestamp") and condition(p, "Ready") == "True"
        ]


def condition(obj: dict[str, Any], kind: str) -> str | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return str(cond.get("status"))
    return None


def condition_of(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


@dataclass
class Operator:
    """kinfer's operator as a local process (`kinfer run`), or nothing when installed in-cluster."""

    cluster: Cluster
    log_path: Path
    installed: bool = False
    prometheus_url: str | None = None
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        if self.installed:
            return
        argv = [sys.executable, "-m", "kinfer", "run", f"--kubeconfig={self.cluster.kubeconfig}"]
        if self.prometheus_url:
            argv.append(f"--prometheus-url={self.prometheus_url}")
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== operator start #{self.starts} =====\n".encode())
            self.process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.cluster.env,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL: no cleanup, as a crashed or evicted operator."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            self.process = None
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None

    def alive(self) -> bool:
        return self.installed or (self.process is not None and self.process.poll() is None)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Models:
    """Where pods fetch the test models, and the local copies to compute expected outputs."""

    base_url: str
    local_root: Path
    tiers: dict[str, str] = field(default_factory=dict)

    def uri(self, relative: str) -> str:
        return self.base_url.rstrip("/") + "/" + relative.lstrip("/")

    def local(self, relative: str) -> Path:
        return self.local_root / relative


def serves_on_gpu(cluster: Cluster, isvc: dict[str, Any]) -> str | None:
    """Why this cluster cannot serve `isvc` (None if it can).

    The local cluster runs every runtime as a local process whatever GPU a pod
    asked for. On kind the GPUs are only advertised (scheduling works), and
    Triton's GPU instance group needs a real one.
    """
    resources = isvc["spec"].get("resources") or {}
    wants_gpu = int(resources.get("gpus", 0) or 0) > 0 or bool(resources.get("migProfile"))
    if cluster.is_local or not wants_gpu or isvc["spec"]["runtime"] != "triton":
        return None
    if os.environ.get(ENV_REAL_GPUS) == "1":
        return None
    return f"Triton on a simulated GPU cannot serve on this cluster (set {ENV_REAL_GPUS}=1 with real GPUs)"


def load_sample(name: str, namespace: str, models: Models) -> dict[str, Any]:
    """A sample from manifests/samples with its storageUris pointed at the e2e model store."""
    obj = yaml.safe_load((SAMPLES / name).read_text())
    obj["metadata"]["namespace"] = namespace
    text = json.dumps(obj).replace(SAMPLE_MODEL_BASE, models.base_url.rstrip("/") + "/")
    return dict(json.loads(text))


def deploy_ready_sample(cluster: Cluster, sample: str, namespace: str, models: Models) -> str:
    """Apply a sample and wait until it is Ready; returns its name."""
    isvc = load_sample(sample, namespace, models)
    name = isvc["metadata"]["name"]
    cluster.apply(isvc)
    cluster.wait_ready(namespace, name)
    return name


def active_model_path(isvc: dict[str, Any], models: Models) -> Path:
    """The model file the pods serve: the pinned tier's, else the first tier's, else the model's."""
    spec = isvc["spec"]
    precision = spec.get("precision") or {}
    tiers = precision.get("tiers") or []
    if tiers:
        pinned = precision.get("pinned")
        tier = next((t for t in tiers if t["name"] == pinned), tiers[0])
        uri = tier["storageUri"]
    else:
        uri = spec["model"]["storageUri"]
    return models.local(uri[len(models.base_url.rstrip("/")) + 1 :])


@contextlib.contextmanager
def pod_endpoint(cluster: Cluster, pod: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(http "host:port", grpc "host:port") of a pod's server.

    Locally a pod IP is a loopback address this machine can dial; on kind the
    pod network is inside Docker, so kubectl port-forward bridges it.
    """
    if cluster.is_local:
        ip = pod["status"]["podIP"]
        assert ip.startswith("127."), f"pod IP {ip} is not loopback"
    with Kubectl(cluster.kubectl_binary, cluster.kubeconfig).pod_endpoints(pod) as endpoints:
        yield endpoints


def infer_both_protocols(http_url: str, grpc_url: str, model: str, batch: Any) -> tuple[Any, Any]:
    """One inference over HTTP (binary tensors) and one over gRPC, with the real tritonclient."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    http = httpclient.InferenceServerClient(http_url, network_timeout=60)
    tensor = httpclient.InferInput("input", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=True)
    http_out = http.infer(model, [tensor]).as_numpy("output")
    http.close()
    grpc = grpcclient.InferenceServerClient(grpc_url)
    grpc_tensor = grpcclient.InferInput("input", list(batch.shape), "FP32")
    grpc_tensor.set_data_from_numpy(batch)
    grpc_out = grpc.infer(model, [grpc_tensor], client_timeout=60).as_numpy("output")
    grpc.close()
    return http_out, grpc_out
