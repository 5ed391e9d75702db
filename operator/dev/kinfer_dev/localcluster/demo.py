"""`kinfer cluster demo` (`make demo`): cluster, kinfer, a tiered autoscaled model on GPU nodes,
real inference, then a load spike that shows the tier step down, the pods scale out and the tier
come back (demo_spike.py), ending with a timeline plot, status.slo and the failed requests."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kinfer_dev.localcluster.config import ClusterConfig
from kinfer_dev.localcluster.demo_spike import COLD_START_S, SpikePlan
from kinfer_dev.localcluster.kubectl import Kubectl, KubectlError

NAMESPACE = "kinfer-demo"
NAME = "demo-mlp"
MODEL = "mlp"
STEPS = 7
MAX_REPLICAS = 3
TIMELINE_FILE = "demo-timeline.png"


class DemoError(RuntimeError):
    """A step failed; the message says which and why."""


def _step(number: int, text: str) -> None:
    print(f"\n[{number}/{STEPS}] {text}", flush=True)


def crd_path() -> Path:
    """crds/ of the source tree (the demo runs from a checkout: `make demo`)."""
    import kinfer

    path = Path(kinfer.__file__).resolve().parents[2] / "crds"
    if not path.is_dir():
        raise DemoError(f"no crds/ next to the kinfer package ({path}); run from a checkout")
    return path


def inference_service(
    tier_uris: dict[str, str], gpu_product: str | None, plan: SpikePlan, cold_start_s: float
) -> dict[str, Any]:
    """The demo's InferenceService: the heavy test MLP on kinfer-ort-server in three precision
    tiers, one GPU per replica, autoscaled on the spike plan's p95 and QPS targets."""
    from kinfer_dev.localcluster.config import ANNOTATION_COLD_START_S
    from kinfer_dev.localcluster.demo_spike import REQUEST_BATCH

    resources: dict[str, Any] = {"gpus": 1, "cpu": "1", "memory": "1Gi"}
    if gpu_product:
        resources["gpuProduct"] = gpu_product
    metadata: dict[str, Any] = {"name": NAME, "namespace": NAMESPACE}
    if cold_start_s > 0:
        metadata["annotations"] = {ANNOTATION_COLD_START_S: str(cold_start_s)}
    return {
        "apiVersion": "kinfer.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": metadata,
        "spec": {
            "runtime": "onnxruntime",
            "model": {"name": MODEL},
            "precision": {
                "tiers": [{"name": tier, "storageUri": uri} for tier, uri in tier_uris.items()],
                "dwellSeconds": 10,
            },
            "resources": resources,
            # One request is one full batch: the server never merges two, so a pod's capacity
            # is 1 / service time, as a GPU's would be.
            "batching": {"maxBatchSize": REQUEST_BATCH, "maxQueueDelayMicroseconds": 0},
            "replicas": 1,
            "scaling": {
                "minReplicas": 1,
                "maxReplicas": plan.max_replicas,
                "targetLatencyP95Ms": plan.target_latency_p95_ms,
                "targetQPSPerReplica": plan.target_qps_per_replica,
                "periodSeconds": 5,
                "metricsWindowSeconds": 15,
            },
        },
    }


@dataclass
class Outcome:
    """What the demo's last line reports: the failed requests (None: none were sent); and the
    spike's phases that did not happen."""

    failed_requests: int | None = None
    missing: list[str] = field(default_factory=list)


def run(config: ClusterConfig, timeout_s: float = 600.0, spike: bool = True) -> int:
    """The whole demo; its last line is `failed requests: N` once requests were sent."""
    started = time.monotonic()
    outcome = Outcome()
    code = 1
    try:
        _run(config, timeout_s, spike, outcome)
        if outcome.failed_requests:
            raise DemoError(f"{outcome.failed_requests} requests failed")
        code = 0
    except (DemoError, KubectlError) as error:
        print(f"\nDEMO FAILED after {time.monotonic() - started:.0f}s: {error}", flush=True)
    except Exception as error:  # the demo's promise: a clear verdict, never a bare trace
        print(f"\nDEMO FAILED after {time.monotonic() - started:.0f}s: {error!r}", flush=True)
    else:
        print(f"\nDEMO OK in {time.monotonic() - started:.0f}s", flush=True)
    if outcome.failed_requests is not None:
        print(f"failed requests: {outcome.failed_requests}", flush=True)
    return code


@dataclass
class Setup:
    """The cluster the demo runs on: how to reach it and where the demo keeps its files."""

    kubeconfig: Path
    kubectl_binary: str
    work_dir: Path
    prometheus_url: str | None
    external: bool


