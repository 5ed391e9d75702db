"""Precision tiers on the local cluster with real servers and real fp32/fp16/int8 models.

Under a load spike with a cold start, the tier steps down, pods scale out and
the tier returns to fp32, while a load generator running through every switch
sees zero failed requests. A pinned tier never moves, and a new pod comes up
on the active tier.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from e2e.harness import (
    Cluster,
    Models,
    Operator,
    ReadyPodURLs,
    WaitTimeout,
    condition_of,
    infer_body,
    pod_endpoint,
    prometheus_query,
    runnable_here,
    wait_for,
)
from kinfer.runtime.switch import active_version
from kinfer_dev.runtime import testmodels
from kinfer_dev.runtime.loadgen import LoadGenerator

# Big enough that compute, not HTTP, dominates a request, so the tiers differ in speed
# the way they would on a GPU: on a CPU int8 is ~3x faster than fp32, fp16 no faster.
HEAVY = testmodels.MLPShape(hidden=(1024, 1024, 1024))
REQUEST_BATCH = 128
COLD_START_S = 45
TIERS = ("fp32", "fp16", "int8")


@pytest.fixture(scope="module")
def heavy_models(models: Models) -> dict[str, str]:
    """The heavy MLP's tiers, served by the e2e model store: tier -> relative path."""
    built = testmodels.build_tier_models(models.local_root / ".heavy-build", shape=HEAVY)
    relative = {}
    for tier, path in built.items():
        target = models.local_root / "heavy" / tier / "model.onnx"
        target.parent.mkdir(parents=True, exist_ok=True)
        path.replace(target)
        relative[tier] = f"heavy/{tier}/model.onnx"
    models.publish(*relative.values())
    return relative


def service_time_ms(path: Path) -> float:
    """Median single-thread time of one request, as one model-server instance runs it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    batch = testmodels.sample_input(REQUEST_BATCH, HEAVY)
    times = []
    for _ in range(25):
        started = time.perf_counter()
        session.run(None, {testmodels.INPUT_NAME: batch})
        times.append(time.perf_counter() - started)
    return 1000 * float(np.median(times[5:]))


def tiered(
    namespace: str, models: Models, heavy: dict[str, str], name: str, **precision: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "kinfer.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {"kinfer.dev/simulated-cold-start-seconds": str(COLD_START_S)},
        },
        "spec": {
            "runtime": "onnxruntime",
            "model": {"name": "mlp"},
            "precision": {
                "tiers": [{"name": t, "storageUri": models.uri(heavy[t])} for t in TIERS],
                "dwellSeconds": 10,
                **precision,
            },
            "resources": {"cpu": "1", "memory": "1Gi"},
            # One request is one full batch: the server never merges two, so a pod's
            # capacity is 1 / service time, as a GPU's would be.
            "batching": {"maxBatchSize": REQUEST_BATCH, "maxQueueDelayMicroseconds": 0},
            "replicas": 1,
        },
    }


def request_payload() -> tuple[bytes, dict[str, str]]:
    """One inference request: a full batch of the heavy MLP, binary tensors."""
    return testmodels.binary_request(REQUEST_BATCH, HEAVY)


def load_on(urls: ReadyPodURLs, rate_qps: float) -> LoadGenerator:
    body, headers = request_payload()
    return LoadGenerator(
        urls,
        "mlp",
        body,
        headers=headers,
        rate_qps=rate_qps,
        max_duration_s=900,
        max_requests=int(rate_qps * 900),
        timeout_s=60,
    )


def pod_versions(cluster: Cluster, namespace: str, name: str) -> dict[str, int | None]:
    versions = {}
    for pod in cluster.ready_pods(namespace, name):
        with pod_endpoint(cluster, pod) as (_, grpc_url):
            versions[pod["metadata"]["name"]] = active_version(grpc_url, "mlp")
    return versions


def tier_events(cluster: Cluster, namespace: str, name: str) -> list[tuple[str, str]]:
    """(reason, message) of the operator's tier switches (action SwitchTier), oldest first."""
    events = cluster.items(
        "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}"
    )
    switches = [e for e in events if e.get("action") == "SwitchTier"]
    switches.sort(key=lambda e: (e.get("firstTimestamp") or "", e["metadata"]["name"]))
    return [(e["reason"], e["message"]) for e in switches]


