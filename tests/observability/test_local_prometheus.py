"""The local cluster's Prometheus: the shipped rules and the operator's scrape job (pure),
promtool's check of the config, and a real Prometheus scraping an operator on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, start_http_server

from kinfer_dev.localcluster import prometheus
from kinfer_dev.localcluster.processes import free_port
from tests.conftest import REPO

MANIFESTS = REPO / "manifests"
LOOPBACK_KEEP = {
    "source_labels": ["__address__"],
    "action": "keep",
    "regex": r"127\.[0-9.]+:[0-9]+",
}
DEADLINE_S = 60


def _jobs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {scrape["job_name"]: scrape for scrape in config["scrape_configs"]}


def test_local_config_loads_the_shipped_rules(tmp_path: Path) -> None:
    config = prometheus.local_config(tmp_path / "pods.json", 2, tmp_path / "operator.json")
    (rule_file,) = config["rule_files"]
    assert Path(rule_file).is_absolute()
    assert (
        Path(rule_file).read_text()
        == (MANIFESTS / "prometheus/rules/kinfer-rules.yaml").read_text()
    )


def test_local_operator_job_is_a_file_sd_without_the_pod_relabelling(tmp_path: Path) -> None:
    config = prometheus.local_config(tmp_path / "pods.json", 2, tmp_path / "operator.json")
    jobs = _jobs(config)
    assert list(jobs) == ["kinfer-pods", "kinfer-operator"]
    operator = jobs["kinfer-operator"]
    assert "kubernetes_sd_configs" not in operator
    assert operator["file_sd_configs"] == [
        {"files": [str(tmp_path / "operator.json")], "refresh_interval": "2s"}
    ]
    assert operator["honor_labels"] is True
    assert operator["relabel_configs"] == [LOOPBACK_KEEP]
    pods = jobs["kinfer-pods"]
    assert pods["file_sd_configs"][0]["files"] == [str(tmp_path / "pods.json")]
    assert len(pods["relabel_configs"]) > 1 and pods["relabel_configs"][-1] == LOOPBACK_KEEP


def test_without_an_operator_targets_file_the_job_is_left_out(tmp_path: Path) -> None:
    assert list(_jobs(prometheus.local_config(tmp_path / "pods.json", 2))) == ["kinfer-pods"]


def test_write_and_clear_the_operator_target(tmp_path: Path) -> None:
    prometheus.write_operator_target(tmp_path, 18081)
    path = tmp_path / "operator-targets.json"
    assert json.loads(path.read_text()) == [{"targets": ["127.0.0.1:18081"], "labels": {}}]
    prometheus.clear_operator_target(tmp_path)
    assert json.loads(path.read_text()) == []
    assert [p.name for p in tmp_path.iterdir()] == ["operator-targets.json"]  # no temp file left


def _operator_pod() -> dict[str, Any]:
    documents = yaml.safe_load((MANIFESTS / "operator/deployment.yaml").read_text())
    return documents["spec"]["template"]


def test_shipped_operator_job_selects_the_operator_pods_metrics_port() -> None:
    job = _jobs({"scrape_configs": prometheus.load_scrape_configs()})["kinfer-operator"]
    assert job["kubernetes_sd_configs"] == [
        {"role": "pod", "namespaces": {"names": ["kinfer-system"]}}
    ]
    assert job["honor_labels"] is True
    keep = {
        r["source_labels"][0]: r["regex"]
        for r in job["relabel_configs"]
        if r.get("action") == "keep"
    }
    pod = _operator_pod()
    assert (
        keep["__meta_kubernetes_pod_label_app_kubernetes_io_name"]
        == pod["metadata"]["labels"]["app.kubernetes.io/name"]
    )
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert keep["__meta_kubernetes_pod_container_port_name"] == "metrics"
    assert f"--metrics-port={ports['metrics']}" in container["args"]


def test_shipped_podmonitor_scrapes_the_operator_as_job_kinfer_operator() -> None:
    documents = list(yaml.safe_load_all((MANIFESTS / "prometheus/podmonitor.yaml").read_text()))
    operator = next(d for d in documents if d["metadata"]["name"] == "kinfer-operator")
    pod_labels = _operator_pod()["metadata"]["labels"]
    assert operator["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pod_labels[operator["spec"]["jobLabel"]] == "kinfer-operator"
    (endpoint,) = operator["spec"]["podMetricsEndpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "honorLabels": True}


def _promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail(
            "promtool is not on PATH: `make cluster-deps` installs Debian's prometheus package, which provides it"
        )
    return binary


def test_promtool_checks_the_local_config_and_its_rules(tmp_path: Path) -> None:
    prometheus.write_operator_target(tmp_path, 18081)
    config = prometheus.local_config(tmp_path / "pods.json", 2, tmp_path / "operator-targets.json")
    (tmp_path / "pods.json").write_text("[]")
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    result = subprocess.run(
        [_promtool(), "check", "config", str(config_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 16 rules found" in result.stdout  # the rule file was read and checked


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _wait(what: str, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {DEADLINE_S}s waiting for {what}"
        time.sleep(0.2)


def _query(base: str, expr: str) -> list[dict[str, Any]]:
    try:
        return _get(f"{base}/api/v1/query?query={urllib.parse.quote(expr)}")["data"]["result"]
    except OSError:
        return []


@pytest.fixture
def local_prometheus(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    binary = Path("/usr/bin/prometheus")
    if not binary.exists():
        pytest.fail(
            "/usr/bin/prometheus is absent: `make cluster-deps` installs Debian's prometheus package"
        )
    (tmp_path / "pods.json").write_text("[]")
    prometheus.clear_operator_target(tmp_path)
    config = prometheus.local_config(
        tmp_path / "pods.json", 1, prometheus.operator_targets_path(tmp_path)
    )
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    argv = prometheus.prometheus_argv(
        str(binary), tmp_path / "prometheus.yml", tmp_path / "data", port
    )
    with (tmp_path / "prometheus.log").open("w") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}", tmp_path
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.slow
def test_a_real_prometheus_loads_the_rules_and_scrapes_the_operator(
    local_prometheus: tuple[str, Path],
) -> None:
    base, state_dir = local_prometheus
    registry = CollectorRegistry()
    Counter("kinfer_reconciles", "reconciles", ["result"], registry=registry).labels(
        "success"
    ).inc()
    operator_port = free_port()
    server, thread = start_http_server(operator_port, addr="127.0.0.1", registry=registry)
    try:
        _wait("Prometheus' rules API", lambda: bool(_query(base, "vector(1)")))
        groups = _get(f"{base}/api/v1/rules")["data"]["groups"]
        assert sorted(g["name"] for g in groups) == [
            "kinfer.alerts",
            "kinfer.requests",
            "kinfer.slo",
            "kinfer.slo.long",
        ]
        assert all(rule["health"] != "err" for g in groups for rule in g["rules"])

        prometheus.write_operator_target(state_dir, operator_port)
        up = f'up{{job="kinfer-operator",instance="127.0.0.1:{operator_port}"}} == 1'
        _wait("the operator's target up", lambda: bool(_query(base, up)))
        _wait(
            "the operator's series",
            lambda: bool(
                _query(base, 'kinfer_reconciles_total{job="kinfer-operator",result="success"}')
            ),
        )

        prometheus.clear_operator_target(state_dir)
        targets = f"{base}/api/v1/targets?state=active"
        _wait(
            "the operator's target gone",
            lambda: (
                not [
                    t
                    for t in _get(targets)["data"]["activeTargets"]
                    if t["labels"]["job"] == "kinfer-operator"
                ]
            ),
        )
    finally:
        server.shutdown()
        thread.join(timeout=10)
