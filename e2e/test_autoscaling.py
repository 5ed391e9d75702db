"""Autoscaling on the real Prometheus and real model servers.

A bounded load step (loopback only) makes the operator scale out within a
bounded time, the load's end scales in after the quick window for a one-off
fall (a load that does not come back is not held for the whole window), a
rising load is scaled for ahead (the trend), and a stopped Prometheus holds
the replicas with a condition saying so.
"""

from __future__ import annotations

import os
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
                # end) is released after the quick one, which is not longer than this.
                "scaleDownStabilizationSeconds": 20,
            },
        },
    }


def spec_replicas(cluster: Cluster, namespace: str, name: str) -> int:
    return int(cluster.get("kisvc", name, "-n", namespace)["spec"]["replicas"])


def last_metrics(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    status = cluster.get("kisvc", name, "-n", namespace).get("status", {})
    return status.get("autoscaling", {}).get("lastMetrics") or {}


def scaled_events(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    """The operator's scale Events (action Scale; the reason is the deciding stage's)."""
    events = cluster.items(
        "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}"
    )
    return [event for event in events if event.get("action") == "Scale"]


def reasons(events: list[dict[str, Any]]) -> list[str]:
    return [event["reason"] for event in events]


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
    # A fall is one-off while the trend history (two metrics windows) still holds the load
    # from before it: the 30 s quick window must pass within that, as with the default 60 s.
    isvc["spec"]["scaling"]["metricsWindowSeconds"] = 60
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
        # The first scale-out is decided on the load: QPS (window, short rate or trend), the
        # overload recommender, or the step limit that capped one of those.
        scale_outs = set(reasons(scaled_events(cluster, namespace, name)))
        assert scale_outs & {"QPSTarget", "ShortRate", "TrendAhead", "OverloadFloor"}, scale_outs
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

    # Scale-in after the load ends: the fall is seen against the rate a window (60 s) ago, then
    # the 30 s quick window passes; the 900 s window would hold the pods past this wait.
    wait_for(
        "scale-in to 1 replica after the load",
        lambda: spec_replicas(cluster, namespace, name) == 1,
        timeout_s=240,
        interval_s=2,
    )
    # The last change (to 1) used the quick window: its trail says so, with the window.
    last = cluster.get("kisvc", name, "-n", namespace)["status"]["autoscaling"]["lastScale"]
    assert last["to"] == 1, last
    quick = [step for step in last["trail"] if step["reason"] == "QuickScaleDown"]
    assert quick and quick[0]["figures"]["windowS"] == 30, last
    assert any(e["message"].startswith("scaled") for e in scaled_events(cluster, namespace, name))


def trend_step(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    """The last decision's TrendAhead step with the measured QPS added, if it planned on one."""
    autoscaling = cluster.get("kisvc", name, "-n", namespace).get("status", {}).get("autoscaling")
    for step in (autoscaling or {}).get("trail") or []:
        if step["reason"] == "TrendAhead":
            return {**step["figures"], "qps": autoscaling["lastMetrics"]["qps"]}
    return None


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
    projected: dict[str, Any] | None = None
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
                projected = trend_step(cluster, namespace, name)
                time.sleep(2)
        if projected:
            break
    urls.close()
    assert projected, f"no projection in {RAMP_STEPS} steps of the ramp"
    # The rate planned on is ahead of the one measured, on a rising slope.
    assert projected["slope"] > 0, projected
    assert projected["planned"] > projected["qps"], projected


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