def active_tier(cluster: Cluster, namespace: str, name: str) -> str | None:
    return cluster.get("kisvc", name, "-n", namespace).get("status", {}).get("activeTier")


def require_cold_start_and_prometheus(cluster: Cluster) -> None:
    if not cluster.is_local or not cluster.prometheus_url:
        pytest.skip("needs the local cluster's simulated cold start (a pod Running, not Ready)")


def require_prometheus(cluster: Cluster) -> None:
    if not cluster.prometheus_url:
        pytest.skip("no Prometheus for this cluster (set KINFER_PROMETHEUS_URL)")


def test_spike_steps_down_scales_out_and_returns_with_zero_failed_requests(
    cluster: Cluster,
    operator: Operator,
    models: Models,
    heavy_models: dict[str, str],
    namespace: str,
) -> None:
    require_cold_start_and_prometheus(cluster)
    fp32_ms = service_time_ms(models.local(heavy_models["fp32"]))
    int8_ms = service_time_ms(models.local(heavy_models["int8"]))
    assert int8_ms < fp32_ms, "int8 must be faster than fp32 on this CPU for this scenario"
    # A spike of 1.2x what one fp32 pod can serve: its queue grows without bound, while
    # int8 (about 3x faster) holds it, and so do four fp32 pods.
    rate = 1.2 * 1000.0 / fp32_ms
    slo_ms = 8 * fp32_ms
    name = "spiky"
    isvc = tiered(namespace, models, heavy_models, name)
    isvc["spec"]["scaling"] = {
        "minReplicas": 1,
        "maxReplicas": 4,
        "targetLatencyP95Ms": round(slo_ms, 1),
        "targetQPSPerReplica": round(rate / 3.5, 1),
        "periodSeconds": 5,
        "metricsWindowSeconds": 15,
        "scaleDownStabilizationSeconds": 600,
    }
    cluster.apply(runnable_here(cluster, isvc))
    cluster.wait_ready(namespace, name, timeout_s=COLD_START_S + 240)
    wait_for("the first tier active", lambda: active_tier(cluster, namespace, name) == "fp32", 60)

    with ReadyPodURLs(cluster, namespace, name) as urls, load_on(urls, rate) as load:
        wait_for(
            "a step down from fp32 under the spike",
            lambda: active_tier(cluster, namespace, name) in ("fp16", "int8"),
            timeout_s=180,
            interval_s=1,
        )
        stepped_down_at = time.monotonic()
        assert int(cluster.get("kisvc", name, "-n", namespace)["spec"]["replicas"]) > 1, (
            "the step down must come with a scale-out"
        )
        wait_for(
            "the new pods Ready and the tier back at fp32",
            lambda: (
                active_tier(cluster, namespace, name) == "fp32"
                and len(cluster.ready_pods(namespace, name)) > 1
            ),
            timeout_s=COLD_START_S + 300,
            interval_s=2,
        )
        returned_after_s = time.monotonic() - stepped_down_at
        versions = pod_versions(cluster, namespace, name)
        assert set(versions.values()) == {1}, versions
    result = load.result
    events = tier_events(cluster, namespace, name)
    assert [reason for reason, _ in events][:1] == ["TierDegraded"], events
    assert "TierRestored" in [reason for reason, _ in events], events
    assert result.ok > 100
    assert result.failed == 0, f"{result.failed} failed requests, e.g. {result.errors[:3]}"
    print(
        f"fp32 {fp32_ms:.1f} ms, int8 {int8_ms:.1f} ms, load {rate:.0f} qps, SLO {slo_ms:.0f} ms;"
        f" tier back at fp32 {returned_after_s:.0f} s after the step down; events: {events}"
    )
    slo = check_slo_status(cluster, namespace, name)
    check_operator_metrics(cluster, operator, namespace, name)
    print(f"status.slo after the spike: {slo}")


