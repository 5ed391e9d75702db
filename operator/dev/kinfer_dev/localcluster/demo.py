"""`kinfer cluster demo` (`make demo`): cluster, kinfer, a model on a GPU node, real inference."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from kinfer_dev.localcluster.config import ClusterConfig
from kinfer_dev.localcluster.kubectl import Kubectl, KubectlError

NAMESPACE = "kinfer-demo"
NAME = "demo-mlp"
MODEL = "mlp"
STEPS = 6


class DemoError(RuntimeError):
    """A step failed; the message says which and why."""


def _step(number: int, text: str) -> None:
    print(f"\n[{number}/{STEPS}] {text}", flush=True)


def _crd_path() -> Path:
    """crds/ of the source tree (the demo runs from a checkout: `make demo`)."""
    import kinfer

    path = Path(kinfer.__file__).resolve().parents[2] / "crds"
    if not path.is_dir():
        raise DemoError(f"no crds/ next to the kinfer package ({path}); run from a checkout")
    return path


def inference_service(model_uri: str, gpu_product: str | None) -> dict[str, Any]:
    """The demo's InferenceService: the test MLP on Triton, one GPU per replica."""
    resources: dict[str, Any] = {"gpus": 1, "cpu": "1", "memory": "2Gi"}
    if gpu_product:
        resources["gpuProduct"] = gpu_product
    return {
        "apiVersion": "kinfer.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "runtime": "triton",
            "model": {"name": MODEL, "format": "onnx", "storageUri": model_uri},
            "resources": resources,
            "replicas": 1,
        },
    }


def run(config: ClusterConfig, timeout_s: float = 600.0) -> int:
    started = time.monotonic()
    try:
        _run(config, timeout_s)
    except (DemoError, KubectlError) as error:
        print(f"\nDEMO FAILED after {time.monotonic() - started:.0f}s: {error}", flush=True)
        return 1
    except Exception as error:  # the demo's promise: a clear verdict, never a bare trace
        print(f"\nDEMO FAILED after {time.monotonic() - started:.0f}s: {error!r}", flush=True)
        return 1
    print(f"\nDEMO OK in {time.monotonic() - started:.0f}s", flush=True)
    return 0


def _run(config: ClusterConfig, timeout_s: float) -> None:
    from kinfer_dev.localcluster import build
    from kinfer_dev.localcluster.cluster import LocalCluster
    from kinfer_dev.localcluster.processes import ProcessTable, StartupError, http_ok, wait_until

    external = os.environ.get("KUBECONFIG")
    cluster = LocalCluster(config, out=sys.stdout)
    if external:
        _step(1, f"using the cluster of KUBECONFIG={external}")
        kubeconfig = Path(external)
        kubectl_binary = shutil.which("kubectl") or str(build.bin_dir(config.cache_dir) / "kubectl")
        if not Path(kubectl_binary).exists():
            raise DemoError("KUBECONFIG is set but kubectl is not on PATH")
        state_file = kubeconfig.parent / "cluster.json"
        local_state = json.loads(state_file.read_text()) if state_file.exists() else None
        # A kinfer local cluster named by KUBECONFIG keeps the demo in its state dir.
        work_dir = kubeconfig.parent / "demo"
        prometheus_url = local_state["prometheus_url"] if local_state else None
        if local_state is None:
            # Network safety and reach: the demo's model is served on this
            # machine's 127.0.0.1, which a real cluster's pods cannot (and
            # must not) fetch from.
            raise DemoError(
                "KUBECONFIG names a cluster that is not kinfer's local cluster: its pods cannot "
                "fetch the demo model from this machine's 127.0.0.1. Install kinfer there "
                "(kubectl apply -k manifests/) and apply manifests/samples/ with a storageUri "
                "it can reach, or unset KUBECONFIG to use the local cluster"
            )
    else:
        _step(1, "starting kinfer's local cluster (the first run builds it from source)")
        try:
            state = cluster.up()
        except (StartupError, build.BuildError, FileNotFoundError) as error:
            raise DemoError(str(error)) from None
        kubeconfig = Path(state.kubeconfig)
        kubectl_binary = str(Path(state.bin_dir) / "kubectl")
        local_state = json.loads((config.state_dir / "cluster.json").read_text())
        work_dir = config.state_dir / "demo"
        prometheus_url = state.prometheus_url
    kubectl = Kubectl(kubectl_binary, kubeconfig)
    work_dir.mkdir(parents=True, exist_ok=True)
    # The operator and model store outlive this command (the cluster stays up):
    # recorded with the cluster's processes, `kinfer cluster down` stops them.
    processes = ProcessTable(kubeconfig.parent)

    _step(2, "installing kinfer: the CRD and the operator (`kinfer run`, a local process)")
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(_crd_path()))
    kubectl("wait", "--for=condition=Established", "crd/inferenceservices.kinfer.dev")
    operator = processes.get("operator")
    from kinfer_dev.localcluster.processes import is_alive

    if operator is None or not is_alive(operator):
        argv = [sys.executable, "-m", "kinfer", "run", f"--kubeconfig={kubeconfig}"]
        if prometheus_url:
            argv.append(f"--prometheus-url={prometheus_url}")
        # KUBECONFIG too: kopf's own login reads it from the environment.
        operator = processes.start("operator", argv, env=kubectl.env)
        print(f"operator started (pid {operator.pid}, log {operator.log})")
    else:
        print(f"operator already running (pid {operator.pid})")

    _step(3, "building the test model (an MLP in ONNX) and serving it on 127.0.0.1")
    from kinfer_dev.localcluster.modelstore import build_test_models
    from kinfer_dev.localcluster.processes import free_port

    models_dir = work_dir / "models"
    tiers = build_test_models(models_dir)
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
    model_uri = f"{store_url}/{tiers['fp32']}"
    print(f"model: {model_uri}")

    gpu_product = _first_gpu_product(kubectl)
    _step(4, f"applying InferenceService {NAMESPACE}/{NAME} (Triton, 1 GPU: {gpu_product})")
    kubectl("create", "namespace", NAMESPACE, check=False)
    isvc = inference_service(model_uri, gpu_product)
    print(yaml.safe_dump(isvc, sort_keys=False).rstrip())
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump(isvc))

    _step(5, f"waiting for it to become Ready (kubectl wait, up to {timeout_s:.0f}s)")
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

    _step(6, "sending inference requests with tritonclient (HTTP and gRPC)")
    _infer(kubectl, models_dir / tiers["fp32"])

    print()
    kubectl.show("get", "nodes", "-L", "nvidia.com/gpu.product,nvidia.com/gpu.count")
    kubectl.show("get", "kisvc,deployments,pods", "-n", NAMESPACE, "-o", "wide")
    status = json.loads(kubectl("get", "kisvc", NAME, "-n", NAMESPACE, "-o", "json").stdout)
    print("status:")
    print(yaml.safe_dump(status.get("status", {}), sort_keys=False).rstrip())
    from kinfer_dev.localcluster.cli import kinfer_command

    kinfer = kinfer_command()
    print(
        "\nThe cluster stays up so you can explore it:\n"
        f"  export KUBECONFIG=$({kinfer} cluster kubeconfig)   # {kubeconfig}\n"
        f"  export PATH={Path(kubectl_binary).parent}:$PATH   # kubectl {_kubectl_version()}\n"
        "  kubectl get kisvc -A\n"
        f"  kubectl logs deployment/{NAME} -n {NAMESPACE}\n"
        f"  kubectl scale kisvc/{NAME} -n {NAMESPACE} --replicas=2\n"
        + (f"  Prometheus: {prometheus_url}\n" if prometheus_url else "")
        + "Tear down:\n"
        + (f"  {kinfer} cluster down   (or: make cluster-down)" if not external else "")
        + (
            f"  kubectl delete namespace {NAMESPACE}; kill {operator.pid} {store.pid}"
            if external
            else ""
        )
    )


