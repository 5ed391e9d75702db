"""The energy reader against a real Prometheus (Debian's package) scraping endpoints on 127.0.0.1
that export dcgm-exporter's and the model servers' series: one dcgm-exporter scraped without
honor_labels (its pod labels become exported_*), one with it, and a Triton pod's own counter."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import Metric

from kinfer.autoscale.energy import EnergyReader, name_tiers
from kinfer.autoscale.metrics import PrometheusReader, PrometheusSettings

PROMETHEUS = Path("/usr/bin/prometheus")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not PROMETHEUS.exists(),
        reason="needs Debian's prometheus package: apt-get install -y prometheus",
    ),
]
WINDOW_S = 10
DEADLINE_S = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Linear:
    """A collector whose series grow at fixed rates from its creation (gauges stay constant):
    exact rates whenever Prometheus scrapes, with no feeding thread."""

    def __init__(self, series: list[tuple[str, str, dict[str, str], float]]) -> None:
        # (name, type, labels, rate per second for a counter or value for a gauge)
        self.series = series
        self.started = time.monotonic()

    def collect(self) -> Iterator[Metric]:
        elapsed = time.monotonic() - self.started
        families: dict[str, Metric] = {}
        for name, kind, labels, figure in self.series:
            metric = families.setdefault(name, Metric(name, f"{name} (test)", kind))
            sample_name = f"{name}_total" if name.startswith("kinfer_") else name
            value = figure * elapsed if kind == "counter" else figure
            metric.add_sample(sample_name, labels, value)
        yield from families.values()


def requests(tier: str, version: str, rate_qps: float) -> tuple:
    labels = {"model": "mlp", "version": version, "tier": tier}
    return ("kinfer_inference_requests", "counter", labels, rate_qps)


def gpu(name: str, kind: str, figure: float, **pod: str) -> tuple:
    labels = {"gpu": "0", "UUID": f"GPU-{pod.get('pod')}", "modelName": "A100", **pod}
    return (name, kind, labels, figure)


ENDPOINTS = {
    # job: (static target labels, honor_labels, series)
    "mlp-0": (
        {"namespace": "team-a", "inferenceservice": "mlp", "pod": "mlp-0"},
        False,
        [requests("fp32", "1", 30.0), requests("int8", "3", 10.0)],
    ),
    "mlp-1": (
        {"namespace": "team-a", "inferenceservice": "mlp", "pod": "mlp-1"},
        False,
        [requests("fp32", "1", 20.0)],
    ),
    "tri-0": (
        {"namespace": "team-b", "inferenceservice": "tri", "pod": "tri-0"},
        False,
        [
            ("nv_inference_request_success", "counter", {"model": "mlp", "version": "1"}, 25.0),
            ("nv_energy_consumption", "counter", {"gpu_uuid": "GPU-9"}, 50.0),
        ],
    ),
    # A dcgm-exporter as Prometheus Operator's ServiceMonitor scrapes it by default: the
    # target's namespace and pod are the exporter's, the GPU's pod goes to exported_*.
    "dcgm-renamed": (
        {"namespace": "gpu-operator", "pod": "dcgm-exporter-0"},
        False,
        [
            gpu(
                "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
                "counter",
                120_000.0,  # mJ/s: 120 W
                namespace="team-a",
                pod="mlp-0",
                container="server",
            )
        ],
    ),
    # One scraped with honor_labels, that only has the power gauge.
    "dcgm-honored": (
        {"namespace": "gpu-operator", "pod": "dcgm-exporter-1"},
        True,
        [
            gpu(
                "DCGM_FI_DEV_POWER_USAGE",
                "gauge",
                80.0,
                namespace="team-a",
                pod="mlp-1",
                container="server",
            )
        ],
    ),
}


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("prometheus")
    servers = []
    jobs = []
    for job, (labels, honor, series) in ENDPOINTS.items():
        registry = CollectorRegistry()
        registry.register(Linear(series))
        port = free_port()
        servers.append(start_http_server(port, addr="127.0.0.1", registry=registry)[0])
        target_labels = ", ".join(f"{k}: {v}" for k, v in labels.items())
        jobs.append(
            f"""  - job_name: {job}
    honor_labels: {"true" if honor else "false"}
    static_configs:
      - targets: ["127.0.0.1:{port}"]
        labels: {{{target_labels}}}"""
        )
    config = root / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n"
        + "\n".join(jobs)
        + "\n"
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (root / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={config}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: _ready(url) or process.poll() is not None, "Prometheus ready")
        assert process.poll() is None, (root / "prometheus.log").read_text()
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()
        for server in servers:
            server.shutdown()
            server.server_close()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def wait_for(read: Callable, what: str):
    deadline = time.monotonic() + DEADLINE_S
    value = read()
    while not value:
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {DEADLINE_S} s; last: {value}")
        time.sleep(0.5)
        value = read()
    return value


def test_reader_joins_gpu_energy_to_pods_and_tiers(prometheus: str) -> None:
    reader = EnergyReader(
        PrometheusReader(PrometheusSettings(url=prometheus)), window_s=WINDOW_S, period_s=0
    )
    # mlp-0: 120 W over 40 requests/s -> 3 J each, on both of its tiers; mlp-1: 80 W over 20/s
    # -> 4 J. fp32: (30 x 3 + 20 x 4) / 50 = 3.4 J; int8: 3 J. tri-0: 50 W / 25/s = 2 J.
    expected = {
        ("team-a", "mlp"): {"fp32": 3.4, "int8": 3.0},
        ("team-b", "tri"): {"1": 2.0},
    }

    def converged() -> dict | None:
        # Until every series spans a window, rates extrapolate from partial ones.
        found = {key: r.joules_per_inference for key, r in reader.read_all().items()}
        close = found.keys() == expected.keys() and all(
            found[key].keys() == tiers.keys()
            and all(found[key][t] == pytest.approx(j, rel=0.03) for t, j in tiers.items())
            for key, tiers in expected.items()
        )
        return found if close else None

    wait_for(converged, f"J per inference {expected}")
    readings = reader.read_all()
    assert reader.error is None
    assert readings[("team-a", "mlp")].source == "dcgm"
    assert readings[("team-b", "tri")].source == "triton"
    assert readings[("team-a", "mlp")].window_s == WINDOW_S
    assert name_tiers(readings[("team-b", "tri")].joules_per_inference, ["fp32"]).keys() == {"fp32"}