def check_slo_status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    """status.slo counts the spike: a scale-out, the step down and back, time on a lower tier,
    and a share of requests within the target (read from Prometheus once a minute)."""

    def slo() -> dict[str, Any] | None:
        found = cluster.get("kisvc", name, "-n", namespace).get("status", {}).get("slo") or {}
        return found if found.get("withinTarget") is not None else None

    found = wait_for("status.slo with a share within the target", slo, 240, interval_s=2)
    assert found["windowSeconds"] == 3600
    assert found["scaleOuts"] >= 1, found
    assert found["tierSwitches"] >= 2, found
    assert found["lowerTierSeconds"] > 0, found
    assert 0.0 <= found["withinTarget"] <= 1.0, found
    return found


def check_operator_metrics(cluster: Cluster, operator: Operator, namespace: str, name: str) -> None:
    """The operator's own series, scraped by Prometheus (job kinfer-operator), say the same."""
    if operator.installed or cluster.state_dir is None:
        return  # in-cluster, the shipped PodMonitor or scrape config does the scraping
    assert cluster.prometheus_url
    sel = f'namespace="{namespace}",inferenceservice="{name}",job="kinfer-operator"'
    expected = {
        f"kinfer_inferenceservice_ready_replicas{{{sel}}}": lambda v: v >= 1,
        f"kinfer_inferenceservice_latency_target_seconds{{{sel}}}": lambda v: v > 0,
        f"kinfer_inferenceservice_slo_bucket{{{sel}}}": lambda v: v == 1,
        f'kinfer_inferenceservice_active_tier{{{sel},tier="fp32"}}': lambda v: v == 1,
        f"kinfer_inferenceservice_on_lower_tier{{{sel}}}": lambda v: v == 0,
        f'sum(kinfer_inferenceservice_scale_events_total{{{sel},direction="out"}})': (
            lambda v: v >= 1
        ),
        f"sum(kinfer_inferenceservice_tier_switches_total{{{sel}}})": lambda v: v >= 2,
        f"sum(kinfer_decisions_total{{{sel}}})": lambda v: v >= 1,
        f'sum(kinfer_inferenceservice_tier_seconds_total{{{sel},tier!="fp32"}})': (lambda v: v > 0),
    }

    def missing() -> list[str]:
        wrong = []
        for promql, ok in expected.items():
            found = prometheus_query(cluster.prometheus_url or "", promql)
            if not found or not all(ok(float(s["value"][1])) for s in found):
                wrong.append(f"{promql} -> {[s['value'][1] for s in found]}")
        return wrong

    try:
        wait_for("the operator's series in Prometheus", lambda: not missing(), 120, interval_s=2)
    except WaitTimeout:
        pytest.fail("operator series missing or wrong: " + "; ".join(missing()))


@pytest.mark.kind_covered
def test_pinned_tier_never_moves_under_a_spike(
    cluster: Cluster,
    operator: Operator,
    models: Models,
    heavy_models: dict[str, str],
    namespace: str,
) -> None:
    require_prometheus(cluster)
    fp32_ms = service_time_ms(models.local(heavy_models["fp32"]))
    name = "pinned"
    isvc = tiered(namespace, models, heavy_models, name, pinned="fp32")
    isvc["metadata"]["annotations"] = {}
    isvc["spec"]["scaling"] = {
        "maxReplicas": 2,
        "targetLatencyP95Ms": round(4 * fp32_ms, 1),
        "periodSeconds": 5,
        "metricsWindowSeconds": 15,
    }
    cluster.apply(runnable_here(cluster, isvc))
    cluster.wait_ready(namespace, name)
    # activeTier is the control loop's to write, once the Ready pods serve the tier.
    wait_for("the pinned tier active", lambda: active_tier(cluster, namespace, name) == "fp32", 60)
    rate = 1.3 * 1000.0 / fp32_ms
    with ReadyPodURLs(cluster, namespace, name) as urls, load_on(urls, rate):
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            assert active_tier(cluster, namespace, name) == "fp32"
            assert set(pod_versions(cluster, namespace, name).values()) <= {1}
            time.sleep(3)
    autoscaling = cluster.get("kisvc", name, "-n", namespace)["status"].get("autoscaling") or {}
    assert autoscaling.get("lastMetrics", {}).get("latencyP95Ms"), "the spike was never measured"
    assert tier_events(cluster, namespace, name) == []


