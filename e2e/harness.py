"""What the e2e tests drive: the cluster (local or KUBECONFIG's), kubectl, the operator, the models."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kinfer_dev.localcluster.kubectl import Kubectl, KubectlError

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "manifests" / "samples"
CRDS = REPO / "crds"
# The samples' storageUris point here; the e2e suite serves the same paths itself.
SAMPLE_MODEL_BASE = "https://models.example.com/"
# Public models the samples fetch as written, and where the e2e store serves a stand-in with
# the same signature (no test reaches the internet): testmodels.build_mnist_standin.
PUBLIC_MODEL_STANDINS = {
    "https://huggingface.co/onnxmodelzoo/mnist-12/resolve/"
    "1cd752f4a3d818fa215aa621c78b8a10a4a1a3a5/mnist-12.onnx": "public/mnist-12/model.onnx",
}
ISVC_LABEL = "kinfer.dev/inferenceservice"
STORE_NAMESPACE = "kinfer-e2e"
# kind: the CPU each model-server pod asks for (requests = limits), so that four pods
# and the control plane fit the node's two cores.
KIND_POD_CPU = "200m"
OPERATOR_NAMESPACE = "kinfer-system"  # an installed operator (manifests/)
OPERATOR_SELECTOR = "app.kubernetes.io/name=kinfer-operator"  # kind: where e2e/kind/model-store.yaml serves the models

# Environment that steers the suite (see docs/local-cluster.md):
ENV_OPERATOR = (
    "KINFER_E2E_OPERATOR"  # "local" (default): `kinfer run` here; "installed": in-cluster
)
ENV_MODEL_BASE_URL = "KINFER_E2E_MODEL_BASE_URL"  # where pods fetch models (kind: in-cluster)
ENV_STATE_DIR = "KINFER_E2E_STATE_DIR"  # the e2e local cluster's state dir
ENV_KEEP = "KINFER_E2E_KEEP_CLUSTER"  # "1": leave the e2e local cluster up
ENV_REAL_GPUS = "KINFER_E2E_REAL_GPUS"  # "1": the (non-local) cluster's GPU nodes are real
# "1" (make test): on the local cluster, skip the tests marked kind_covered (make e2e-kind
# runs them on real containers)
ENV_SKIP_KIND_COVERED = "KINFER_E2E_SKIP_KIND_COVERED"


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


def prometheus_query(prometheus_url: str, promql: str) -> list[dict[str, Any]]:
    """An instant query's result vector (raises on an HTTP or query error)."""
    url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as response:
        return list(json.loads(response.read())["data"]["result"])


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cluster:
    """A cluster reached through a kubeconfig and a kubectl binary."""

    kubeconfig: Path
    kubectl_binary: str
    is_local: bool
    prometheus_url: str | None = None
    # A kinfer local cluster's state directory (its Prometheus scrapes a local operator
    # registered there); None for any other cluster.
    state_dir: Path | None = None

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

    def delete_namespace(self, name: str, timeout_s: int = 180) -> None:
        """Deletes a test's namespace and waits until it is gone.

        The namespace controller looks at a deleted namespace 5 s after the delete; if a pod
        is still there, it looks again only half the pod's terminationGracePeriodSeconds
        later (16 s for kinfer's 30 s), however soon the pod goes. A terminating namespace
        admits no new pod, so its pods are force-deleted first (their containers are still
        stopped by the kubelet): the controller's first pass finds none.
        """
        self.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found",
                     check=False)  # fmt: skip
        self.kubectl("delete", "pods", "--all", "-n", name, "--grace-period=0", "--force",
                     "--wait=false", check=False)  # fmt: skip
        self.kubectl("wait", "--for=delete", f"namespace/{name}", f"--timeout={timeout_s}s",
                     check=False, timeout_s=timeout_s + 60)  # fmt: skip

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
    # Where a local operator serves its metrics (127.0.0.1); None: not served.
    metrics_port: int | None = None
    # hf:// storageUris: a local operator's HF_ENDPOINT (None: the hub).
    hf_endpoint: str | None = None

    def start(self) -> None:
        if self.installed:
            return
        argv = [sys.executable, "-m", "kinfer", "run", f"--kubeconfig={self.cluster.kubeconfig}"]
        if self.prometheus_url:
            argv.append(f"--prometheus-url={self.prometheus_url}")
        if self.cluster.state_dir is not None:
            # The local Prometheus scrapes it (job kinfer-operator), as the shipped config does
            # in a cluster.
            from kinfer_dev.localcluster import prometheus

            self.metrics_port = self.metrics_port or free_port()
            argv += [f"--metrics-port={self.metrics_port}", "--metrics-address=127.0.0.1"]
            prometheus.write_operator_target(self.cluster.state_dir, self.metrics_port)
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== operator start #{self.starts} =====\n".encode())
            self.process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={
                    **self.cluster.env,
                    **({"HF_ENDPOINT": self.hf_endpoint} if self.hf_endpoint else {}),
                },
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL: no cleanup, as a crashed or evicted operator.

        Installed in-cluster, its pod is force-deleted (no grace period); its
        Deployment starts another at once.
        """
        if self.installed:
            self.cluster.kubectl(
                "delete", "pod", "-n", OPERATOR_NAMESPACE, "-l", OPERATOR_SELECTOR,
                "--grace-period=0", "--force", "--wait=false",
            )  # fmt: skip
            return
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        if self.cluster.state_dir is not None and not self.installed:
            from kinfer_dev.localcluster import prometheus

            prometheus.clear_operator_target(self.cluster.state_dir)
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
        if self.installed:
            result = self.cluster.kubectl(
                "logs", "-n", OPERATOR_NAMESPACE, "-l", OPERATOR_SELECTOR, f"--tail={lines}",
                check=False,
            )  # fmt: skip
            return result.stdout or result.stderr
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Models:
    """Where pods fetch the test models, and the local copies to compute expected outputs.

    Locally the store serves `local_root` itself; on kind, `publish()` copies files
    written under `local_root` into the in-cluster model store (kinfer-e2e/model-store).
    """

    base_url: str
    local_root: Path
    tiers: dict[str, str] = field(default_factory=dict)
    cluster: Cluster | None = None  # set when the store runs in the cluster

    def publish(self, *relative: str) -> None:
        """Make these files (relative to `local_root`) fetchable at `uri(relative)`."""
        if self.cluster is None or not relative:
            return
        store = self.cluster.items("pods", "-n", STORE_NAMESPACE, "-l", "app=model-store")
        running = [p for p in store if condition(p, "Ready") == "True"]
        assert running, f"no Ready model-store pod in {STORE_NAMESPACE}"
        with tempfile.TemporaryDirectory() as staging:
            for path in relative:
                target = Path(staging) / path
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.local_root / path, target)
            pod = running[0]["metadata"]["name"]
            # Merged into what the store already serves.
            self.cluster.kubectl(
                "cp", f"{staging}/.", f"{STORE_NAMESPACE}/{pod}:/models/", timeout_s=300
            )

    def uri(self, relative: str) -> str:
        return self.base_url.rstrip("/") + "/" + relative.lstrip("/")

    def local(self, relative: str) -> Path:
        return self.local_root / relative


def serves_on_gpu(cluster: Cluster, isvc: dict[str, Any]) -> str | None:
    """Why this cluster cannot serve `isvc` (None if it can).

    The local cluster runs every runtime as a local process whatever GPU a pod
    asked for. On kind the GPU nodes are simulated (KWOK): their pods are
    scheduled and never run.
    """
    resources = isvc["spec"].get("resources") or {}
    wants_gpu = int(resources.get("gpus", 0) or 0) > 0 or bool(resources.get("migProfile"))
    if cluster.is_local or not wants_gpu or os.environ.get(ENV_REAL_GPUS) == "1":
        return None
    return (
        "its pods ask for a GPU, and this cluster's GPU nodes are simulated: such pods are "
        f"scheduled and never run (set {ENV_REAL_GPUS}=1 with real GPUs)"
    )


def runnable_here(cluster: Cluster, isvc: dict[str, Any]) -> dict[str, Any]:
    """`isvc` as this cluster can run it, for tests whose subject is not its resources.

    On kind without real GPUs: no GPU ask (the GPU nodes are simulated, their pods never
    run), so the model server runs for real on the kind node (Triton on the CPU test
    image); and at most KIND_POD_CPU per pod, so that a scale-out fits the node's two
    cores beside the control plane. Elsewhere `isvc` is returned as it is.
    """
    if cluster.is_local or os.environ.get(ENV_REAL_GPUS) == "1":
        return isvc
    resources = dict(isvc["spec"].get("resources") or {})
    for key in ("gpus", "gpuProduct", "migProfile"):
        resources.pop(key, None)
    resources["cpu"] = KIND_POD_CPU
    return {**isvc, "spec": {**isvc["spec"], "resources": resources}}


def load_sample(name: str, namespace: str, models: Models) -> dict[str, Any]:
    """A sample from manifests/samples with its storageUris pointed at the e2e model store."""
    obj = yaml.safe_load((SAMPLES / name).read_text())
    obj["metadata"]["namespace"] = namespace
    text = json.dumps(obj).replace(SAMPLE_MODEL_BASE, models.base_url.rstrip("/") + "/")
    for public_url, standin in PUBLIC_MODEL_STANDINS.items():
        text = text.replace(public_url, models.uri(standin))
    return dict(json.loads(text))


def build_public_standins(root: Path) -> list[str]:
    """Write the stand-ins of PUBLIC_MODEL_STANDINS under `root`; their relative paths."""
    from kinfer_dev.runtime import testmodels

    for relative in PUBLIC_MODEL_STANDINS.values():
        testmodels.build_mnist_standin(root / relative)
    return list(PUBLIC_MODEL_STANDINS.values())


def deploy_ready_sample(cluster: Cluster, sample: str, namespace: str, models: Models) -> str:
    """Apply a sample (as this cluster can run it) and wait until it is Ready; its name."""
    isvc = runnable_here(cluster, load_sample(sample, namespace, models))
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


class ReadyPodURLs:
    """The HTTP base URLs of an InferenceService's Ready pods: a load generator's endpoints.

    Locally a pod IP is a loopback address dialled directly. Elsewhere (kind) each Ready
    pod gets its own `kubectl port-forward` on 127.0.0.1, opened when the pod turns Ready
    and closed when it goes, so the load is spread over the pods just the same.
    """

    def __init__(self, cluster: Cluster, namespace: str, name: str) -> None:
        self.cluster, self.namespace, self.name = cluster, namespace, name
        self._forwards: dict[str, tuple[contextlib.ExitStack, str]] = {}

    def __call__(self) -> list[str]:
        pods = {
            p["metadata"]["name"]: p for p in self.cluster.ready_pods(self.namespace, self.name)
        }
        if self.cluster.is_local:
            return [f"http://{p['status']['podIP']}:8000" for p in pods.values()]
        for gone in set(self._forwards) - set(pods):
            self._forwards.pop(gone)[0].close()
        for pod_name, pod in pods.items():
            if pod_name in self._forwards:
                continue
            stack = contextlib.ExitStack()
            kubectl = Kubectl(self.cluster.kubectl_binary, self.cluster.kubeconfig)
            try:
                http, _ = stack.enter_context(kubectl.pod_endpoints(pod))
            except KubectlError:  # the pod went meanwhile: the next call sees it gone
                stack.close()
                continue
            self._forwards[pod_name] = (stack, f"http://{http}")
        return [self._forwards[n][1] for n in pods if n in self._forwards]

    def close(self) -> None:
        for stack, _ in self._forwards.values():
            stack.close()
        self._forwards.clear()

    def __enter__(self) -> ReadyPodURLs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def infer_body(batch: int = 1) -> dict[str, Any]:
    """An Open Inference Protocol JSON request for the test MLP."""
    from kinfer_dev.runtime import testmodels

    data = testmodels.sample_input(batch=batch)
    return {
        "inputs": [
            {
                "name": testmodels.INPUT_NAME,
                "shape": list(data.shape),
                "datatype": "FP32",
                "data": data.flatten().tolist(),
            }
        ]
    }


def infer_both_protocols(
    http_url: str,
    grpc_url: str,
    model: str,
    batch: Any,
    tensors: tuple[str, str] = ("input", "output"),
) -> tuple[Any, Any]:
    """One inference over HTTP (binary tensors) and one over gRPC, with the real tritonclient
    (`tensors`: the model's input and output names)."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    input_name, output_name = tensors
    http = httpclient.InferenceServerClient(http_url, network_timeout=60)
    tensor = httpclient.InferInput(input_name, list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=True)
    http_out = http.infer(model, [tensor]).as_numpy(output_name)
    http.close()
    grpc = grpcclient.InferenceServerClient(grpc_url)
    grpc_tensor = grpcclient.InferInput(input_name, list(batch.shape), "FP32")
    grpc_tensor.set_data_from_numpy(batch)
    grpc_out = grpc.infer(model, [grpc_tensor], client_timeout=60).as_numpy(output_name)
    grpc.close()
    return http_out, grpc_out
