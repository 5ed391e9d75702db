"""kubectl scale, deletion through the real garbage collector, pod restarts and metrics."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import pytest

from e2e.harness import (
    ISVC_LABEL,
    Cluster,
    Models,
    Operator,
    condition_of,
    deploy_ready_sample,
    infer_both_protocols,
    load_sample,
    pod_endpoint,
    prometheus_query,
    runnable_here,
    wait_for,
)
from kinfer_dev.runtime import testmodels

CHILD_KINDS = ("deployments", "replicasets", "services", "configmaps", "pods")


def _children(cluster: Cluster, namespace: str, name: str) -> list[dict]:
    return cluster.items(",".join(CHILD_KINDS), "-n", namespace, "-l", f"{ISVC_LABEL}={name}")


def _status(cluster: Cluster, namespace: str, name: str) -> dict:
    return cluster.get("kisvc", name, "-n", namespace).get("status") or {}


@pytest.mark.kind_covered
def test_kubectl_scale_is_honoured(
    cluster: Cluster, operator: Operator, models: Models, namespace: str
) -> None:
    name = deploy_ready_sample(cluster, "onnxruntime-cpu.yaml", namespace, models)

    cluster.kubectl("scale", f"kisvc/{name}", "-n", namespace, "--replicas=3")
    wait_for(
        "3 ready replicas after kubectl scale --replicas=3",
        lambda: (
            _status(cluster, namespace, name).get("readyReplicas") == 3
            and len(cluster.ready_pods(namespace, name)) == 3
        ),
        300,
    )
    deployment = cluster.get("deployment", name, "-n", namespace)
    assert deployment["spec"]["replicas"] == 3

    cluster.kubectl("scale", f"kisvc/{name}", "-n", namespace, "--replicas=1")
    wait_for(
        "1 pod after kubectl scale --replicas=1",
        lambda: (
            len(cluster.pods(namespace, name)) == 1
            and _status(cluster, namespace, name).get("readyReplicas") == 1
        ),
        300,
    )


def test_a_spec_the_api_server_refuses_is_reported_and_its_fix_applies(
    cluster: Cluster, operator: Operator, models: Models, namespace: str
) -> None:
    """A spec the CRD admits but whose Deployment the API server refuses (an env fieldRef
    to a field that does not exist) lands in SpecValid/Ready with the spec's field and an
    Event; pod churn on the old Deployment never reports the refused generation Ready; the
    fixed spec rolls out."""
    name = deploy_ready_sample(cluster, "onnxruntime-cpu.yaml", namespace, models)
    bad_env = [{"name": "WHERE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nowhere"}}}]
    cluster.kubectl(
        "patch", f"kisvc/{name}", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"env": bad_env}}),
    )  # fmt: skip

    def refused() -> dict | None:
        isvc = cluster.get("kisvc", name, "-n", namespace)
        spec_valid = condition_of(isvc, "SpecValid") or {}
        generation = isvc["metadata"]["generation"]
        if (
            spec_valid.get("reason") == "RejectedByAPIServer"
            and spec_valid.get("observedGeneration") == generation
            and isvc["status"].get("observedGeneration") == generation
        ):
            return isvc
        return None

    isvc = wait_for("SpecValid=False RejectedByAPIServer on the new generation", refused, 120)
    message = condition_of(isvc, "SpecValid")["message"]
    assert "spec.env" in message and f"Deployment {name}" in message, message
    assert "spec.nowhere" in message, message
    ready = condition_of(isvc, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "RejectedByAPIServer")
    events = cluster.items(
        "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}"
    )
    assert any(e.get("reason") == "RejectedByAPIServer" for e in events), events
    deployment = cluster.get("deployment", name, "-n", namespace)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert all(item["name"] != "WHERE" for item in container.get("env") or [])

    # The old Deployment's pod goes and comes back: its events must not report the refused
    # generation as Ready (kubectl wait would then succeed on a spec never applied).
    for pod in cluster.pods(namespace, name):
        cluster.kubectl("delete", "pod", pod["metadata"]["name"], "-n", namespace, "--wait=false")
    wait_for(
        "the old Deployment's replacement pod Ready",
        lambda: (
            cluster.get("deployment", name, "-n", namespace)["status"].get("readyReplicas") == 1
        ),
        300,
    )
    isvc = cluster.get("kisvc", name, "-n", namespace)
    assert condition_of(isvc, "Ready")["status"] == "False", isvc["status"]
    assert condition_of(isvc, "SpecValid")["reason"] == "RejectedByAPIServer", isvc["status"]

    good_env = [{"name": "WHERE", "value": "here"}]
    cluster.kubectl(
        "patch", f"kisvc/{name}", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"env": good_env}}),
    )  # fmt: skip
    cluster.wait_ready(namespace, name)
    isvc = cluster.get("kisvc", name, "-n", namespace)
    assert condition_of(isvc, "SpecValid")["status"] == "True", isvc["status"]
    container = cluster.get("deployment", name, "-n", namespace)["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert {"name": "WHERE", "value": "here"} in container["env"]


@pytest.mark.kind_covered
def test_a_model_that_cannot_be_fetched_is_said_on_the_inferenceservice(
    cluster: Cluster, operator: Operator, models: Models, namespace: str
) -> None:
    isvc = runnable_here(cluster, load_sample("onnxruntime-cpu.yaml", namespace, models))
    name = isvc["metadata"]["name"]
    good_uri = isvc["spec"]["model"]["storageUri"]
    isvc["spec"]["model"]["storageUri"] = models.base_url.rstrip("/") + "/missing/model.onnx"
    cluster.apply(isvc)

    def fetch_failed() -> dict | None:
        ready = condition_of(cluster.get("kisvc", name, "-n", namespace), "Ready") or {}
        return ready if ready.get("reason") == "ModelFetchFailed" else None

    ready = wait_for("Ready=False ModelFetchFailed", fetch_failed, 180)
    assert ready["status"] == "False"
    assert "init container fetch-model exited" in ready["message"], ready["message"]
    # rclone's own last words (a real kubelet passes them on under FallbackToLogsOnError).
    assert "not found" in ready["message"], ready["message"]
    # What the user sees on the pod too, as a kubelet would report it.
    [pod] = cluster.pods(namespace, name)
    [init] = pod["status"]["initContainerStatuses"]
    # A kubelet restarts a failed init container (with a back-off): the failure is the
    # current state, or the last one while the next try waits or runs.
    failed = init["state"].get("terminated") or (init.get("lastState") or {}).get("terminated")
    assert failed and failed["exitCode"] != 0, init
    events = cluster.items(
        "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}"
    )
    assert any(e.get("reason") == "ModelFetchFailed" for e in events), events

    cluster.kubectl(
        "patch", f"kisvc/{name}", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"model": {"storageUri": good_uri}}}),
    )  # fmt: skip
    cluster.wait_ready(namespace, name)


@pytest.mark.kind_covered
def test_delete_removes_every_child_through_the_garbage_collector(
    cluster: Cluster, operator: Operator, models: Models, namespace: str
) -> None:
    name = deploy_ready_sample(cluster, "onnxruntime-cpu.yaml", namespace, models)
    uid = cluster.get("kisvc", name, "-n", namespace)["metadata"]["uid"]
    children = _children(cluster, namespace, name)
    kinds = {c["kind"] for c in children}
    assert {"Deployment", "Service", "ConfigMap", "ReplicaSet", "Pod"} <= kinds
    for child in children:
        if child["kind"] in ("Deployment", "Service", "ConfigMap"):
            owners = child["metadata"].get("ownerReferences") or []
            assert [o["uid"] for o in owners if o.get("controller")] == [uid], child["metadata"]

    cluster.kubectl("delete", "kisvc", name, "-n", namespace, "--wait=true", "--timeout=120s")
    wait_for(
        f"every child of {name} gone",
        lambda: not _children(cluster, namespace, name),
        240,
    )


def test_kubectl_logs_shows_each_containers_output(
    cluster: Cluster, operator: Operator, models: Models, namespace: str
) -> None:
    name = deploy_ready_sample(cluster, "onnxruntime-cpu.yaml", namespace, models)
    (pod,) = cluster.ready_pods(namespace, name)
    pod_name = pod["metadata"]["name"]
    # The model server's own start-up line, through the API server and the node.
    logs = cluster.kubectl("logs", pod_name, "-n", namespace).stdout
    assert "ready=True: models" in logs, logs
    last = cluster.kubectl("logs", pod_name, "-n", namespace, "--tail=1").stdout
    assert len(last.splitlines()) == 1 and last.strip() in logs
    for init in pod["spec"].get("initContainers") or []:
        # The model fetch (rclone) has finished; its log is there, even if empty.
        cluster.kubectl("logs", pod_name, "-n", namespace, "-c", init["name"])
    wrong = cluster.kubectl("logs", pod_name, "-n", namespace, "-c", "no-such", check=False)
    assert wrong.returncode != 0 and "no-such" in wrong.stderr
    if (cluster.kubeconfig.parent / "cluster.json").exists():
        # What the local pod runner cannot answer truthfully, it refuses, saying why.
        stamped = cluster.kubectl("logs", pod_name, "-n", namespace, "--timestamps", check=False)
        assert stamped.returncode != 0 and "no per-line timestamps" in stamped.stderr
        # Not restarted: no previous run to show.
        never = cluster.kubectl("logs", pod_name, "-n", namespace, "--previous", check=False)
        assert never.returncode != 0 and "previous terminated container" in never.stderr


def _server_record(cluster: Cluster, pod: dict) -> dict:
    """The pod runner's record of a pod's server process (local cluster only)."""
    state_dir = cluster.kubeconfig.parent
    meta = pod["metadata"]
    work = state_dir / "pods" / f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}"
    return json.loads((work / "server.json").read_text())


def _accepts(address: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((address, port)) == 0


def test_a_dead_server_is_restarted_and_the_restart_is_visible(
    cluster: Cluster, operator: Operator, models: Models, namespace: str
) -> None:
    if not (cluster.kubeconfig.parent / "cluster.json").exists():
        pytest.skip("needs kinfer's local cluster (its pod runner)")
    name = deploy_ready_sample(cluster, "onnxruntime-cpu.yaml", namespace, models)
    (pod,) = cluster.ready_pods(namespace, name)
    record = _server_record(cluster, pod)
    # The server is this suite's own process (started by the runner of the
    # cluster it brought up): kill it by its recorded PID, as a crash would.
    os.killpg(record["pid"], signal.SIGKILL)

    def restarted() -> bool:
        current = cluster.get("pod", pod["metadata"]["name"], "-n", namespace)
        statuses = current["status"].get("containerStatuses") or []
        return bool(statuses) and statuses[0]["restartCount"] >= 1 and statuses[0]["ready"]

    wait_for("restartCount >= 1 and Ready again", restarted, 180)
    cluster.wait_ready(namespace, name)
    # The killed run's log is kept aside, as a kubelet keeps a terminated container's.
    pod_name = pod["metadata"]["name"]
    previous = cluster.kubectl("logs", pod_name, "-n", namespace, "--previous").stdout
    current = cluster.kubectl("logs", pod_name, "-n", namespace).stdout
    assert "ready=True: models" in previous and "ready=True: models" in current


def test_a_deleted_pods_server_stops(
    cluster: Cluster, operator: Operator, models: Models, namespace: str
) -> None:
    name = deploy_ready_sample(cluster, "onnxruntime-cpu.yaml", namespace, models)
    (pod,) = cluster.ready_pods(namespace, name)
    ip = pod["status"]["podIP"]
    if not ip.startswith("127."):
        pytest.skip("the pod's server is not a local process on this cluster")
    assert _accepts(ip, 8000)
    cluster.kubectl("delete", "pod", pod["metadata"]["name"], "-n", namespace, "--wait=false")
    wait_for(f"nothing listening on {ip}:8000", lambda: not _accepts(ip, 8000), 120)
    # The Deployment replaces it and the replacement serves.
    cluster.wait_ready(namespace, name)
    wait_for("a new ready pod", lambda: cluster.ready_pods(namespace, name), 180)


@pytest.mark.parametrize("sample", ["onnxruntime-cpu.yaml", "triton-gpu.yaml"])
def test_prometheus_scrapes_pods_with_namespace_and_inferenceservice_labels(
    cluster: Cluster, operator: Operator, models: Models, namespace: str, sample: str
) -> None:
    if not cluster.prometheus_url:
        pytest.skip("no Prometheus URL for this cluster (KINFER_PROMETHEUS_URL)")
    isvc = runnable_here(cluster, load_sample(sample, namespace, models))
    name = isvc["metadata"]["name"]
    runtime = isvc["spec"]["runtime"]
    cluster.apply(isvc)
    cluster.wait_ready(namespace, name)
    (pod,) = cluster.ready_pods(namespace, name)
    batch = testmodels.sample_input(batch=1)
    with pod_endpoint(cluster, pod) as (http_url, grpc_url):
        for _ in range(5):
            infer_both_protocols(http_url, grpc_url, isvc["spec"]["model"]["name"], batch)
    metric = {
        "onnxruntime": "kinfer_inference_requests_total",
        "triton": "nv_inference_request_success",
    }[runtime]
    selector = f'{metric}{{namespace="{namespace}",inferenceservice="{name}"}}'

    def series() -> list[dict]:
        found = prometheus_query(cluster.prometheus_url or "", selector)
        return [s for s in found if float(s["value"][1]) >= 10]

    found = wait_for(f"{selector} >= 10 in Prometheus", series, 120, interval_s=1)
    labels = found[0]["metric"]
    assert labels["pod"] == pod["metadata"]["name"]
    assert labels["runtime"] == runtime
    assert Path(labels["instance"].split(":")[0]).name.startswith("127.") or not cluster.is_local


def test_simulated_cold_start_keeps_a_running_pod_unready_without_a_server(
    cluster: Cluster, operator: Operator, models: Models, namespace: str
) -> None:
    if not (cluster.kubeconfig.parent / "cluster.json").exists():
        pytest.skip("needs kinfer's local cluster (its pod runner)")
    isvc = load_sample("onnxruntime-cpu.yaml", namespace, models)
    name = isvc["metadata"]["name"]
    # Long enough that the checks below land inside it on a loaded machine.
    isvc["metadata"]["annotations"] = {"kinfer.dev/simulated-cold-start-seconds": "40"}
    cluster.apply(isvc)

    def running() -> dict | None:
        pods = [p for p in cluster.pods(namespace, name) if p["status"].get("phase") == "Running"]
        return pods[0] if pods else None

    pod = wait_for("a Running pod", running, 120)
    ip = pod["status"]["podIP"]
    # The runner is waiting out the cold start: no server yet, so not Ready.
    assert not _accepts(ip, 8000)
    current = cluster.get("pod", pod["metadata"]["name"], "-n", namespace)
    assert (
        next(c["status"] for c in current["status"]["conditions"] if c["type"] == "Ready")
        == "False"
    )
    cluster.wait_ready(namespace, name, timeout_s=300)
    assert _accepts(ip, 8000)