def _kubectl_version() -> str:
    from kinfer_dev.localcluster.build import modules_dir

    go_mod = (modules_dir() / "kubernetes" / "go.mod").read_text()
    match = re.search(r"k8s.io/kubernetes (v[0-9.]+)", go_mod)
    return match.group(1) if match else ""


def _first_gpu_product(kubectl: Kubectl) -> str | None:
    """A product some node offers whole GPUs of: where the demo's pod can land."""
    nodes = json.loads(kubectl("get", "nodes", "-o", "json").stdout)["items"]
    for node in nodes:
        product = node["metadata"].get("labels", {}).get("nvidia.com/gpu.product")
        gpus = int(node["status"].get("allocatable", {}).get("nvidia.com/gpu", "0") or 0)
        if product and gpus > 0:
            return str(product)
    raise DemoError("no node offers nvidia.com/gpu; the demo needs a GPU node")


def _infer(kubectl: Kubectl, model_path: Path) -> None:
    import numpy as np
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    from kinfer_dev.runtime import testmodels

    pods = json.loads(
        kubectl(
            "get",
            "pods",
            "-n",
            NAMESPACE,
            "-l",
            f"kinfer.dev/inferenceservice={NAME}",
            "-o",
            "json",
        ).stdout
    )["items"]
    ready = [
        p for p in pods if p["status"].get("podIP") and not p["metadata"].get("deletionTimestamp")
    ]
    if not ready:
        raise DemoError("no pod with an IP to send requests to")
    batch = testmodels.sample_input(batch=4)
    expected = testmodels.run_reference(model_path, batch)
    for pod in ready:
        with kubectl.pod_endpoints(pod) as (http_url, grpc_url):
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
        for protocol, out in (("HTTP", http_out), ("gRPC", grpc_out)):
            if not np.allclose(out, expected, atol=1e-4, rtol=1e-4):
                raise DemoError(
                    f"{protocol} answer of {pod['metadata']['name']} differs from onnxruntime"
                )
        where = f"{pod['status']['podIP']} on {pod['spec']['nodeName']}"
        print(
            f"pod {pod['metadata']['name']} ({where}): "
            f"20 HTTP + 1 gRPC requests of batch {batch.shape[0]}, p50 "
            f"{sorted(latencies)[len(latencies) // 2]:.1f} ms; answers equal onnxruntime's"
        )
        row = ", ".join(f"{v:.4f}" for v in http_out[0][:6])
        width = http_out.shape[1]
        print(f"sample prediction (input row 0 -> first 6 of {width} outputs): [{row}, ...]")
