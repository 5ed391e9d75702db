"""Simulated-pods mode, pure parts: the KWOK Stages variant, the config, the audit policy, the
Prometheus job, the load profiles, the M/M/1 pod and the metrics simulator's exposition."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from kinfer_dev.localcluster import controlplane, prometheus, stages
from kinfer_dev.localcluster.config import ENV_SIMULATED_PODS, ClusterConfig
from kinfer_dev.localcluster.metrics_simulator import (
    LATENCY_BUCKETS_S,
    Fleet,
    exposition,
    format_bound,
)
from kinfer_dev.localcluster.pki import OPERATOR_USER
from kinfer_dev.localcluster.simulated_load import (
    DEFAULT_CAPACITY_QPS,
    MAX_P95_S,
    LoadProfile,
    PodLoad,
    parse_capacity,
    parse_profile,
    split_load,
)

# -- the Stages ---------------------------------------------------------------


def _shipped() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(stages.shipped_path().read_text()))


def test_simulated_stages_drop_the_runner_stages_and_let_kinfer_pods_become_ready() -> None:
    variant = {s["metadata"]["name"]: s for s in stages.simulated_stages(_shipped())}
    assert not set(stages.RUNNER_STAGES) & set(variant)
    keys = [e["key"] for e in variant["pod-ready"]["spec"]["selector"]["matchExpressions"]]
    assert '.metadata.labels["kinfer.dev/inferenceservice"]' not in keys
    # Everything else is KWOK's general lifecycle, unchanged.
    shipped = {s["metadata"]["name"]: s for s in _shipped()}
    for name in ("node-initialize", "pod-create", "pod-init-container-completed", "pod-delete"):
        assert variant[name] == shipped[name]


def test_the_shipped_stages_are_written_unchanged_without_simulated_pods(tmp_path: Path) -> None:
    stages.write_stages(tmp_path / "real.yaml", simulated_pods=False)
    assert (tmp_path / "real.yaml").read_text() == stages.shipped_path().read_text()
    stages.write_stages(tmp_path / "simulated.yaml", simulated_pods=True)
    names = [
        s["metadata"]["name"] for s in yaml.safe_load_all((tmp_path / "simulated.yaml").read_text())
    ]
    assert "pod-ready" in names and "kinfer-pod-sync" not in names


def test_simulated_stages_refuse_stages_they_do_not_know() -> None:
    with pytest.raises(ValueError, match="kinfer-pod-sync"):
        stages.simulated_stages(
            [s for s in _shipped() if s["metadata"]["name"] != "kinfer-pod-sync"]
        )


# -- config, audit, Prometheus -------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", True), ("true", True), ("0", False), ("no", False)]
)
def test_simulated_pods_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, raw: str, expected: bool
) -> None:
    monkeypatch.setenv(ENV_SIMULATED_PODS, raw)
    assert ClusterConfig.from_env(state_dir=tmp_path).simulated_pods is expected


def test_a_bad_simulated_pods_value_says_what_is_valid(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(ENV_SIMULATED_PODS, "maybe")
    with pytest.raises(ValueError, match="KINFER_CLUSTER_SIMULATED_PODS='maybe'"):
        ClusterConfig.from_env(state_dir=tmp_path)


def test_audit_policy_logs_only_the_operator_users_requests(tmp_path: Path) -> None:
    policy = controlplane.audit_policy()
    assert policy["rules"][0] == {"level": "Metadata", "users": [OPERATOR_USER]}
    assert policy["rules"][-1] == {"level": "None"}
    audit = controlplane.Audit(tmp_path / "policy.yaml", tmp_path / "audit.log")
    argv = controlplane.audit_argv(audit)
    assert f"--audit-policy-file={audit.policy_file}" in argv
    assert f"--audit-log-path={audit.log_file}" in argv


def test_simulated_prometheus_config_scrapes_the_simulator_alone(tmp_path: Path) -> None:
    config = prometheus.simulated_config("127.0.0.1:9400", 2, tmp_path / "queries.log")
    (job,) = config["scrape_configs"]
    assert job["honor_labels"] is True
    assert job["static_configs"] == [{"targets": ["127.0.0.1:9400"]}]
    assert config["global"]["query_log_file"] == str(tmp_path / "queries.log")
    with pytest.raises(ValueError, match="loopback"):
        prometheus.simulated_config("10.0.0.1:9400", 2)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) absent")
def test_simulated_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    config_file = tmp_path / "prometheus.yml"
    config = prometheus.simulated_config("127.0.0.1:9400", 2, tmp_path / "queries.log")
    config_file.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        ["promtool", "check", "config", str(config_file)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- load profiles ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "profile"),
    [
        (None, LoadProfile()),
        ("", LoadProfile()),
        ("idle", LoadProfile()),
        ("steady:50", LoadProfile("steady", 50, 50)),
        ("square:20:200:60", LoadProfile("square", 20, 200, 60)),
        ("sine:0:100:120:30", LoadProfile("sine", 0, 100, 120, 30)),
    ],
)
def test_profiles_parse(text: str | None, profile: LoadProfile) -> None:
    assert parse_profile(text) == profile


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("burst:10", "unknown shape"),
        ("steady", "wrong number of fields"),
        ("steady:fast", "numbers expected"),
        ("square:20:200", "wrong number of fields"),
        ("square:20:200:0", "period must be > 0"),
        ("steady:-5", "finite and >= 0"),
    ],
)
def test_bad_profiles_say_what_is_valid(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as error:
        parse_profile(text)
    assert "square:LOW:HIGH:PERIOD_S" in str(error.value)


def test_profiles_round_trip_through_their_text() -> None:
    for text in ("idle", "steady:50", "square:20:200:60", "sine:0:100:120:30"):
        assert str(parse_profile(text)) == text


def test_square_is_low_then_high_each_period_and_phase_shifts_it() -> None:
    square = parse_profile("square:20:200:60")
    assert [square.qps(t) for t in (0, 29.9, 30, 59.9, 60)] == [20, 20, 200, 200, 20]
    shifted = parse_profile("square:20:200:60:30")
    assert shifted.qps(0) == 200 and shifted.qps(30) == 20


def test_sine_goes_from_low_to_high_and_back() -> None:
    sine = parse_profile("sine:10:110:100")
    assert sine.qps(0) == pytest.approx(10)
    assert sine.qps(50) == pytest.approx(110)
    assert sine.qps(25) == pytest.approx(60)
    assert sine.qps(100) == pytest.approx(10)


def test_steady_and_idle_do_not_move() -> None:
    assert {parse_profile("steady:50").qps(t) for t in range(0, 300, 7)} == {50}
    assert parse_profile("idle").qps(123) == 0


def test_capacity_defaults_and_must_be_positive() -> None:
    assert parse_capacity(None) == DEFAULT_CAPACITY_QPS
    assert parse_capacity("250") == 250
    for bad in ("0", "-3", "lots", "inf"):
        with pytest.raises(ValueError, match="QPS > 0"):
            parse_capacity(bad)


# -- the queueing model ------------------------------------------------------------


def test_mm1_p95_is_ln20_over_the_drain_rate() -> None:
    assert PodLoad(0, 100).latency_p95_s == pytest.approx(math.log(20) / 100)
    assert PodLoad(80, 100).latency_p95_s == pytest.approx(math.log(20) / 20)
    # The model's CDF at its p95 is 95 %.
    load = PodLoad(50, 100)
    assert load.fraction_within(load.latency_p95_s) == pytest.approx(0.95)


def test_latency_grows_with_load_and_is_capped_at_saturation() -> None:
    p95s = [PodLoad(qps, 100).latency_p95_s for qps in (0, 50, 90, 99)]
    assert p95s == sorted(p95s)
    assert PodLoad(100, 100).latency_p95_s == pytest.approx(MAX_P95_S)
    assert PodLoad(500, 100).latency_p95_s == pytest.approx(MAX_P95_S)


def test_an_overloaded_pod_serves_its_capacity() -> None:
    assert PodLoad(40, 100).served_qps == 40
    assert PodLoad(300, 100).served_qps == 100


def test_load_is_split_evenly_across_ready_pods() -> None:
    assert split_load(300, 3) == 100
    assert split_load(300, 0) == 0


# -- the simulator's fleet and exposition -----------------------------------------


def test_buckets_are_the_servers() -> None:
    from kinfer_ort_server.metrics import LATENCY_BUCKETS_S as server_buckets

    assert server_buckets == LATENCY_BUCKETS_S
    assert [format_bound(b) for b in (0.0001, 0.5, 1.0, 10.0)] == ["0.0001", "0.5", "1.0", "10.0"]


def _isvc(name: str, load: str | None = None, model: str | None = None) -> dict[str, Any]:
    annotations = {"kinfer.dev/simulated-load": load} if load else {}
    spec: dict[str, Any] = {"runtime": "onnxruntime", "model": {"storageUri": "x"}}
    if model:
        spec["model"]["name"] = model
    return {"metadata": {"namespace": "ns", "name": name, "annotations": annotations}, "spec": spec}


def _pod(name: str, isvc: str, ready: bool = True, runtime: str = "onnxruntime") -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "ns",
            "name": name,
            "labels": {"kinfer.dev/inferenceservice": isvc, "kinfer.dev/runtime": runtime},
        },
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _value(text: str, name: str, pod: str, **extra: str) -> float:
    for (sample, labels), value in _samples(text).items():
        labels_dict = dict(labels)
        if (
            sample == name
            and labels_dict.get("pod") == pod
            and all(labels_dict.get(k) == v for k, v in extra.items())
        ):
            return value
    raise KeyError((name, pod, extra))


def test_each_ready_pod_gets_its_share_with_the_contract_labels() -> None:
    fleet = Fleet()
    fleet.service_event("ADDED", _isvc("busy", "steady:120", model="mlp"), 0.0)
    fleet.replace_pods([_pod("busy-a", "busy"), _pod("busy-b", "busy")], 0.0)
    fleet.advance(10.0)
    text = exposition(fleet.series())
    labels = dict(next(k[1] for k in _samples(text) if k[0] == "kinfer_inference_requests_total"))
    assert labels == {
        "namespace": "ns",
        "inferenceservice": "busy",
        "pod": labels["pod"],
        "runtime": "onnxruntime",
        "model": "mlp",
        "version": "1",
        "tier": "",
    }
    for pod in ("busy-a", "busy-b"):
        assert _value(text, "kinfer_inference_requests_total", pod) == pytest.approx(600)
        assert _value(text, "kinfer_inference_arrival_rate", pod) == pytest.approx(60)
        assert _value(
            text, "kinfer_inference_request_duration_seconds_count", pod
        ) == pytest.approx(600)


def test_the_histogram_is_cumulative_and_its_p95_is_the_models() -> None:
    fleet = Fleet()
    fleet.service_event("ADDED", _isvc("busy", "steady:80"), 0.0)
    fleet.pod_event("ADDED", _pod("busy-a", "busy"), 0.0)
    fleet.advance(100.0)
    text = exposition(fleet.series())
    counts = [
        _value(
            text, "kinfer_inference_request_duration_seconds_bucket", "busy-a", le=format_bound(b)
        )
        for b in LATENCY_BUCKETS_S
    ]
    total = _value(text, "kinfer_inference_request_duration_seconds_bucket", "busy-a", le="+Inf")
    assert counts == sorted(counts) and counts[-1] <= total == pytest.approx(8000)
    # p95 = ln(20)/20 = 150 ms: 95 % fall within it, so bucket 0.15 holds about 95 %.
    within_150ms = counts[LATENCY_BUCKETS_S.index(0.15)] / total
    assert within_150ms == pytest.approx(1 - math.exp(-20 * 0.15))
    assert 0.94 < within_150ms < 0.96


def test_pods_not_ready_other_runtimes_and_deleted_pods_have_no_series() -> None:
    fleet = Fleet()
    fleet.service_event("ADDED", _isvc("svc", "steady:10"), 0.0)
    fleet.replace_pods(
        [
            _pod("ready", "svc"),
            _pod("starting", "svc", ready=False),
            _pod("t", "svc", runtime="triton"),
        ],
        0.0,
    )
    assert {
        p for (_, labels) in _samples(exposition(fleet.series())) for k, p in labels if k == "pod"
    } == {"ready"}
    fleet.pod_event("DELETED", _pod("ready", "svc"), 1.0)
    assert fleet.series() == []


def test_load_moves_with_the_profile_and_is_resplit_when_pods_change() -> None:
    fleet = Fleet()
    fleet.service_event("ADDED", _isvc("svc", "square:0:100:20"), 0.0)
    fleet.pod_event("ADDED", _pod("a", "svc"), 0.0)
    fleet.advance(10.0)  # the low half: nothing
    assert _value(exposition(fleet.series()), "kinfer_inference_requests_total", "a") == 0
    fleet.advance(15.0)  # 5 s of the high half, alone
    fleet.pod_event("ADDED", _pod("b", "svc"), 15.0)
    fleet.advance(20.0)  # 5 s more, shared
    text = exposition(fleet.series())
    assert _value(text, "kinfer_inference_requests_total", "a") == pytest.approx(500 + 250)
    assert _value(text, "kinfer_inference_requests_total", "b") == pytest.approx(250)
    assert _value(text, "kinfer_inference_arrival_rate", "b") == pytest.approx(0)  # low again


def test_a_changed_annotation_applies_from_then_on_and_a_bad_one_means_idle() -> None:
    fleet = Fleet()
    fleet.service_event("ADDED", _isvc("svc", "steady:10"), 0.0)
    fleet.pod_event("ADDED", _pod("a", "svc"), 0.0)
    fleet.service_event("MODIFIED", _isvc("svc", "steady:50"), 10.0)
    fleet.advance(20.0)
    assert _value(
        exposition(fleet.series()), "kinfer_inference_requests_total", "a"
    ) == pytest.approx(600)
    fleet.service_event("MODIFIED", _isvc("svc", "warp:9"), 20.0)
    fleet.advance(30.0)
    assert _value(
        exposition(fleet.series()), "kinfer_inference_requests_total", "a"
    ) == pytest.approx(600)


def test_a_deleted_service_is_forgotten_once_its_pods_are_gone() -> None:
    fleet = Fleet()
    fleet.replace_services([_isvc("svc", "steady:10")], 0.0)
    fleet.pod_event("ADDED", _pod("a", "svc"), 0.0)
    fleet.replace_services([], 1.0)
    assert ("ns", "svc") in fleet.services
    fleet.replace_pods([], 2.0)
    assert fleet.services == {} and fleet.pod_owner == {}


def test_label_values_are_escaped() -> None:
    fleet = Fleet()
    fleet.pod_event("ADDED", _pod("a", "svc"), 0.0)
    fleet.service_event("ADDED", _isvc("svc", model='m"1\\'), 0.0)
    text = exposition(fleet.series())
    assert _value(text, "kinfer_inference_requests_total", "a", model='m"1\\') == 0


# -- the command lines --------------------------------------------------------------


def test_cluster_up_takes_simulated_pods_from_its_flag(tmp_path: Path) -> None:
    import argparse

    from kinfer_dev.localcluster import cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["cluster", "up", "--state-dir", str(tmp_path), "--simulated-pods"])
    assert cli._config(args).simulated_pods is True
    args = parser.parse_args(["cluster", "up", "--state-dir", str(tmp_path)])
    assert cli._config(args).simulated_pods is False


def test_the_operator_bench_refuses_a_running_cluster_without_simulated_pods(
    tmp_path: Path,
) -> None:
    import argparse
    import json
    import sys
    from dataclasses import asdict

    from kinfer_dev.fleet import bench
    from kinfer_dev.localcluster.cluster import STATE_FILE, ClusterState
    from kinfer_dev.localcluster.processes import ProcessRecord, _start_ticks

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ticks = _start_ticks(sleeper.pid)
        assert ticks is not None
        record = ProcessRecord("etcd", sleeper.pid, ["sleep"], "", ticks)
        (tmp_path / "processes.json").write_text(json.dumps([asdict(record)]))
        state = ClusterState(
            str(tmp_path), "", "", "", "", "127.1.0.0/16", [], 0.0, {}, 0.0, simulated_pods=False
        )
        (tmp_path / STATE_FILE).write_text(json.dumps(asdict(state)))
        args = argparse.Namespace(services=10, moving_share=0.1, state_dir=tmp_path, pod_cidr=None)
        with pytest.raises(bench.BenchError, match="without simulated pods"):
            bench.open_cluster(args)
    finally:
        sleeper.kill()
        sleeper.wait(timeout=30)