@pytest.mark.kind_covered
def test_new_pod_comes_up_on_the_active_tier(
    cluster: Cluster,
    operator: Operator,
    models: Models,
    heavy_models: dict[str, str],
    namespace: str,
) -> None:
    name = "restarts"
    isvc = tiered(namespace, models, heavy_models, name, pinned="int8")
    isvc["metadata"]["annotations"] = {}
    isvc["spec"]["replicas"] = 2
    cluster.apply(runnable_here(cluster, isvc))
    cluster.wait_ready(namespace, name)

    def converged() -> bool:
        obj = cluster.get("kisvc", name, "-n", namespace)
        versions = pod_versions(cluster, namespace, name)
        return (
            (condition_of(obj, "TierConverged") or {}).get("status") == "True"
            and obj["status"].get("activeTier") == "int8"
            and len(versions) == 2
            and set(versions.values()) == {3}
        )

    # The pods start on the config's first version; the operator brings them to int8.
    wait_for("both pods on int8 (version 3)", converged, timeout_s=120, interval_s=1)
    victim = cluster.ready_pods(namespace, name)[0]["metadata"]["name"]
    cluster.kubectl("delete", "pod", victim, "-n", namespace, "--wait=false")
    wait_for(
        "the replacement pod Ready and on int8",
        lambda: victim not in pod_versions(cluster, namespace, name) and converged(),
        timeout_s=180,
        interval_s=1,
    )


@pytest.mark.kind_covered
def test_pinning_another_tier_under_load_switches_every_pod_with_zero_failed_requests(
    cluster: Cluster, operator: Operator, models: Models, namespace: str
) -> None:
    # The small test MLP: the subject is the switch itself, not capacity.
    name = "repinned"
    isvc = {
        "apiVersion": "kinfer.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "runtime": "onnxruntime",
            "model": {"name": "mlp"},
            "precision": {
                "tiers": [{"name": t, "storageUri": models.uri(models.tiers[t])} for t in TIERS],
                "pinned": "fp32",
            },
            "resources": {"cpu": "500m", "memory": "512Mi"},
            "replicas": 2,
        },
    }
    cluster.apply(runnable_here(cluster, isvc))
    cluster.wait_ready(namespace, name)

    def on_version(version: int) -> bool:
        versions = pod_versions(cluster, namespace, name)
        return len(versions) == 2 and set(versions.values()) == {version}

    wait_for("both pods on fp32 (version 1)", lambda: on_version(1), timeout_s=120, interval_s=1)
    with ReadyPodURLs(cluster, namespace, name) as urls:
        load = LoadGenerator(
            urls, "mlp", infer_body(), rate_qps=10, max_duration_s=300, max_requests=3000
        )
        with load:
            wait_for("load on both pods", lambda: load.result.ok >= 20, timeout_s=60)
            cluster.kubectl(
                "patch", f"kisvc/{name}", "-n", namespace, "--type=merge",
                "-p", '{"spec": {"precision": {"pinned": "int8"}}}',
            )  # fmt: skip
            wait_for(
                "every pod on int8 (version 3)", lambda: on_version(3), timeout_s=120, interval_s=1
            )
            served = load.result.ok
            wait_for("load after the switch", lambda: load.result.ok >= served + 20, timeout_s=60)
    result = load.result
    assert result.failed == 0, f"{result.failed} failed requests, e.g. {result.errors[:3]}"
    obj = cluster.get("kisvc", name, "-n", namespace)
    assert obj["status"].get("activeTier") == "int8"
    assert (condition_of(obj, "TierConverged") or {}).get("status") == "True", obj["status"]