def _run(config: ClusterConfig, timeout_s: float, spike: bool, outcome: Outcome) -> None:
    from kinfer_dev.localcluster.processes import ProcessTable

    setup = prepare_cluster(config)
    kubectl = Kubectl(setup.kubectl_binary, setup.kubeconfig)
    setup.work_dir.mkdir(parents=True, exist_ok=True)
    # The operator and model store outlive this command (the cluster stays up):
    # recorded with the cluster's processes, `kinfer cluster down` stops them.
    processes = ProcessTable(setup.kubeconfig.parent)

    _step(2, "installing kinfer: the CRD and the operator (`kinfer run`, a local process)")
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd_path()))
    kubectl("wait", "--for=condition=Established", "crd/inferenceservices.kinfer.dev")
    operator = start_operator(processes, kubectl, setup)

    _step(3, "building the test MLP (ONNX) in fp32, fp16 and int8, serving it on 127.0.0.1")
    models_dir = setup.work_dir / "models"
    tiers, store = serve_models(processes, models_dir, setup.work_dir)
    plan = size_spike(models_dir, tiers)
    print(f"spike sized on this machine: {plan.describe()}")

    gpu_product = first_gpu_product(kubectl)
    _step(4, f"applying InferenceService {NAMESPACE}/{NAME}: 3 tiers, autoscaled, 1 {gpu_product}")
    uris = {tier: f"{store.url}/{path}" for tier, path in tiers.items()}
    isvc = inference_service(uris, gpu_product, plan, COLD_START_S if spike else 0)
    recreate(kubectl, isvc)

    _step(5, f"waiting for it to become Ready (kubectl wait, up to {timeout_s:.0f}s)")
    wait_ready(kubectl, timeout_s)

    # The inference check comes after the spike (before it, its few requests would be measured
    # as the first tier's capacity), on every pod the spike left, back on the first tier.
    def infer() -> None:
        _step(7, "sending inference requests with tritonclient (HTTP and gRPC) to every pod")
        _infer(kubectl, models_dir, tiers)

    closing: list[str] = []
    if spike:
        _step(6, f"a load spike of {plan.rate_qps:.0f} QPS: the tier steps down, pods scale out")
        closing = _spike(setup, plan, list(tiers), outcome, then=infer)
    else:
        _step(6, "the load spike: skipped (SPIKE=0 / --no-spike)")
        infer()
    outcome.failed_requests = outcome.failed_requests or 0
    _explore(kubectl, setup, operator.pid, store.pid)
    # The demo ends with the timeline's path and status.slo (then its verdict and the failed
    # requests, from run()).
    if closing:
        print()
    for line in closing:
        print(line)
    if spike and outcome.missing:
        raise DemoError(f"the spike did not show {', '.join(outcome.missing)}")


def prepare_cluster(config: ClusterConfig) -> Setup:
    """Step 1: KUBECONFIG's cluster when it is a kinfer local cluster, else a local one."""
    from kinfer_dev.localcluster import build
    from kinfer_dev.localcluster.cluster import LocalCluster
    from kinfer_dev.localcluster.processes import StartupError

    external = os.environ.get("KUBECONFIG")
    if external:
        _step(1, f"using the cluster of KUBECONFIG={external}")
        kubeconfig = Path(external)
        kubectl_binary = shutil.which("kubectl") or str(build.bin_dir(config.cache_dir) / "kubectl")
        if not Path(kubectl_binary).exists():
            raise DemoError("KUBECONFIG is set but kubectl is not on PATH")
        state_file = kubeconfig.parent / "cluster.json"
        if not state_file.exists():
            # Network safety and reach: the demo's model is served on this
            # machine's 127.0.0.1, which a real cluster's pods cannot (and
            # must not) fetch from.
            raise DemoError(
                "KUBECONFIG names a cluster that is not kinfer's local cluster: its pods cannot "
                "fetch the demo model from this machine's 127.0.0.1. Install kinfer there "
                "(kubectl apply -k manifests/) and apply manifests/samples/ with a storageUri "
                "it can reach, or unset KUBECONFIG to use the local cluster"
            )
        local_state = json.loads(state_file.read_text())
        # A kinfer local cluster named by KUBECONFIG keeps the demo in its state dir.
        return Setup(
            kubeconfig,
            kubectl_binary,
            kubeconfig.parent / "demo",
            local_state["prometheus_url"],
            True,
        )
    _step(1, "starting kinfer's local cluster (the first run builds it from source)")
    try:
        state = LocalCluster(config, out=sys.stdout).up()
    except (StartupError, build.BuildError, FileNotFoundError) as error:
        raise DemoError(str(error)) from None
    return Setup(
        Path(state.kubeconfig),
        str(Path(state.bin_dir) / "kubectl"),
        config.state_dir / "demo",
        state.prometheus_url,
        False,
    )


