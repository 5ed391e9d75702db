"""The local Prometheus: its config (from the shipped scrape config) and command line (pure)."""

from __future__ import annotations

import copy
import re
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from kinfer_dev.localcluster import discovery

SCRAPE_CONFIG_RESOURCE = ("prometheus", "scrape-config.yaml")
# manifests/prometheus/rules/kinfer-rules.yaml (`make rules` copies it here; a test
# keeps the two identical).
RULES_RESOURCE = ("prometheus", "kinfer-rules.yaml")
# The shipped job that scrapes the operator; locally a file_sd on OPERATOR_TARGETS_FILE.
OPERATOR_JOB = "kinfer-operator"
OPERATOR_TARGETS_FILE = "operator-targets.json"
LOOPBACK_TARGET = r"127\.[0-9.]+:[0-9]+"


def scrape_config_path() -> Path:
    """The shipped scrape config (also meant for manifests/): one source of truth."""
    return Path(str(resources.files("kinfer_dev.localcluster").joinpath(*SCRAPE_CONFIG_RESOURCE)))


def rules_path() -> Path:
    """The shipped plain rules file (recording rules and alerts, docs/observability.md)."""
    return Path(str(resources.files("kinfer_dev.localcluster").joinpath(*RULES_RESOURCE)))


def load_scrape_configs() -> list[dict[str, Any]]:
    return list(yaml.safe_load(scrape_config_path().read_text())["scrape_configs"])


def local_config(
    targets_file: Path,
    scrape_interval_s: int,
    operator_targets_file: Path | None = None,
    power_simulator_address: str | None = None,
) -> dict[str, Any]:
    """The shipped scrape config and rules for the local cluster: file_sd, loopback only.

    Debian's prometheus has no Kubernetes discovery, so the pods' `kubernetes_sd_configs`
    becomes a file_sd that the pod runner writes with the same `__meta_kubernetes_*`
    labels (see discovery.py): the relabelling is the shipped one, unchanged. The
    operator runs as a local process, not a pod: its job becomes a file_sd on
    `operator_targets_file` (write_operator_target), without the pod relabelling; None
    leaves the job out.
    """
    scrape_configs = []
    for scrape in copy.deepcopy(load_scrape_configs()):
        if scrape["job_name"] == OPERATOR_JOB:
            if operator_targets_file is None:
                continue
            scrape.pop("relabel_configs", None)
            targets_file_of_job = operator_targets_file
        else:
            targets_file_of_job = targets_file
        if scrape.pop("kubernetes_sd_configs", None) is not None:
            scrape["file_sd_configs"] = [
                {"files": [str(targets_file_of_job)], "refresh_interval": f"{scrape_interval_s}s"}
            ]
        # Network safety: whatever a pod claims as its IP, only loopback
        # targets are ever scraped on this machine.
        scrape.setdefault("relabel_configs", []).append(
            {"source_labels": ["__address__"], "action": "keep", "regex": LOOPBACK_TARGET}
        )
        scrape_configs.append(scrape)
    if power_simulator_address is not None:
        scrape_configs.append(power_simulator_job(power_simulator_address))
    return {
        "global": _global(scrape_interval_s),
        "rule_files": [str(rules_path())],
        "scrape_configs": scrape_configs,
    }


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


def operator_targets_path(state_dir: Path) -> Path:
    return state_dir / OPERATOR_TARGETS_FILE


def write_operator_target(state_dir: Path, port: int) -> None:
    """Have the local Prometheus scrape the operator's /metrics on 127.0.0.1:`port`."""
    target = [{"targets": [f"127.0.0.1:{port}"], "labels": {}}]
    discovery.write_targets(operator_targets_path(state_dir), target)


def clear_operator_target(state_dir: Path) -> None:
    """No operator to scrape (KinferOperatorDown fires after its `for`)."""
    discovery.write_targets(operator_targets_path(state_dir), [])


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
    if not re.fullmatch(LOOPBACK_TARGET, simulator_address):
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
