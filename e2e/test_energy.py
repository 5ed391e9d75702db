"""Energy per inference on the local cluster's simulated GPUs.

A GPU InferenceService (onnxruntime, one fp16 tier, gpus: 1 on a simulated L4) serves a
bounded loopback load. The simulated GPU power exporter (the local cluster's stand-in for
dcgm-exporter; a model, not a measurement) must have the pod's series in the real Prometheus,
and the operator's energy reader must read from there a J per inference for the service's tier
that agrees with the exporter's model.
"""

from __future__ import annotations

import json
import math
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from e2e.harness import Cluster, Models, Operator, ReadyPodURLs, infer_body, wait_for
from kinfer.autoscale.energy import EnergyReader, EnergyReading
from kinfer.autoscale.metrics import PrometheusReader, PrometheusSettings
from kinfer_dev.localcluster.power_simulator import MODEL_NAME, PowerModel
from kinfer_dev.runtime.loadgen import LoadGenerator

NAME = "energy"
TIER = "fp16"
LOAD_QPS = 20
# Short, so that a whole window of load fits in the test; the operator's default is 300 s.
WINDOW_S = 60
# The exporter reads the pod's counters every second and Prometheus scrapes both every 2 s: the
# energy and request increases of one window come from instants up to ~3 s apart, at the
# window's two edges only (inside it, energy = idle_w x seconds + joules x requests exactly).
# The test reads once the load has run for more than the window, so both edges fall in steady
# load and the shift changes both alike; the load's jitter over those ~3 s of a 60 s window
# moves the ratio by a few per cent at most. 10 % holds that with margin, and is far below what
# a wrong tier factor (fp16 0.55 against fp32 1.0: 20 % here), a lost idle term or a
# wrong unit (x1000) gives.
TOLERANCE = 0.10


def gpu_service(namespace: str, models: Models) -> dict[str, Any]:
    return {
        "apiVersion": "kinfer.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "runtime": "onnxruntime",
            "model": {"name": "mlp"},
            "precision": {"tiers": [{"name": TIER, "storageUri": models.uri(models.tiers[TIER])}]},
            "resources": {
                "gpus": 1,
                "gpuProduct": "NVIDIA-L4",
                "cpu": "500m",
                "memory": "512Mi",
            },
            "replicas": 1,
            # A control loop (status.energy rides on its status writes), held at one replica.
            "scaling": {"minReplicas": 1, "maxReplicas": 1, "targetQPSPerReplica": 100},
        },
    }


def prometheus_query(url: str, promql: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=10) as response:
        return list(json.load(response)["data"]["result"])


def expected_joules(reading: EnergyReading, model: PowerModel) -> float:
    """The exporter's model over the reading's own window: a GPU spends idle_w every second and
    joules_per_request x factor(tier) on each request, so energy / requests =
    joules_per_request x factor + idle_w / (the window's requests per second)."""
    qps = reading.inferences[TIER] / reading.window_s
    return model.joules_per_request_of(TIER) + model.idle_w / qps