def start_operator(processes: Any, kubectl: Kubectl, setup: Setup) -> Any:
    """The operator as a local process, its metrics on a loopback port the local Prometheus
    scrapes; one already running with its metrics served is kept."""
    from kinfer_dev.localcluster.processes import free_port, is_alive
    from kinfer_dev.localcluster.prometheus import write_operator_target

    operator = processes.get("operator")
    port = _metrics_port(operator.argv) if operator is not None and is_alive(operator) else None
    if port is not None:
        print(f"operator already running (pid {operator.pid})")
    else:
        if operator is not None:
            processes.stop("operator")  # an older demo's, without its metrics served
        port = free_port()
        argv = [sys.executable, "-m", "kinfer", "run", f"--kubeconfig={setup.kubeconfig}"]
        argv += [f"--metrics-port={port}", "--metrics-address=127.0.0.1"]
        if setup.prometheus_url:
            argv.append(f"--prometheus-url={setup.prometheus_url}")
        # KUBECONFIG too: kopf's own login reads it from the environment.
        operator = processes.start("operator", argv, env=kubectl.env)
        print(f"operator started (pid {operator.pid}, log {operator.log})")
    write_operator_target(setup.kubeconfig.parent, port)
    print(f"operator metrics: http://127.0.0.1:{port}/metrics (scraped by the local Prometheus)")
    return operator


def _metrics_port(argv: list[str]) -> int | None:
    """The --metrics-port a recorded operator was started with (None: not served)."""
    for arg in argv:
        if arg.startswith("--metrics-port="):
            port = int(arg.split("=", 1)[1])
            return port or None
    return None


@dataclass
class Store:
    url: str
    pid: int


def serve_models(processes: Any, models_dir: Path, work_dir: Path) -> tuple[dict[str, str], Store]:
    """Step 3: the heavy test MLP's tiers, served read-only on 127.0.0.1 by a recorded process."""
    from kinfer_dev.localcluster.demo_spike import HEAVY
    from kinfer_dev.localcluster.modelstore import build_test_models
    from kinfer_dev.localcluster.processes import free_port, http_ok, is_alive, wait_until

    tiers = build_test_models(models_dir, MODEL, shape=HEAVY)
    store = processes.get("model-store")
    if store is None or not is_alive(store):
        port = free_port()
        store = processes.start(
            "model-store",
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
            cwd=models_dir,
        )
        store_url = f"http://127.0.0.1:{port}"
        (work_dir / "model-store-url").write_text(store_url)
    else:
        store_url = (work_dir / "model-store-url").read_text().strip()
    wait_until("the model store", lambda: http_ok(f"{store_url}/{tiers['fp32']}"), 30, record=store)
    for tier, path in tiers.items():
        print(f"model {tier}: {store_url}/{path}")
    return tiers, Store(store_url, store.pid)


def size_spike(models_dir: Path, tiers: dict[str, str]) -> SpikePlan:
    from kinfer_dev.localcluster.demo_spike import plan_spike, service_time_ms

    fp32_ms = service_time_ms(models_dir / tiers["fp32"])
    int8_ms = service_time_ms(models_dir / tiers["int8"])
    return plan_spike(fp32_ms, int8_ms, MAX_REPLICAS)


def recreate(kubectl: Kubectl, isvc: dict[str, Any]) -> None:
    """Step 4: a fresh InferenceService (an earlier demo's goes first: the spike starts from
    one replica on the first tier)."""
    kubectl("create", "namespace", NAMESPACE, check=False)
    kubectl(
        "delete", "kisvc", NAME, "-n", NAMESPACE, "--ignore-not-found", "--wait=true",
        "--timeout=120s", timeout_s=150,
    )  # fmt: skip
    print(yaml.safe_dump(isvc, sort_keys=False).rstrip())
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump(isvc))


