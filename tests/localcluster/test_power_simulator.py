"""The simulated GPU power exporter: its power and energy model, the pods it covers, the counters
it reads, its dcgm-exporter exposition and its job in the local Prometheus (pure)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kinfer_dev.localcluster import prometheus
from kinfer_dev.localcluster.power_simulator import (
    DEFAULT_TIER_FACTORS,
    ENERGY,
    MODEL_NAME,
    POWER,
    GpuPod,
    PowerModel,
    exposition,
    gpu_pod,
    rates,
    request_counts,
)

MODEL = PowerModel(idle_w=50.0, joules_per_request=2.0, max_w=400.0)


def test_power_is_idle_without_load_and_rises_with_it() -> None:
    assert MODEL.gpu_power_w({}) == 50.0
    assert MODEL.gpu_power_w({"fp32": 0.0}) == 50.0
    powers = [MODEL.gpu_power_w({"fp32": qps}) for qps in (1, 10, 50, 100)]
    assert powers == sorted(powers) and len(set(powers)) == 4
    assert MODEL.gpu_power_w({"fp32": 50.0}) == pytest.approx(50.0 + 2.0 * 50)


def test_tier_factors_scale_the_energy_of_a_request() -> None:
    assert DEFAULT_TIER_FACTORS == {"fp32": 1.0, "fp16": 0.55, "int8": 0.35}
    load_w = {tier: MODEL.gpu_power_w({tier: 100.0}) - 50.0 for tier in ("fp32", "fp16", "int8")}
    assert load_w == {
        "fp32": pytest.approx(200.0),
        "fp16": pytest.approx(110.0),
        "int8": pytest.approx(70.0),
    }
    # A tier the model does not know (no tiers: "") counts as fp32.
    assert MODEL.gpu_power_w({"": 100.0}) == MODEL.gpu_power_w({"fp32": 100.0})
    # Two tiers in one interval add up.
    assert MODEL.gpu_power_w({"fp32": 10.0, "int8": 10.0}) == pytest.approx(50 + 20 + 7)


def test_power_is_capped_and_shared_by_the_pods_gpus() -> None:
    assert MODEL.gpu_power_w({"fp32": 10_000.0}) == 400.0
    # Two GPUs: each idles, each carries half of the requests' energy.
    assert MODEL.gpu_power_w({"fp32": 100.0}, gpus=2) == pytest.approx(50.0 + 100.0)


def test_the_model_refuses_impossible_figures() -> None:
    with pytest.raises(ValueError, match="idle"):
        PowerModel(idle_w=500.0, max_w=400.0)
    with pytest.raises(ValueError, match="joules per request"):
        PowerModel(joules_per_request=-1.0)


def test_rates_between_two_readings_and_a_reset() -> None:
    assert rates({"fp32": 100.0}, {"fp32": 150.0, "int8": 20.0}, 10.0) == {"fp32": 5.0, "int8": 2.0}
    # The server restarted: its counter went down, its new count is this interval's.
    assert rates({"fp32": 100.0}, {"fp32": 30.0}, 10.0) == {"fp32": 3.0}


def _pod(**overrides) -> GpuPod:
    values = dict(
        namespace="team-a",
        name="mlp-0",
        uid="0123456789",
        container="server",
        node="gpu-l4-0",
        gpus=1,
        metrics_url="http://127.1.0.5:8002/metrics",
    )
    values.update(overrides)
    return GpuPod(**values)


def test_energy_integrates_power_and_never_goes_down() -> None:
    pod = _pod()
    pod.advance({"fp32": 500.0}, 100.0, MODEL)
    assert (pod.power_w, pod.energy_mj) == (50.0, 0.0), "the first reading starts the clock"
    readings = [
        ({"fp32": 500.0}, 110.0),  # idle 10 s
        ({"fp32": 800.0}, 120.0),  # 30/s for 10 s
        ({"fp32": 800.0, "int8": 1000.0}, 130.0),  # int8 100/s
        ({"fp32": 50.0}, 140.0),  # a restart: 5/s
        ({"fp32": 50.0}, 140.0),  # no time passed: nothing changes
    ]
    energies = []
    for counts, now_s in readings:
        pod.advance(counts, now_s, MODEL)
        energies.append(pod.energy_mj)
    assert energies == sorted(energies)
    joules = [
        50 * 10,
        50 * 10 + 2.0 * 300,
        50 * 10 + 2.0 * 0.35 * 1000,
        50 * 10 + 2.0 * 50,
    ]
    steps = [b - a for a, b in zip([0.0, *energies], energies, strict=False)]
    assert steps[:4] == pytest.approx([j * 1000 for j in joules])
    assert steps[4] == 0
    assert pod.power_w == pytest.approx(60.0)


def test_energy_per_request_is_the_tier_figure_plus_idle_over_the_rate() -> None:
    """What the e2e test checks the reader against: over a steady load of q requests/s on one
    GPU, energy / requests = joules_per_request x factor + idle_w / q."""
    pod = _pod()
    pod.advance({"fp16": 0.0}, 0.0, MODEL)
    for second in range(1, 301):
        pod.advance({"fp16": 20.0 * second}, float(second), MODEL)
    assert pod.energy_mj / 1000 / (20.0 * 300) == pytest.approx(2.0 * 0.55 + 50.0 / 20.0)


def _k8s_pod(**changes) -> dict:
    pod = {
        "metadata": {
            "namespace": "team-a",
            "name": "mlp-0",
            "uid": "abcdef0123",
            "labels": {"kinfer.dev/inferenceservice": "mlp"},
            "annotations": {"prometheus.io/port": "8002", "prometheus.io/path": "/metrics"},
        },
        "spec": {
            "nodeName": "gpu-l4-0",
            "containers": [
                {
                    "name": "server",
                    "resources": {"limits": {"nvidia.com/gpu": "2", "cpu": "2"}},
                    "ports": [{"name": "metrics", "containerPort": 9102}],
                }
            ],
        },
        "status": {"phase": "Running", "podIP": "127.1.0.5"},
    }
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node = pod
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return pod


def test_gpu_pods_are_running_loopback_pods_that_hold_gpus() -> None:
    found = gpu_pod(_k8s_pod())
    assert found is not None
    assert (found.namespace, found.name, found.container, found.node, found.gpus) == (
        "team-a",
        "mlp-0",
        "server",
        "gpu-l4-0",
        2,
    )
    assert found.metrics_url == "http://127.1.0.5:8002/metrics"
    # Without the annotations: the container port named metrics.
    bare = _k8s_pod(**{"metadata.annotations": {}})
    assert gpu_pod(bare).metrics_url == "http://127.1.0.5:9102/metrics"
    cpu_only = _k8s_pod()
    cpu_only["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "2"}}
    assert gpu_pod(cpu_only) is None
    assert gpu_pod(_k8s_pod(**{"status.phase": "Pending"})) is None
    assert gpu_pod(_k8s_pod(**{"status.podIP": "10.0.0.5"})) is None, "never off loopback"
    assert gpu_pod(_k8s_pod(**{"status.podIP": ""})) is None
    assert gpu_pod(_k8s_pod(**{"metadata.deletionTimestamp": "2026-01-01T00:00:00Z"})) is None


def test_request_counts_from_kinfer_ort_servers_metrics() -> None:
    from kinfer_ort_server.metrics import Metrics

    metrics = Metrics()
    fp32 = metrics.for_version("mlp", "1", "fp32")
    int8 = metrics.for_version("mlp", "3", "int8")
    for _ in range(3):
        fp32.success(0.01)
    fp32.failure("bad_input")
    int8.success(0.002)
    text = generate_latest(metrics.registry).decode()
    assert request_counts(text) == {"fp32": 4.0, "int8": 1.0}


def test_request_counts_from_tritons_counters() -> None:
    text = (
        "# TYPE nv_inference_request_success counter\n"
        'nv_inference_request_success{model="mlp",version="1"} 7\n'
        "# TYPE nv_inference_request_failure counter\n"
        'nv_inference_request_failure{model="mlp",version="1"} 2\n'
        "# TYPE nv_inference_count counter\n"
        'nv_inference_count{model="mlp",version="1"} 40\n'
    )
    assert request_counts(text) == {"": 9.0}


def test_exposition_is_dcgm_exporters_format_named_a_simulator() -> None:
    pod = _pod(gpus=2)
    pod.advance({"fp32": 0.0}, 0.0, MODEL)
    pod.advance({"fp32": 100.0}, 10.0, MODEL)
    families = {f.name: f for f in text_string_to_metric_families(exposition([pod]))}
    assert families[POWER].type == "gauge"
    assert families[ENERGY].type == "counter"
    for family in families.values():
        assert "simulated" in family.documentation
        assert len(family.samples) == 2  # one a GPU
    power = families[POWER].samples[1]
    assert power.value == pytest.approx(50.0 + 2.0 * 10 / 2)
    assert power.labels == {
        "gpu": "1",
        "UUID": "GPU-sim-01234567-1",
        "device": "nvidia1",
        "modelName": MODEL_NAME,
        "Hostname": "gpu-l4-0",
        "container": "server",
        "namespace": "team-a",
        "pod": "mlp-0",
    }
    assert families[ENERGY].samples[0].value == (50.0 + 10.0) * 10 * 1000
    # dcgm-exporter's counter has no _total suffix (the parser above would add one).
    assert f"\n{ENERGY}{{gpu=" in exposition([pod])
    assert exposition([]).count("# TYPE") == 2


def test_local_prometheus_scrapes_the_exporter_with_honor_labels(tmp_path: Path) -> None:
    config = prometheus.local_config(
        tmp_path / "pods.json", 2, power_simulator_address="127.0.0.1:9400"
    )
    job = next(s for s in config["scrape_configs"] if s["job_name"] == "kinfer-power-simulator")
    assert job["honor_labels"] is True
    assert job["static_configs"] == [{"targets": ["127.0.0.1:9400"]}]
    keep = job["relabel_configs"][-1]
    assert (keep["action"], keep["source_labels"]) == ("keep", ["__address__"])
    assert keep["regex"].startswith("127")
    without = prometheus.local_config(tmp_path / "pods.json", 2)
    assert "kinfer-power-simulator" not in [s["job_name"] for s in without["scrape_configs"]]
    if shutil.which("promtool"):
        path = tmp_path / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        result = subprocess.run(
            ["promtool", "check", "config", str(path)], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr
