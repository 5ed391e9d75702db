"""Energy per inference: the PromQL on Prometheus' own engine (promtool test rules), the split
of its answer, the status fragments, and the reader's period cache and fail-static."""

from __future__ import annotations

import math
import shutil
import socket
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from kinfer.api import schema
from kinfer.api.constants import ENERGY_SOURCES
from kinfer.autoscale.capacity_model import TierProfile, update_profile
from kinfer.autoscale.energy import (
    EnergyReader,
    energy_query,
    energy_status,
    fold_energy,
    joules_per_inference,
    name_tiers,
    split_energy,
    with_joules_per_inference,
)
from kinfer.autoscale.metrics import LABEL_SIGNAL, PrometheusReader, PrometheusSettings
from kinfer.autoscale.policy import PolicyState

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
WINDOW_S = 300


# -- the PromQL, evaluated by promtool on series as the scrapes would store them ----------------
def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ",".join(f'{key}="{value}"' for key, value in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def _requests(namespace: str, service: str, pod: str, version: str, tier: str | None) -> dict:
    labels = {"namespace": namespace, "inferenceservice": service, "pod": pod, "model": "mlp"}
    labels["version"] = version
    if tier:
        labels["tier"] = tier
    return labels


def _gpu(gpu: str, **pod: str) -> dict[str, str]:
    return {"gpu": gpu, "UUID": f"GPU-{gpu}", "modelName": "A100", "Hostname": "node-0", **pod}


# One sample a minute; evaluated at 10m over [300s]: counters that grow linearly give their
# rate x 300 exactly, a constant gauge its value.
INPUT_SERIES = [
    # team-a/mlp-0: fp32 30/s and int8 10/s on one GPU whose energy counter grows 120 W
    # (its power gauge says 999 W: the counter comes first).
    _series(
        "kinfer_inference_requests_total",
        _requests("team-a", "mlp", "mlp-0", "1", "fp32"),
        "0+1800x20",
    ),
    _series(
        "kinfer_inference_requests_total",
        _requests("team-a", "mlp", "mlp-0", "3", "int8"),
        "0+600x20",
    ),
    _series(
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        _gpu("0", namespace="team-a", pod="mlp-0", container="server"),
        "0+7200000x20",
    ),
    _series(
        "DCGM_FI_DEV_POWER_USAGE",
        _gpu("0", namespace="team-a", pod="mlp-0", container="server"),
        "999x20",
    ),
    # team-a/mlp-1: fp32 20/s, only a power gauge: 80 W x 300 s.
    _series(
        "kinfer_inference_requests_total",
        _requests("team-a", "mlp", "mlp-1", "1", "fp32"),
        "0+1200x20",
    ),
    _series(
        "DCGM_FI_DEV_POWER_USAGE",
        _gpu("1", namespace="team-a", pod="mlp-1", container="server"),
        "80x20",
    ),
    # team-a/mlp-2 served nothing: its idle energy has no inference to go to.
    _series(
        "kinfer_inference_requests_total",
        _requests("team-a", "mlp", "mlp-2", "1", "fp32"),
        "0+0x20",
    ),
    _series(
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        _gpu("2", namespace="team-a", pod="mlp-2", container="server"),
        "0+3000000x20",
    ),
    # A GPU no pod holds.
    _series("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", _gpu("3"), "0+6000000x20"),
    # team-b/tri: Triton, 30 successes/s (failures do not count), 60 J/s of its own counter.
    _series(
        "nv_inference_request_success", _requests("team-b", "tri", "tri-0", "1", None), "0+1800x20"
    ),
    _series(
        "nv_inference_request_failure", _requests("team-b", "tri", "tri-0", "1", None), "0+300x20"
    ),
    _series(
        "nv_energy_consumption",
        {"namespace": "team-b", "inferenceservice": "tri", "pod": "tri-0", "gpu_uuid": "GPU-9"},
        "0+3600x20",
    ),
    # team-c/other: no tiers (30/s); dcgm-exporter scraped without honor_labels, so the GPU's
    # pod is in exported_namespace / exported_pod and namespace / pod are the exporter's.
    _series(
        "kinfer_inference_requests_total",
        _requests("team-c", "other", "other-0", "1", None),
        "0+1800x20",
    ),
    _series(
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        _gpu(
            "0",
            namespace="gpu-operator",
            pod="dcgm-exporter-x",
            exported_namespace="team-c",
            exported_pod="other-0",
            container="server",
        ),
        "0+3600000x20",
    ),
    # team-d/cpu: requests, no GPU energy anywhere.
    _series(
        "kinfer_inference_requests_total",
        _requests("team-d", "cpu", "cpu-0", "1", None),
        "0+600x20",
    ),
]


def _expected(
    signal: str,
    namespace: str,
    service: str,
    version: str,
    tier: str | None,
    source: str,
    value: float,
) -> dict:
    labels = {LABEL_SIGNAL: signal, "namespace": namespace, "inferenceservice": service}
    labels["version"] = version
    if tier:
        labels["tier"] = tier
    labels["source"] = source
    inner = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    return {"labels": f"{{{inner}}}", "value": value}


EXPECTED = [
    # fp32: mlp-0's 9000 requests at 36000 J / 12000 = 3 J, mlp-1's 6000 at 24000 J / 6000 = 4 J.
    _expected("joules", "team-a", "mlp", "1", "fp32", "dcgm", 51000),
    _expected("inferences", "team-a", "mlp", "1", "fp32", "dcgm", 15000),
    # int8: mlp-0's 3000 requests, its share (a quarter) of its 36000 J.
    _expected("joules", "team-a", "mlp", "3", "int8", "dcgm", 9000),
    _expected("inferences", "team-a", "mlp", "3", "int8", "dcgm", 3000),
    _expected("joules", "team-b", "tri", "1", None, "triton", 18000),
    _expected("inferences", "team-b", "tri", "1", None, "triton", 9000),
    _expected("joules", "team-c", "other", "1", None, "dcgm", 18000),
    _expected("inferences", "team-c", "other", "1", None, "dcgm", 9000),
]


@pytest.mark.skipif(
    not Path(PROMTOOL).exists(),
    reason="needs Debian's prometheus package (promtool): apt-get install -y prometheus",
)
def test_energy_query_on_prometheus_engine(tmp_path: Path) -> None:
    tests = {
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": INPUT_SERIES,
                "promql_expr_test": [
                    {"expr": energy_query(WINDOW_S), "eval_time": "10m", "exp_samples": EXPECTED}
                ],
            }
        ],
    }
    path = tmp_path / "energy-test.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run(
        [PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- the answer, split by service ---------------------------------------------------------------
def _sample(signal: str, value: str, source: str = "dcgm", **labels: str) -> dict:
    metric = {LABEL_SIGNAL: signal, "namespace": "team-a", "inferenceservice": "mlp"}
    metric.update(labels, source=source)
    return {"metric": metric, "value": [1700000000.0, value]}


def test_split_divides_joules_by_inferences_per_tier() -> None:
    samples = [
        _sample("joules", "51000", tier="fp32", version="1"),
        _sample("inferences", "15000", tier="fp32", version="1"),
        _sample("joules", "9000", tier="int8", version="3"),
        _sample("inferences", "3000", tier="int8", version="3"),
    ]
    readings = split_energy(samples, WINDOW_S)
    reading = readings[("team-a", "mlp")]
    assert reading.joules_per_inference == {"fp32": pytest.approx(3.4), "int8": pytest.approx(3.0)}
    assert reading.inferences == {"fp32": 15000, "int8": 3000}
    assert (reading.source, reading.window_s) == ("dcgm", WINDOW_S)
    assert joules_per_inference(samples) == {("team-a", "mlp"): reading.joules_per_inference}


def test_split_keys_a_series_without_tier_by_its_version() -> None:
    samples = [
        _sample("joules", "18000", "triton", version="1"),
        _sample("inferences", "9000", "triton", version="1"),
    ]
    reading = split_energy(samples)[("team-a", "mlp")]
    assert reading.joules_per_inference == {"1": 2.0}
    assert reading.source == "triton"
    assert name_tiers(reading.joules_per_inference, ["fp32", "int8"]) == {"fp32": 2.0}
    # Keys that are tier names already, and versions past the tiers, stay as they are.
    assert name_tiers({"fp16": 1.0, "7": 2.0}, ["fp32"]) == {"fp16": 1.0, "7": 2.0}


def test_split_combines_sources_and_names_the_larger() -> None:
    samples = [
        _sample("joules", "300", "dcgm", tier="fp32", version="1"),
        _sample("inferences", "100", "dcgm", tier="fp32", version="1"),
        _sample("joules", "100", "triton", tier="fp32", version="1"),
        _sample("inferences", "300", "triton", tier="fp32", version="1"),
    ]
    reading = split_energy(samples)[("team-a", "mlp")]
    assert reading.joules_per_inference == {"fp32": pytest.approx(1.0)}
    assert reading.source == "triton"


@pytest.mark.parametrize(
    "samples",
    [
        [],
        # No inferences, or 0 of them, for the joules.
        [_sample("joules", "100", tier="fp32", version="1")],
        [
            _sample("joules", "100", tier="fp32", version="1"),
            _sample("inferences", "0", tier="fp32", version="1"),
        ],
        # NaN and infinite values are dropped.
        [
            _sample("joules", "NaN", tier="fp32", version="1"),
            _sample("inferences", "10", tier="fp32", version="1"),
        ],
        [
            _sample("joules", "+Inf", tier="fp32", version="1"),
            _sample("inferences", "10", tier="fp32", version="1"),
        ],
        # Not ours: an unknown signal or source, no service labels, no tier or version.
        [
            _sample("watts", "100", tier="fp32", version="1"),
            _sample("inferences", "10", tier="fp32", version="1"),
        ],
        [
            _sample("joules", "100", "rapl", tier="fp32", version="1"),
            _sample("inferences", "10", "rapl", tier="fp32", version="1"),
        ],
        [
            {
                "metric": {LABEL_SIGNAL: "joules", "source": "dcgm", "tier": "fp32"},
                "value": [0, "1"],
            },
            {
                "metric": {LABEL_SIGNAL: "inferences", "source": "dcgm", "tier": "fp32"},
                "value": [0, "1"],
            },
        ],
        [_sample("joules", "100"), _sample("inferences", "10")],
        # A malformed value.
        [{"metric": {LABEL_SIGNAL: "joules"}, "value": None}],
    ],
)
def test_split_leaves_out_services_without_a_usable_figure(samples: list[dict]) -> None:
    assert split_energy(samples) == {}
    assert joules_per_inference(samples) == {}


def test_split_keeps_the_tiers_that_have_a_figure() -> None:
    samples = [
        _sample("joules", "30", tier="fp32", version="1"),
        _sample("inferences", "10", tier="fp32", version="1"),
        _sample("joules", "NaN", tier="int8", version="3"),
        _sample("inferences", "10", tier="int8", version="3"),
    ]
    assert joules_per_inference(samples) == {("team-a", "mlp"): {"fp32": 3.0}}


# -- status ---------------------------------------------------------------------------------------
def test_energy_status_fragment() -> None:
    now = datetime(2026, 12, 6, 21, 30, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
    fragment = energy_status({"int8": 1.0500049, "fp32": 3.4}, 300, "dcgm", now)
    assert fragment == {
        "joulesPerInference": {"fp32": 3.4, "int8": 1.05},
        "windowSeconds": 300,
        "source": "dcgm",
        "observedAt": "2026-12-06T19:30:05Z",
    }
    assert list(fragment["joulesPerInference"]) == ["fp32", "int8"]
    with pytest.raises(ValueError, match="must be one of dcgm, triton"):
        energy_status({"fp32": 1.0}, 300, "rapl", now)


def test_status_schema_declares_energy_with_the_api_sources() -> None:
    energy = schema.status_schema()["properties"]["energy"]
    assert set(energy["properties"]) == {
        "joulesPerInference",
        "windowSeconds",
        "source",
        "observedAt",
    }
    assert energy["properties"]["source"]["enum"] == list(ENERGY_SOURCES)
    assert energy["properties"]["joulesPerInference"]["additionalProperties"] == {"type": "number"}


def test_tier_profile_carries_joules_per_inference_in_status() -> None:
    profile = with_joules_per_inference(TierProfile(capacity_qps_per_replica=70.0), 3.40001)
    assert profile.joules_per_inference == 3.4
    data = profile.to_dict()
    assert data["joulesPerInference"] == 3.4
    assert "joules_per_inference" not in data
    assert TierProfile.from_dict(data) == profile
    # Unread: no key, as before the field existed.
    assert "joulesPerInference" not in TierProfile().to_dict()
    assert with_joules_per_inference(profile, math.nan).joules_per_inference is None
    # Through the policy state kept in status.
    state = PolicyState(tier_profiles={"fp32": profile})
    again = PolicyState.from_dict(state.to_dict())
    assert again.tier_profiles["fp32"].joules_per_inference == 3.4
    # A capacity re-measurement keeps the energy figure.
    measured = update_profile(profile, qps_per_replica=50.0, latency_p95_ms=20.0, target_ms=50.0)
    assert measured.samples == 1
    assert measured.joules_per_inference == 3.4


def test_fold_energy_sets_the_measured_tiers_only() -> None:
    profiles = {
        "fp32": TierProfile(capacity_qps_per_replica=70.0, joules_per_inference=9.0),
        "int8": TierProfile(capacity_qps_per_replica=200.0, joules_per_inference=1.0),
    }
    folded = fold_energy(profiles, {"fp32": 3.4, "fp16": 2.0})
    assert folded["fp32"] == TierProfile(capacity_qps_per_replica=70.0, joules_per_inference=3.4)
    assert folded["fp16"] == TierProfile(joules_per_inference=2.0)
    assert folded["int8"] is profiles["int8"]
    assert profiles["fp32"].joules_per_inference == 9.0  # not mutated


# -- the reader: one query per period, fail-static ------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_reader_fails_static_once_per_period_on_an_unreachable_prometheus() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    prometheus = PrometheusReader(PrometheusSettings(url=url, timeout_s=2.0))
    reader = EnergyReader(prometheus, window_s=WINDOW_S, period_s=60)
    now = [60.0 * 16_667]  # the start of a period
    reader.clock = lambda: now[0]
    assert reader.read_all() == {}
    assert reader.read("team-a", "mlp") is None
    assert reader.error is not None and url in reader.error
    # The failed answer serves its period: one query, shared with the metrics reader's count.
    assert prometheus.queries_sent == 1
    now[0] += 59.0
    assert reader.read_all() == {}
    assert prometheus.queries_sent == 1
    now[0] += 1.0
    assert reader.read_all() == {}
    assert prometheus.queries_sent == 2


def test_reader_without_a_period_reads_every_time() -> None:
    prometheus = PrometheusReader(
        PrometheusSettings(url=f"http://127.0.0.1:{_closed_port()}", timeout_s=2.0)
    )
    reader = EnergyReader(prometheus, period_s=0)
    reader.read_all()
    reader.read_all()
    assert prometheus.queries_sent == 2


def test_observed_at_is_utc() -> None:
    fragment = energy_status({"fp32": 1.0}, 60, "triton", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert fragment["observedAt"] == "2026-01-02T03:04:05Z"
