"""Pod discovery (kubernetes_sd role pod labels via file_sd) and the Prometheus config (pure)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from kinfer_dev.localcluster import discovery, prometheus


def _pod(ip: str | None = "127.1.1.2") -> dict:
    return {
        "metadata": {
            "namespace": "team-a",
            "name": "mlp-abc",
            "uid": "u1",
            "labels": {"kinfer.dev/inferenceservice": "mlp", "kinfer.dev/runtime": "triton"},
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8002"},
        },
        "spec": {
            "nodeName": "gpu-a100-0",
            "initContainers": [{"name": "fetch-model", "image": "rclone"}],
            "containers": [
                {
                    "name": "server",
                    "image": "triton",
                    "ports": [
                        {"name": "http", "containerPort": 8000},
                        {"name": "metrics", "containerPort": 8002},
                    ],
                }
            ],
        },
        "status": {"podIP": ip, "phase": "Running"},
    }


def test_targets_carry_kubernetes_sd_meta_labels_one_per_port() -> None:
    groups = discovery.pod_targets([_pod()])
    assert [g["targets"] for g in groups] == [["127.1.1.2:8000"], ["127.1.1.2:8002"]]
    labels = groups[1]["labels"]
    meta = "__meta_kubernetes_"
    assert labels[f"{meta}namespace"] == "team-a"
    assert labels[f"{meta}pod_name"] == "mlp-abc"
    assert labels[f"{meta}pod_label_kinfer_dev_inferenceservice"] == "mlp"
    assert labels[f"{meta}pod_label_kinfer_dev_runtime"] == "triton"
    assert labels[f"{meta}pod_annotation_prometheus_io_scrape"] == "true"
    assert labels[f"{meta}pod_container_port_name"] == "metrics"
    assert labels[f"{meta}pod_phase"] == "Running"


def test_pods_without_an_ip_are_not_targets() -> None:
    assert discovery.pod_targets([_pod(ip=None)]) == []


def test_write_targets_only_rewrites_on_change(tmp_path: Path) -> None:
    path = tmp_path / "sd" / "pods.json"
    groups = discovery.pod_targets([_pod()])
    assert discovery.write_targets(path, groups) is True
    assert discovery.write_targets(path, groups) is False
    assert discovery.write_targets(path, []) is True


def test_shipped_scrape_config_relabels_to_the_contract_labels() -> None:
    scrape = prometheus.load_scrape_configs()[0]
    assert scrape["job_name"] == "kinfer-pods"
    assert scrape["kubernetes_sd_configs"] == [{"role": "pod"}]
    targets = {r.get("target_label") for r in scrape["relabel_configs"]}
    assert {"namespace", "pod", "inferenceservice", "runtime", "__address__"} <= targets


def test_local_config_uses_file_sd_and_keeps_only_loopback_targets(tmp_path: Path) -> None:
    config = prometheus.local_config(tmp_path / "pods.json", scrape_interval_s=2)
    scrape = config["scrape_configs"][0]
    assert scrape["job_name"] == "kinfer-pods"
    assert "kubernetes_sd_configs" not in scrape
    assert scrape["file_sd_configs"][0]["files"] == [str(tmp_path / "pods.json")]
    assert scrape["relabel_configs"][-1]["regex"].startswith("127")
    assert config["global"]["scrape_interval"] == "2s"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) absent")
def test_local_config_passes_promtool(tmp_path: Path) -> None:
    targets = tmp_path / "pods.json"
    discovery.write_targets(targets, discovery.pod_targets([_pod()]))
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(prometheus.local_config(targets, 2)))
    result = subprocess.run(
        ["promtool", "check", "config", str(config_file)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
