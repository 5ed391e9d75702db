"""The local cluster's settings and simulated nodes (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kinfer_dev.localcluster import config, nodes


def test_default_nodes_cover_two_gpu_products_a_mig_node_and_a_cpu_node() -> None:
    gpu_products = {n.gpu_product for n in config.DEFAULT_NODES if n.gpu_count > 0}
    assert len(gpu_products) >= 2
    assert sum(1 for n in config.DEFAULT_NODES if n.gpu_count > 0) >= 2
    assert any("1g.10gb" in n.mig for n in config.DEFAULT_NODES)
    assert any(not n.has_gpus for n in config.DEFAULT_NODES)


def test_gpu_node_carries_gfd_labels_capacity_and_taint() -> None:
    a100 = next(n for n in config.DEFAULT_NODES if n.gpu_count > 0)
    node = nodes.node_object(a100, "127.1.0.1", "127.1.1.0/24")
    labels = node["metadata"]["labels"]
    assert labels["nvidia.com/gpu.product"] == a100.gpu_product
    assert labels["nvidia.com/gpu.count"] == str(a100.gpu_count)
    assert labels["nvidia.com/gpu.memory"] == str(a100.gpu_memory_mib)
    assert labels["nvidia.com/gpu.family"] == a100.gpu_family
    assert node["status"]["capacity"]["nvidia.com/gpu"] == str(a100.gpu_count)
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == str(a100.gpu_count)
    assert node["spec"]["taints"] == [
        {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    ]
    assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
    assert node["status"]["addresses"][0] == {"type": "InternalIP", "address": "127.1.0.1"}


def test_mig_node_exposes_its_profile_not_whole_gpus() -> None:
    mig = next(n for n in config.DEFAULT_NODES if n.mig)
    node = nodes.node_object(mig, "127.1.0.3", "127.1.3.0/24")
    capacity = node["status"]["capacity"]
    assert capacity["nvidia.com/mig-1g.10gb"] == "7"
    assert "nvidia.com/gpu" not in capacity
    assert node["metadata"]["labels"]["nvidia.com/mig.strategy"] == "mixed"
    assert node["spec"]["taints"]


def test_cpu_node_has_no_gpu_labels_or_taint() -> None:
    cpu = next(n for n in config.DEFAULT_NODES if not n.has_gpus)
    node = nodes.node_object(cpu, "127.1.0.4", "127.1.4.0/24")
    assert not [k for k in node["metadata"]["labels"] if k.startswith("nvidia.com/")]
    assert "taints" not in node["spec"]


# Pure validation of configuration: non-loopback ranges are refused, never used.
@pytest.mark.parametrize(
    "cidr", ["10.0.0.0/16", "192.168.0.0/16", "127.0.0.0/16", "127.1.0.0/24", "not-a-cidr"]
)
def test_pod_cidr_must_be_loopback_roomy_and_apart_from_127_0_0_1(cidr: str) -> None:
    with pytest.raises(ValueError, match="pod CIDR"):
        config.validate_pod_cidr(cidr)


def test_node_ips_and_pod_ranges_are_loopback_and_disjoint() -> None:
    ips = config.node_ips("127.1.0.0/16", 4)
    cidrs = config.node_pod_cidrs("127.1.0.0/16", 4)
    assert ips == ["127.1.0.1", "127.1.0.2", "127.1.0.3", "127.1.0.4"]
    assert cidrs == ["127.1.1.0/24", "127.1.2.0/24", "127.1.3.0/24", "127.1.4.0/24"]


def test_nodes_file_round_trip_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "nodes.yaml"
    good.write_text(
        "nodes:\n"
        "- {name: big, gpuProduct: NVIDIA-H100-80GB-HBM3, gpuCount: 8, gpuMemoryMiB: 81559}\n"
        "- {name: slices, gpuProduct: NVIDIA-A100-SXM4-80GB, mig: {1g.10gb: 7}}\n"
    )
    loaded = config.load_nodes(good)
    assert [n.name for n in loaded] == ["big", "slices"]
    assert loaded[0].gpu_count == 8 and loaded[1].mig == {"1g.10gb": 7}
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes:\n- {name: x, gpus: 2}\n")
    with pytest.raises(ValueError, match=r"nodes\[0\]: unknown keys \['gpus'\]"):
        config.load_nodes(bad)


def test_env_overrides_state_dir_and_pod_cidr(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv(config.ENV_STATE_DIR, str(tmp_path / "state"))
    monkeypatch.setenv(config.ENV_POD_CIDR, "127.7.0.0/16")
    cluster_config = config.ClusterConfig.from_env()
    assert cluster_config.state_dir == tmp_path / "state"
    assert cluster_config.pod_cidr == "127.7.0.0/16"
    monkeypatch.setenv(config.ENV_POD_CIDR, "10.244.0.0/16")
    with pytest.raises(ValueError, match=r"127\.0\.0\.0/8"):
        config.ClusterConfig.from_env()