def wait_ready(kubectl: Kubectl, timeout_s: float) -> None:
    waited = time.monotonic()
    result = kubectl(
        "wait",
        "--for=condition=Ready",
        f"kisvc/{NAME}",
        "-n",
        NAMESPACE,
        f"--timeout={int(timeout_s)}s",
        check=False,
        timeout_s=timeout_s + 30,
    )
    if result.returncode != 0:
        kubectl.show("get", "kisvc,pods", "-n", NAMESPACE, "-o", "wide")
        raise DemoError(f"{NAME} did not become Ready: {result.stderr.strip()}")
    print(f"Ready after {time.monotonic() - waited:.0f}s")


def _spike(
    setup: Setup, plan: SpikePlan, tiers: list[str], outcome: Outcome, then: Callable[[], None]
) -> list[str]:
    """Step 6: the spike, then `then` (while every pod still runs); returns what the demo ends
    with (the timeline PNG's path and status.slo). Its failed requests and the phases it did
    not show go into `outcome`."""
    from kinfer.observability.plot import markers_from_events, write_png
    from kinfer_dev.localcluster import demo_spike

    service = demo_spike.DemoService(setup.kubeconfig, NAMESPACE, NAME)
    wait_first_tier(service, tiers[0])
    result = demo_spike.run_spike(service, setup.prometheus_url, plan, MODEL, tiers[0])
    outcome.failed_requests = result.failed
    outcome.missing = result.watch.missing()
    print(f"load: {result.sent} requests sent, {result.ok} answered, {result.failed} failed")
    for error in result.errors[:3]:
        print(f"  e.g. {error}")
    then()
    timeline = demo_spike.timeline_of_samples(
        f"{NAMESPACE}/{NAME}",
        result.samples,
        markers_from_events(service.events()),
        plan.target_latency_p95_ms,
        tiers,
        result.started_s,
        result.ended_s,
    )
    path = setup.work_dir / TIMELINE_FILE
    write_png(timeline, path)
    print("waiting for status.slo to count the spike (the operator writes it with its status)")
    return [f"timeline: {path}", *demo_spike.slo_summary(demo_spike.wait_for_slo(service))]


def wait_first_tier(service: Any, first: str, timeout_s: float = 90.0) -> None:
    """The control loop writes status.activeTier once the Ready pods serve the first tier."""
    deadline = time.monotonic() + timeout_s
    while (service.get().get("status") or {}).get("activeTier") != first:
        if time.monotonic() > deadline:
            raise DemoError(f"status.activeTier did not become {first} within {timeout_s:.0f}s")
        time.sleep(1.0)


def _explore(kubectl: Kubectl, setup: Setup, operator_pid: int, store_pid: int) -> None:
    print()
    kubectl.show("get", "nodes", "-L", "nvidia.com/gpu.product,nvidia.com/gpu.count")
    kubectl.show("get", "kisvc,deployments,pods", "-n", NAMESPACE, "-o", "wide")
    status = json.loads(kubectl("get", "kisvc", NAME, "-n", NAMESPACE, "-o", "json").stdout)
    print("status:")
    shown = {k: v for k, v in (status.get("status") or {}).items() if k != "autoscaling"}
    print(yaml.safe_dump(shown, sort_keys=False).rstrip())
    from kinfer_dev.localcluster.cli import kinfer_command

    kinfer = kinfer_command()
    prometheus_url = setup.prometheus_url
    kubectl_dir = Path(setup.kubectl_binary).parent
    plot = (
        f"  {kinfer} plot {NAME} -n {NAMESPACE} --since 15m --prometheus-url {prometheus_url}"
        f" --kubeconfig {setup.kubeconfig}   # the timeline from Prometheus\n"
        if prometheus_url
        else ""
    )
    print(
        "\nThe cluster stays up so you can explore it:\n"
        f"  export KUBECONFIG=$({kinfer} cluster kubeconfig)   # {setup.kubeconfig}\n"
        f"  export PATH={kubectl_dir}:$PATH   # kubectl {_kubectl_version()}\n"
        "  kubectl get kisvc -A\n"
        f"  kubectl describe kisvc/{NAME} -n {NAMESPACE}   # conditions, scale and tier Events\n"
        f"  kubectl logs deployment/{NAME} -n {NAMESPACE}\n"
        + plot
        + (f"  Prometheus: {prometheus_url}\n" if prometheus_url else "")
        + "Tear down:\n"
        + (f"  {kinfer} cluster down   (or: make cluster-down)" if not setup.external else "")
        + (
            f"  kubectl delete namespace {NAMESPACE}; kill {operator_pid} {store_pid}"
            if setup.external
            else ""
        )
    )