def test_joules_per_inference_from_the_simulated_power_exporter(
    cluster: Cluster, operator: Operator, models: Models, namespace: str
) -> None:
    from kinfer_dev.localcluster.cluster import ClusterState

    state = ClusterState.load(Path(cluster.kubeconfig).parent)
    if not cluster.is_local or state is None or state.power_simulator_port is None:
        pytest.skip("the simulated GPU power exporter runs on the local cluster only")
    assert cluster.prometheus_url
    cluster.apply(gpu_service(namespace, models))
    cluster.wait_ready(namespace, NAME)
    (pod,) = cluster.ready_pods(namespace, NAME)
    pod_name, node = pod["metadata"]["name"], pod["spec"]["nodeName"]
    selector = f'namespace="{namespace}",pod="{pod_name}"'
    model = PowerModel()  # the exporter's defaults: the local cluster starts it with them
    reader = EnergyReader(
        PrometheusReader(PrometheusSettings(url=cluster.prometheus_url)),
        window_s=WINDOW_S,
        period_s=0,
    )

    urls = ReadyPodURLs(cluster, namespace, NAME)
    load = LoadGenerator(
        urls, "mlp", infer_body(), rate_qps=LOAD_QPS, max_duration_s=400, max_requests=8000
    )
    with urls, load:
        # The exporter's series for the pod, scraped with honor_labels, drawing above idle.
        series = wait_for(
            f"the simulated exporter's power above idle for {pod_name} in Prometheus",
            lambda: [
                s
                for s in prometheus_query(
                    cluster.prometheus_url, f"DCGM_FI_DEV_POWER_USAGE{{{selector}}}"
                )
                if float(s["value"][1]) > model.idle_w
            ],
            timeout_s=180,
            interval_s=2,
        )
        labels = series[0]["metric"]
        assert labels["job"] == "kinfer-power-simulator"
        assert labels["modelName"] == MODEL_NAME
        assert labels["UUID"].startswith("GPU-sim-")
        assert (labels["Hostname"], labels["container"]) == (
            node,
            pod["spec"]["containers"][0]["name"],
        )
        # increase() needs two samples of the counter: the gauge above idle may be the first.
        wait_for(
            f"the simulated exporter's energy counter rising for {pod_name}",
            lambda: any(
                float(row["value"][1]) > 0
                for row in prometheus_query(
                    cluster.prometheus_url,
                    f"increase(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{{selector}}}[30s])",
                )
            ),
            timeout_s=60,
            interval_s=2,
        )

        # A whole window of load: the pod served at least half the load at every 2 s step of
        # the last window and a bit (so both its energy and request series span the window).
        span = f"{WINDOW_S + 10}s"
        wait_for(
            f"{span} of load on {pod_name}",
            lambda: any(
                float(row["value"][1]) > LOAD_QPS / 2
                for row in prometheus_query(
                    cluster.prometheus_url,
                    f"min_over_time(sum(rate(kinfer_inference_requests_total{{{selector}}}[10s]))"
                    f"[{span}:2s])",
                )
            ),
            timeout_s=WINDOW_S + 240,
            interval_s=3,
        )
        reading = wait_for(
            f"the reader's J per inference of {NAME} on {TIER}",
            lambda: reader.read(namespace, NAME),
            timeout_s=60,
            interval_s=2,
        )
        # The operator's own reader (its 300 s window) puts it in status and its metrics.
        status_energy = wait_for(
            f"status.energy of {NAME}",
            lambda: cluster.get("kisvc", NAME, "-n", namespace).get("status", {}).get("energy"),
            timeout_s=180,
            interval_s=2,
        )
    found = reading.joules_per_inference.get(TIER)
    assert found is not None and math.isfinite(found) and found > 0, reading
    expected = expected_joules(reading, model)
    print(
        f"{TIER}: {found} J per inference read, {expected:.4g} J by the exporter's model, "
        f"{reading.inferences[TIER] / reading.window_s:.3g} requests/s over {reading.window_s} s"
    )
    assert math.isclose(found, expected, rel_tol=TOLERANCE), (found, expected, reading)
    result = load.result
    assert result.failed == 0, result.errors
    assert reading.source == "dcgm"
    assert reading.window_s == WINDOW_S
    assert list(reading.joules_per_inference) == [TIER]
    # The tier's own factor shows: the same load on fp32 would cost 0.9 J more a request.
    qps = reading.inferences[TIER] / reading.window_s
    as_fp32 = model.joules_per_request_of("fp32") + model.idle_w / qps
    assert found < as_fp32 and not math.isclose(found, as_fp32, rel_tol=TOLERANCE)
    assert reader.error is None
    assert status_energy["source"] == "dcgm" and status_energy["windowSeconds"] == 300
    in_status = status_energy["joulesPerInference"][TIER]
    assert math.isfinite(in_status) and in_status > 0, status_energy
    if cluster.state_dir is not None:  # the local operator's metrics are scraped
        gauge = (
            f'kinfer_inferenceservice_joules_per_inference{{namespace="{namespace}",tier="{TIER}"}}'
        )
        wait_for(
            "kinfer_inferenceservice_joules_per_inference in Prometheus",
            lambda: prometheus_query(cluster.prometheus_url or "", gauge),
            timeout_s=60,
            interval_s=2,
        )
