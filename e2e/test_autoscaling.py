"""Autoscaling on the real Prometheus and real model servers.

A bounded load step (loopback only) makes the operator scale out within a
bounded time, the load's end scales in after the quick window for a one-off
fall (a load that does not come back is not held for the whole window), a
rising load is scaled for ahead (the trend), and a stopped Prometheus holds
the replicas with a condition saying so.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from e2e.harness import (
    Cluster,
    Models,
    Operator,
    ReadyPodURLs,
    condition_of,
    infer_body,
    runnable_here,
    wait_for,
)
from kinfer_dev.runtime.loadgen import LoadGenerator

TARGET_QPS_PER_REPLICA = 15
LOAD_QPS = 50  # -> ceil(50 / 15) = 4 replicas, the maximum
# The ramp: 6 QPS more every 10 s, up to 96 QPS (ceil(96 / 15) = 7 replicas of 8).
RAMP_QPS_PER_STEP = 6
RAMP_STEP_S = 10
RAMP_STEPS = 16


def autoscaled(namespace: str, models: Models, name: str = "scaled") -> dict[str, Any]:
    return {
        "apiVersion": "kinfer.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "runtime": "onnxruntime",
            "model": {"name": "mlp", "storageUri": models.uri(models.tiers["fp32"])},
            "resources": {"cpu": "500m", "memory": "512Mi"},
            "replicas": 1,
            "scaling": {
                "minReplicas": 1,
                "maxReplicas": 4,
                "targetQPSPerReplica": TARGET_QPS_PER_REPLICA,
                "periodSeconds": 5,
                "metricsWindowSeconds": 20,
                # The window a recurring load is held for; a one-off fall (the step test's
                # end) is released after the quick one.
                "scaleDownStabilizationSeconds": 20,
                "quickScaleDownStabilizationSeconds": 20,
            },
        },
    }


def spec_replicas(cluster: Cluster, namespace: str, name: str) -> int:
    return int(cluster.get("kisvc", name, "-n", namespace)["spec"]["replicas"])


def last_metrics(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    status = cluster.get("kisvc", name, "-n", namespace).get("status", {})
    return status.get("autoscaling", {}).get("lastMetrics") or {}


def scaled_events(cluster: Cluster, namespace: str, name: str) -> list[str]:
    events = cluster.items(
        "events", "-n", namespace, "--field-selector", f"involvedObject.name={name},reason=Scaled"
    )
    return [event["message"] for event in events]


@contextmanager
def prometheus_paused(cluster: Cluster) -> Iterator[None]:
    """SIGSTOP the local cluster's Prometheus (queries hang, then time out), SIGCONT after."""
    from kinfer_dev.localcluster.processes import ProcessTable

    record = ProcessTable(Path(cluster.kubeconfig).parent).get("prometheus")
    assert record is not None, "the local cluster records no prometheus process"
    os.kill(record.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(record.pid, signal.SIGCONT)


@pytest.mark.kind_covered
def test_load_step_scales_out_then_in(
    cluster: Cluster, operator: Operator, models: Models, namespace: str
) -> None:
    if not cluster.prometheus_url:
        pytest.skip("no Prometheus for this cluster (set KINFER_PROMETHEUS_URL)")
    name = "scaled"
    isvc = autoscaled(namespace, models, name)
    # Longer than the scale-in wait below: only the quick window can release the pods in time.
    isvc["spec"]["scaling"]["scaleDownStabilizationSeconds"] = 900
    cluster.apply(runnable_here(cluster, isvc))
    cluster.wait_ready(namespace, name)
    assert spec_replicas(cluster, namespace, name) == 1

    urls = ReadyPodURLs(cluster, namespace, name)
    load = LoadGenerator(
        urls,
        "mlp",
        infer_body(),
        rate_qps=LOAD_QPS,
        max_duration_s=600,
        max_requests=LOAD_QPS * 600,
    )
    with urls, load:
        # Scale-out: metrics pipeline (2 s scrapes, 20 s window) + a 5 s period + pod start.
        wait_for(
            "scale-out to 4 replicas under load",
            lambda: spec_replicas(cluster, namespace, name) >= 4,
            timeout_s=180,
            interval_s=2,
        )
        cluster.wait_ready(namespace, name, timeout_s=180)
        isvc = cluster.get("kisvc", name, "-n", namespace)
        assert isvc["status"]["autoscaling"]["lastMetrics"]["qps"] > TARGET_QPS_PER_REPLICA
        assert any(" -> " in message for message in scaled_events(cluster, namespace, name))
        assert condition_of(isvc, "MetricsAvailable")["status"] == "True"
        # The servers' arrival-rate gauge, through the real Prometheus, is in the status.
        wait_for(
            "lastMetrics.qpsArriving under load",
            lambda: (
                (last_metrics(cluster, namespace, name).get("qpsArriving") or 0)
                > TARGET_QPS_PER_REPLICA
            ),
            timeout_s=90,
            interval_s=2,
        )
    assert load.result.ok > 0

    # Scale-in after the load ends: the fall is seen against the rate a window (20 s) ago, then
    # the 20 s quick window passes; the 900 s window would hold the pods past this wait.
    wait_for(
        "scale-in to 1 replica after the load",
        lambda: spec_replicas(cluster, namespace, name) == 1,
        timeout_s=240,
        interval_s=2,
    )
    scale_ins = [m for m in scaled_events(cluster, namespace, name) if "one-off fall" in m]
    assert scale_ins, scaled_events(cluster, namespace, name)


def decision_reason(cluster: Cluster, namespace: str, name: str) -> str:
    status = cluster.get("kisvc", name, "-n", namespace).get("status", {})
    return status.get("autoscaling", {}).get("reason") or ""


@pytest.mark.kind_covered
def test_a_ramp_is_scaled_for_ahead_of_the_load(
    cluster: Cluster, operator: Operator, models: Models, namespace: str
) -> None:
    # A rising load (a staircase of 6 QPS every 10 s: the 20 s rate climbs at every scrape) is
    # projected ahead by the trend, on the real Prometheus's per-pod series and timestamps.
    if not cluster.prometheus_url:
        pytest.skip("no Prometheus for this cluster (set KINFER_PROMETHEUS_URL)")
    name = "ramp"
    service = autoscaled(namespace, models, name)
    service["spec"]["scaling"]["maxReplicas"] = 8
    cluster.apply(runnable_here(cluster, service))
    cluster.wait_ready(namespace, name)
    projected = ""
    urls = ReadyPodURLs(cluster, namespace, name)
    for step in range(1, RAMP_STEPS + 1):
        rate = RAMP_QPS_PER_STEP * step
        load = LoadGenerator(
            urls,
            "mlp",
            infer_body(),
            rate_qps=rate,
            max_duration_s=RAMP_STEP_S,
            max_requests=int(rate * RAMP_STEP_S * 1.2),
        )
        with load:
            deadline = time.monotonic() + RAMP_STEP_S
            while time.monotonic() < deadline and not projected:
                reason = decision_reason(cluster, namespace, name)
                projected = reason if " rising " in reason else ""
                time.sleep(2)
        if projected:
            break
    urls.close()
    assert projected, f"no projection in {RAMP_STEPS} steps of the ramp"
    # "QPS 14 rising 0.5/s, 38 in 45 s > 1 x 15 target": more than measured, ahead.
    measured, ahead = (
        float(x) for x in re.findall(r"QPS (\d+) rising .*?, (\d+) in", projected)[0]
    )
    assert ahead > measured


def metrics_condition(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return condition_of(cluster.get("kisvc", name, "-n", namespace), "MetricsAvailable") or {}


def test_prometheus_loss_holds_replicas_with_a_condition(
    cluster: Cluster, operator: Operator, models: Models, namespace: str
) -> None:
    if not cluster.is_local:
        pytest.skip("stops the local cluster's Prometheus")
    name = "held"
    cluster.apply(runnable_here(cluster, autoscaled(namespace, models, name)))
    cluster.wait_ready(namespace, name)
    wait_for(
        "metrics from the idle pod",
        lambda: metrics_condition(cluster, namespace, name).get("status") == "True",
        timeout_s=120,
        interval_s=2,
    )
    with prometheus_paused(cluster):
        wait_for(
            "MetricsAvailable=False while Prometheus is stopped",
            lambda: (
                metrics_condition(cluster, namespace, name).get("reason") == "PrometheusUnavailable"
            ),
            timeout_s=120,
            interval_s=2,
        )
        # Idle, the autoscaler would scale 3 back to 1; without metrics it must hold.
        cluster.kubectl("scale", f"kisvc/{name}", "-n", namespace, "--replicas=3")
        wait_for(
            "the autoscaler's decision to hold 3",
            lambda: (
                cluster.get("kisvc", name, "-n", namespace)["status"]["autoscaling"][
                    "desiredReplicas"
                ]
                == 3
            ),
            timeout_s=60,
            interval_s=1,
        )
        # What must not happen takes time to not happen: three more periods, no change.
        time.sleep(3 * 5)
        assert spec_replicas(cluster, namespace, name) == 3
        assert "metrics unavailable" in metrics_condition(cluster, namespace, name)["message"]
    # Back: metrics flow again, and the idle service scales in.
    wait_for(
        "scale-in once Prometheus is back",
        lambda: spec_replicas(cluster, namespace, name) == 1,
        timeout_s=240,
        interval_s=2,
    )
    assert metrics_condition(cluster, namespace, name)["status"] == "True"
