"""The PromQL builders and settings of the Prometheus reader, as pure functions."""

from __future__ import annotations

import argparse

import pytest

from kinfer.autoscale.metrics import (
    PrometheusSettings,
    add_arguments,
    queries,
    selector,
    settings_from_args,
)


def test_selector_escapes_label_values():
    assert selector("team-a", "mlp") == 'namespace="team-a",inferenceservice="mlp"'
    assert selector('a"b', "c\\d") == 'namespace="a\\"b",inferenceservice="c\\\\d"'


def test_onnxruntime_queries_use_the_histogram():
    built = queries("team-a", "mlp", "onnxruntime", window_s=60, recent_window_s=30)
    sel = 'namespace="team-a",inferenceservice="mlp"'
    assert built.qps == f"sum(rate(kinfer_inference_requests_total{{{sel}}}[60s]))"
    assert built.qps_recent == f"sum(rate(kinfer_inference_requests_total{{{sel}}}[30s]))"
    assert built.latency_p95_ms == (
        "histogram_quantile(0.95, sum by (le) "
        f"(rate(kinfer_inference_request_duration_seconds_bucket{{{sel}}}[60s]))) * 1000"
    )
    assert "sum by (le, version)" in built.latency_p95_ms_by_version
    assert built.qps_by_version.startswith("sum by (version) (rate(")
    assert built.pods_reporting == (
        f"count(count by (pod) (rate(kinfer_inference_requests_total{{{sel}}}[60s])))"
    )
    assert built.newest_sample_age_s == (
        f"time() - max(timestamp(kinfer_inference_requests_total{{{sel}}}))"
    )
    assert built.qps_arriving == f"sum(kinfer_inference_arrival_rate{{{sel}}})"


def test_triton_queries_count_success_and_failure_and_read_the_summary():
    built = queries("ns", "big", "triton", window_s=120)
    assert '__name__=~"nv_inference_request_success|nv_inference_request_failure"' in built.qps
    assert "[120s]" in built.qps
    assert built.latency_p95_ms == (
        'max((nv_inference_request_summary_us{namespace="ns",inferenceservice="big",'
        'quantile="0.95"} >= 0)) / 1000'
    )
    assert built.latency_p95_ms_by_version.startswith("max by (version) (")
    assert built.qps_arriving is None


@pytest.mark.parametrize("runtime", ["onnxruntime", "triton"])
def test_the_per_version_split_is_also_read_over_the_short_window(runtime):
    built = queries("ns", "big", runtime, window_s=60, recent_window_s=30)
    assert built.qps_by_version_recent.startswith("sum by (version) (rate(")
    assert "[30s]" in built.qps_by_version_recent
    assert "[60s]" not in built.qps_by_version_recent
    if runtime == "onnxruntime":
        assert "sum by (le, version)" in built.latency_p95_ms_by_version_recent
        assert "[30s]" in built.latency_p95_ms_by_version_recent
    mean = queries("ns", "big", runtime, recent_window_s=30, triton_p95_aggregation="mean")
    if runtime == "triton":
        assert "rate(nv_inference_request_success" in mean.latency_p95_ms_by_version_recent
        assert "[60s]" not in mean.latency_p95_ms_by_version_recent


def test_triton_mean_aggregation_weights_by_request_rate():
    built = queries("ns", "big", "triton", triton_p95_aggregation="mean")
    assert built.latency_p95_ms.startswith("sum (")
    assert "* on (pod, model, version) rate(nv_inference_request_success" in built.latency_p95_ms
    assert built.latency_p95_ms_by_version.startswith("sum by (version) (")


def test_unknown_runtime_and_aggregation_are_named():
    with pytest.raises(ValueError, match=r"spec\.runtime: 'tensorflow' must be one of"):
        queries("ns", "x", "tensorflow")
    with pytest.raises(ValueError, match="triton_p95_aggregation: 'p99' must be one of max, mean"):
        queries("ns", "x", "triton", triton_p95_aggregation="p99")


def test_settings_from_env():
    settings = PrometheusSettings.from_env(
        {
            "KINFER_PROMETHEUS_URL": "https://prom.monitoring:9091",
            "KINFER_PROMETHEUS_BEARER_TOKEN_FILE": "/var/run/token",
            "KINFER_PROMETHEUS_CA_FILE": "/etc/ca.pem",
            "KINFER_PROMETHEUS_INSECURE_SKIP_VERIFY": "true",
            "KINFER_PROMETHEUS_TRITON_P95": "mean",
        }
    )
    assert settings.url == "https://prom.monitoring:9091"
    assert settings.bearer_token_file == "/var/run/token"
    assert settings.ca_file == "/etc/ca.pem"
    assert settings.insecure_skip_verify
    assert settings.triton_p95_aggregation == "mean"
    assert PrometheusSettings.from_env({}) == PrometheusSettings()


def test_flags_override_env(monkeypatch):
    monkeypatch.setenv("KINFER_PROMETHEUS_URL", "http://127.0.0.1:9999")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert settings_from_args(parser.parse_args([])).url == "http://127.0.0.1:9999"
    args = parser.parse_args(
        [
            "--prometheus-url",
            "http://127.0.0.1:9090",
            "--prometheus-username",
            "u",
            "--prometheus-password",
            "p",
        ]
    )
    settings = settings_from_args(args)
    assert settings.url == "http://127.0.0.1:9090"
    assert (settings.username, settings.password) == ("u", "p")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "prom:9090"}, "--prometheus-url: 'prom:9090' must start with http"),
        ({"triton_p95_aggregation": "p99"}, "--prometheus-triton-p95: 'p99' must be one of"),
        ({"timeout_s": 0}, "--prometheus-timeout-s: 0 must be > 0"),
        ({"username": "u"}, "--prometheus-username and --prometheus-password go together"),
    ],
)
def test_settings_errors_name_the_flag(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PrometheusSettings(**kwargs)
