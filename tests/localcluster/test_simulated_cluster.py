"""Simulated pods on the real local cluster: a control plane, KWOK, the metrics simulator and the
real Prometheus, with the real operator (`kinfer run`) as a local process.

Kinfer's pods become Ready with no pod runner and no server; their series reach Prometheus
through the simulator's one target with the contract labels; a service whose load rises is
scaled out by the operator; and `kinfer bench operator` runs end to end at 10 services.
Skipped where the cluster's binaries are not built (`kinfer cluster build`) or Debian's
prometheus is absent. About three minutes on two busy cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kinfer_dev.fleet import bench, report
from kinfer_dev.localcluster import build
from kinfer_dev.localcluster.cluster import ClusterState, LocalCluster, _listening_addresses
from kinfer_dev.localcluster.config import ClusterConfig, cache_dir_default

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

NAMESPACE = "simulated"
LABEL_ISVC = "kinfer.dev/inferenceservice"


def _free_pod_cidr() -> str:
    busy = {a.packed[1] for a in _listening_addresses() if a.packed[0] == 127}
    second = next(s for s in range(120, 200) if s not in busy)
    return f"127.{second}.0.0/16"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[bench.Session]:
    if build.missing(cache_dir_default()) or shutil.which("prometheus") is None:
        pytest.skip(
            "the local cluster's binaries are not built (kinfer cluster build) or no prometheus"
        )
    state_dir = tmp_path_factory.mktemp("simulated") / "state"
    config = ClusterConfig.from_env(
        state_dir=state_dir, pod_cidr=_free_pod_cidr(), simulated_pods=True
    )
    local = LocalCluster(config, out=sys.stderr)
    try:
        session = bench.Session(local, local.up(), started_cluster=True)
        bench.prepare(session, NAMESPACE)
        yield session
    finally:
        local.down()


@pytest.fixture(scope="module")
def operator(cluster: bench.Session) -> Iterator[bench.Session]:
    bench.start_operator(cluster, bench.default_operator_command())
    try:
        yield cluster
    finally:
        cluster.cluster.processes.stop(bench.OPERATOR_PROCESS)
        cluster.operator = None


def _isvc(name: str, load: str, replicas: int = 1) -> dict[str, Any]:
    from kinfer_dev.fleet.services import inference_service

    return inference_service(name, replicas, load, NAMESPACE)


def _custom(session: bench.Session) -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(session.api_client)


def _pods(session: bench.Session, isvc: str) -> list[dict[str, Any]]:
    from kubernetes import client

    listed = client.CoreV1Api(session.api_client).list_namespaced_pod(
        NAMESPACE, label_selector=f"{LABEL_ISVC}={isvc}", _preload_content=False
    )
    return json.loads(listed.data)["items"]


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _wait(what: str, condition: Callable[[], Any], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(2.0)


def _query(state: ClusterState, promql: str) -> list[dict[str, Any]]:
    url = f"{state.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())["data"]["result"]


def _rate(state: ClusterState, isvc: str) -> float:
    promql = f'sum(rate(kinfer_inference_requests_total{{inferenceservice="{isvc}"}}[20s]))'
    found = _query(state, promql)
    return float(found[0]["value"][1]) if found else 0.0


def test_pods_become_ready_without_a_runner_and_their_series_reach_prometheus(
    operator: bench.Session,
) -> None:
    custom = _custom(operator)
    for name, load in (("steady", "steady:30"), ("idle", "idle")):
        custom.create_namespaced_custom_object(
            "kinfer.dev", "v1alpha1", NAMESPACE, "inferenceservices", _isvc(name, load)
        )
    pods = {
        name: _wait(
            f"{name}'s pod Ready", lambda n=name: [p for p in _pods(operator, n) if _ready(p)], 120
        )
        for name in ("steady", "idle")
    }
    status = operator.cluster.status()
    assert status["simulatedPods"] and status["modelServers"] == []
    assert "pod-runner" not in {p["name"] for p in status["processes"]}

    series = _wait(
        "both services' series in Prometheus",
        lambda: (
            len(_query(operator.state, 'kinfer_inference_requests_total{namespace="simulated"}'))
            == 2
            and _query(operator.state, 'kinfer_inference_requests_total{namespace="simulated"}')
        ),
        60,
    )
    by_service = {s["metric"]["inferenceservice"]: s["metric"] for s in series}
    for name in ("steady", "idle"):
        labels = by_service[name]
        assert labels["pod"] == pods[name][0]["metadata"]["name"]
        assert (labels["namespace"], labels["runtime"], labels["model"], labels["version"]) == (
            NAMESPACE,
            "onnxruntime",
            "mlp",
            "1",
        )
        assert labels["job"] == "kinfer-metrics-simulator"
    # One target for every pod: the simulator, scraped once per interval.
    assert [t["metric"]["instance"] for t in _query(operator.state, "up")] == [
        operator.state.metrics_simulator_url.removeprefix("http://")
    ]
    # Once the 20 s window holds only samples of the steady load (not the series' start).
    _wait(
        "the steady service's rate at 30 QPS",
        lambda: abs(_rate(operator.state, "steady") - 30) < 3,
        90,
    )
    p95 = _query(
        operator.state,
        "histogram_quantile(0.95, sum by (le) (rate(kinfer_inference_request_duration_seconds_bucket"
        '{inferenceservice="steady"}[20s])))',
    )
    # M/M/1 at 30 of 100 QPS: ln(20)/70 = 43 ms (bucket resolution: 25 to 50 ms).
    assert 0.025 < float(p95[0]["value"][1]) <= 0.05


def test_a_rising_load_is_scaled_out_by_the_operator(operator: bench.Session) -> None:
    custom = _custom(operator)
    custom.create_namespaced_custom_object(
        "kinfer.dev", "v1alpha1", NAMESPACE, "inferenceservices", _isvc("rising", "idle")
    )
    _wait("rising's pod Ready", lambda: [p for p in _pods(operator, "rising") if _ready(p)], 120)
    # 250 QPS at 50 per replica: 5 replicas (each pod saturates at 100 QPS).
    custom.patch_namespaced_custom_object(
        "kinfer.dev",
        "v1alpha1",
        NAMESPACE,
        "inferenceservices",
        "rising",
        {"metadata": {"annotations": {"kinfer.dev/simulated-load": "steady:250"}}},
    )
    _wait(
        "rising scaled out to >= 4 Ready pods",
        lambda: len([p for p in _pods(operator, "rising") if _ready(p)]) >= 4,
        180,
    )
    isvc = custom.get_namespaced_custom_object(
        "kinfer.dev", "v1alpha1", NAMESPACE, "inferenceservices", "rising"
    )
    assert isvc["spec"]["replicas"] >= 4
    reasons = {c["type"]: c["reason"] for c in isvc["status"]["conditions"]}
    assert reasons["MetricsAvailable"] == "MetricsRead"


def test_the_operator_bench_runs_end_to_end_at_ten_services(
    cluster: bench.Session, operator: bench.Session, tmp_path: Path
) -> None:
    # The operator fixture's operator is stopped: the bench runs its own.
    operator.cluster.processes.stop(bench.OPERATOR_PROCESS)
    operator.operator = None
    # Through the command's own parser: every option the bench reads has its default.
    parser = argparse.ArgumentParser()
    bench.register(parser.add_subparsers())
    args = parser.parse_args(
        [
            "operator",
            "--services=10",
            "--window-s=15",
            "--settle-s=5",
            "--label=test",
            "--ready-timeout-s=240",
            "--namespace=bench-test",
            f"--out={tmp_path}",
            f"--state-dir={cluster.cluster.state_dir}",
        ]
    )
    assert bench.run(args) == 0
    (row,) = report.load_rows(tmp_path / report.JSON_NAME)
    assert row.services == 10 and row.label == "test" and row.moving_share == 0.1
    assert 0 < row.cpu_percent < 100 and 30 < row.rss_mb < 1000
    assert (row.api_source, row.queries_source) == ("audit log", "query log")
    assert row.api_reads_per_s is not None and row.queries_per_period is not None
    assert row.queries_per_period > 0
    assert row.children_s is not None and row.ready_s is not None
    assert row.lag_p99_s is not None
    # The bench cleaned up after itself; the cluster it reused still runs.
    assert not bench._namespace_exists(cluster, "bench-test")
    assert cluster.cluster.is_running()
    assert (tmp_path / report.MARKDOWN_NAME).exists() and (tmp_path / report.PLOT_NAME).exists()