def _kubectl_version() -> str:
    from kinfer_dev.localcluster.build import modules_dir

    go_mod = (modules_dir() / "kubernetes" / "go.mod").read_text()
    match = re.search(r"k8s.io/kubernetes (v[0-9.]+)", go_mod)
    return match.group(1) if match else ""


def first_gpu_product(kubectl: Kubectl) -> str | None:
    """A product some node offers whole GPUs of: where the demo's pod can land."""
    nodes = json.loads(kubectl("get", "nodes", "-o", "json").stdout)["items"]
    for node in nodes:
        product = node["metadata"].get("labels", {}).get("nvidia.com/gpu.product")
        gpus = int(node["status"].get("allocatable", {}).get("nvidia.com/gpu", "0") or 0)
        if product and gpus > 0:
            return str(product)
    raise DemoError("no node offers nvidia.com/gpu; the demo needs a GPU node")


def _ready_pods(kubectl: Kubectl) -> list[dict[str, Any]]:
    listed = kubectl(
        "get", "pods", "-n", NAMESPACE, "-l", f"kinfer.dev/inferenceservice={NAME}", "-o", "json"
    )
    return [
        pod
        for pod in json.loads(listed.stdout)["items"]
        if pod["status"].get("podIP")
        and not pod["metadata"].get("deletionTimestamp")
        and any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in pod["status"].get("conditions") or []
        )
    ]


def _infer(kubectl: Kubectl, models_dir: Path, tiers: dict[str, str]) -> None:
    """20 HTTP and 1 gRPC requests to each Ready pod, answers checked against onnxruntime's on
    the tier the pod serves (its model version, asked before and after the requests)."""
    import numpy as np

    from kinfer_dev.runtime import testmodels

    ready = _ready_pods(kubectl)
    if not ready:
        raise DemoError("no Ready pod to send requests to")
    batch = testmodels.sample_input(batch=4)
    names = list(tiers)
    expected = {t: testmodels.run_reference(models_dir / p, batch) for t, p in tiers.items()}
    for pod in ready:
        with kubectl.pod_endpoints(pod) as (http_url, grpc_url):
            tier, http_out, grpc_out, latencies = _ask(http_url, grpc_url, batch, names)
        for protocol, out in (("HTTP", http_out), ("gRPC", grpc_out)):
            if not np.allclose(out, expected[tier], atol=1e-4, rtol=1e-4):
                raise DemoError(
                    f"{protocol} answer of {pod['metadata']['name']} ({tier}) differs from"
                    " onnxruntime's"
                )
        where = f"{pod['status']['podIP']} on {pod['spec']['nodeName']}"
        print(
            f"pod {pod['metadata']['name']} ({where}, {tier}): "
            f"20 HTTP + 1 gRPC requests of batch {batch.shape[0]}, p50 "
            f"{sorted(latencies)[len(latencies) // 2]:.1f} ms; answers equal onnxruntime's"
        )
    row = ", ".join(f"{v:.4f}" for v in http_out[0][:6])
    width = http_out.shape[1]
    print(f"sample prediction (input row 0 -> first 6 of {width} outputs): [{row}, ...]")


def _ask(
    http_url: str, grpc_url: str, batch: Any, tier_names: list[str], tries: int = 3
) -> tuple[str, Any, Any, list[float]]:
    """The pod's tier and its answers; asked again when the tier switched meanwhile."""
    from kinfer.runtime.switch import active_version

    for _ in range(tries):
        before = active_version(grpc_url, MODEL)
        http_out, grpc_out, latencies = _requests(http_url, grpc_url, batch)
        if before is not None and active_version(grpc_url, MODEL) == before:
            return tier_names[before - 1], http_out, grpc_out, latencies
    raise DemoError(f"the pod at {grpc_url} kept switching tiers while it was asked")


def _requests(http_url: str, grpc_url: str, batch: Any) -> tuple[Any, Any, list[float]]:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    http = httpclient.InferenceServerClient(http_url, network_timeout=60)
    latencies = []
    for _ in range(20):
        tensor = httpclient.InferInput("input", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        began = time.perf_counter()
        http_out = http.infer(MODEL, [tensor]).as_numpy("output")
        latencies.append((time.perf_counter() - began) * 1000)
    http.close()
    grpc = grpcclient.InferenceServerClient(grpc_url)
    grpc_tensor = grpcclient.InferInput("input", list(batch.shape), "FP32")
    grpc_tensor.set_data_from_numpy(batch)
    grpc_out = grpc.infer(MODEL, [grpc_tensor], client_timeout=60).as_numpy("output")
    grpc.close()
    return http_out, grpc_out, latencies
