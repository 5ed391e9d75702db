"""The local Prometheus: its config (from the shipped scrape config) and command line (pure)."""

from __future__ import annotations

import copy
import re
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

SCRAPE_CONFIG_RESOURCE = ("prometheus", "scrape-config.yaml")


def scrape_config_path() -> Path:
    """The shipped scrape config (also meant for manifests/): one source of truth."""
    return Path(str(resources.files("kinfer_dev.localcluster").joinpath(*SCRAPE_CONFIG_RESOURCE)))


def load_scrape_configs() -> list[dict[str, Any]]:
    return list(yaml.safe_load(scrape_config_path().read_text())["scrape_configs"])


def local_config(
    targets_file: Path, scrape_interval_s: int, power_simulator_address: str | None = None
) -> dict[str, Any]:
    """The shipped scrape config for the local cluster: pods from file_sd, loopback only.

    Debian's prometheus has no Kubernetes discovery, so `kubernetes_sd_configs`
    becomes a file_sd that the pod runner writes with the same
    `__meta_kubernetes_*` labels (see discovery.py): the relabelling is the
    shipped one, unchanged.
    """
    scrape_configs = copy.deepcopy(load_scrape_configs())
    for scrape in scrape_configs:
        if scrape.pop("kubernetes_sd_configs", None) is not None:
            scrape["file_sd_configs"] = [
                {"files": [str(targets_file)], "refresh_interval": f"{scrape_interval_s}s"}
            ]
        # Network safety: whatever a pod claims as its IP, only loopback
        # targets are ever scraped on this machine.
        scrape.setdefault("relabel_configs", []).append(
            {"source_labels": ["__address__"], "action": "keep", "regex": r"127\.[0-9.]+:[0-9]+"}
        )
    if power_simulator_address is not None:
        scrape_configs.append(power_simulator_job(power_simulator_address))
    return {"global": _global(scrape_interval_s), "scrape_configs": scrape_configs}


POWER_SIMULATOR_JOB = "kinfer-power-simulator"


def power_simulator_job(address: str) -> dict[str, Any]:
    """The simulated GPU power exporter's job (power_simulator.py). Its series name the GPU's
    pod in `namespace` and `pod`, as dcgm-exporter's do: honor_labels keeps them. Loopback only."""
    return {
        "job_name": POWER_SIMULATOR_JOB,
        "honor_labels": True,
        "static_configs": [{"targets": [address]}],
        "relabel_configs": [
            {"source_labels": ["__address__"], "action": "keep", "regex": r"127\.[0-9.]+:[0-9]+"}
        ],
    }


SIMULATOR_JOB = "kinfer-metrics-simulator"


def simulated_config(
    simulator_address: str, scrape_interval_s: int, query_log: Path | None = None
) -> dict[str, Any]:
    """Simulated-pods mode: one target, the metrics simulator, instead of one per pod.

    Its series already carry `namespace`, `inferenceservice`, `pod` and `runtime`, as the
    shipped relabelling would have put them: honor_labels keeps them. No pod address is
    ever scraped in this mode (the pods run nothing). The query log lets a bench count the
    queries an operator sends.
    """
    if not re.fullmatch(r"127\.[0-9.]+:[0-9]+", simulator_address):
        raise ValueError(f"metrics simulator address {simulator_address!r}: loopback only")
    config = {
        "global": _global(scrape_interval_s),
        "scrape_configs": [
            {
                "job_name": SIMULATOR_JOB,
                "honor_labels": True,
                "static_configs": [{"targets": [simulator_address]}],
            }
        ],
    }
    if query_log is not None:
        config["global"]["query_log_file"] = str(query_log)
    return config


def _global(scrape_interval_s: int) -> dict[str, Any]:
    return {
        "scrape_interval": f"{scrape_interval_s}s",
        "scrape_timeout": f"{max(1, scrape_interval_s - 1)}s",
        "evaluation_interval": f"{scrape_interval_s}s",
    }


def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        raise FileNotFoundError(
            "the `prometheus` command is not on PATH; install Debian's package "
            "(apt-get install -y prometheus; kinfer never starts its system service)"
        )
    return binary


def prometheus_argv(binary: str, config_file: Path, data_dir: Path, port: int) -> list[str]:
    return [
        binary,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={data_dir}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1d",
        # Debian's build reads console templates from /etc; none are needed.
        "--web.console.templates=/dev/null",
        "--web.console.libraries=/dev/null",
        "--web.enable-lifecycle",
        "--log.level=warn",
    ]
