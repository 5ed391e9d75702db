"""The PromQL builders and settings of the Prometheus reader, as pure functions."""

from __future__ import annotations

import argparse

import pytest

from kinfer.autoscale.metrics import (
    ALL_SERVICES,
    PrometheusSettings,
    Wanted,
    add_arguments,
    batch_query,
    observation,
    queries,
    selector,
    settings_from_args,
    split,
)

GROUP = "namespace, inferenceservice"


def test_selector_escapes_label_values():
    assert selector("team-a", "mlp") == 'namespace="team-a",inferenceservice="mlp"'
    assert selector('a"b', "c\\d") == 'namespace="a\\"b",inferenceservice="c\\\\d"'


def test_onnxruntime_queries_use_the_histogram_grouped_by_service():
    built = queries("onnxruntime", window_s=60, recent_window_s=30)
    sel = ALL_SERVICES
    assert built.qps == f"sum by ({GROUP}) (rate(kinfer_inference_requests_total{{{sel}}}[60s]))"
    assert built.qps_recent.endswith("[30s]))")
    assert built.latency_p95_ms == (
        f"histogram_quantile(0.95, sum by ({GROUP}, le) "
        f"(rate(kinfer_inference_request_duration_seconds_bucket{{{sel}}}[60s]))) * 1000"
    )
    assert f"sum by ({GROUP}, le, version)" in built.latency_p95_ms_by_version
    assert built.qps_by_version.startswith(f"sum by ({GROUP}, version) (rate(")
    assert built.pods_reporting == (
        f"count by ({GROUP}) (count by ({GROUP}, pod) "
        f"(rate(kinfer_inference_requests_total{{{sel}}}[60s])))"
    )
    assert built.newest_sample_age_s == (
        f"time() - max by ({GROUP}) (timestamp(kinfer_inference_requests_total{{{sel}}}))"
    )
    assert built.qps_arriving == f"sum by ({GROUP}) (kinfer_inference_arrival_rate{{{sel}}})"
    one = queries("onnxruntime", sel=selector("team-a", "mlp"))
    assert 'namespace="team-a",inferenceservice="mlp"' in one.qps


def test_triton_queries_count_success_and_failure_and_read_the_summary():
    built = queries("triton", window_s=120)
    assert built.qps == (
        f"(sum by ({GROUP}) (rate(nv_inference_request_success{{{ALL_SERVICES}}}[120s]))"
        f" + (sum by ({GROUP}) (rate(nv_inference_request_failure{{{ALL_SERVICES}}}[120s]))"
        f" or 0 * sum by ({GROUP}) (rate(nv_inference_request_success{{{ALL_SERVICES}}}[120s]))))"
    )
    assert "[120s]" in built.qps
    assert built.latency_p95_ms == (
        f"max by ({GROUP}) ((nv_inference_request_summary_us{{{ALL_SERVICES},"
        'quantile="0.95"} >= 0)) / 1000'
    )
    assert built.latency_p95_ms_by_version.startswith(f"max by ({GROUP}, version) (")
    assert built.qps_arriving is None


@pytest.mark.parametrize("runtime", ["onnxruntime", "triton"])
def test_the_per_version_split_is_also_read_over_the_short_window(runtime):
    built = queries(runtime, window_s=60, recent_window_s=30)
    assert f"sum by ({GROUP}, version) (rate(" in built.qps_by_version_recent
    assert "[30s]" in built.qps_by_version_recent
    assert "[60s]" not in built.qps_by_version_recent
    if runtime == "onnxruntime":
        assert f"sum by ({GROUP}, le, version)" in built.latency_p95_ms_by_version_recent
        assert "[30s]" in built.latency_p95_ms_by_version_recent
    mean = queries(runtime, recent_window_s=30, triton_p95_aggregation="mean")
    if runtime == "triton":
        assert "rate(nv_inference_request_success" in mean.latency_p95_ms_by_version_recent
        assert "[60s]" not in mean.latency_p95_ms_by_version_recent


def test_triton_mean_aggregation_weights_by_request_rate():
    built = queries("triton", triton_p95_aggregation="mean")
    assert built.latency_p95_ms.startswith(f"sum by ({GROUP}) (")
    on = f"* on ({GROUP}, pod, model, version) rate(nv_inference_request_success"
    assert on in built.latency_p95_ms
    assert built.latency_p95_ms_by_version.startswith(f"sum by ({GROUP}, version) (")


def test_unknown_runtime_and_aggregation_are_named():
    with pytest.raises(ValueError, match=r"spec\.runtime: 'tensorflow' must be one of"):
        queries("tensorflow")
    with pytest.raises(ValueError, match="triton_p95_aggregation: 'p99' must be one of max, mean"):
        queries("triton", triton_p95_aggregation="p99")


def test_the_batch_is_one_query_with_every_signal_tagged():
    built = queries("onnxruntime")
    batch = batch_query(built)
    signals = built.signals()
    assert len(signals) == 10
    assert batch.count(" or ") == len(signals) - 1
    for name, promql in signals.items():
        assert f'label_replace({promql}, "kinfer_signal", "{name}", "namespace", ".*")' in batch
    assert len(queries("triton").signals()) == 9  # no arrival gauge


def sample(namespace, name, signal, value, **labels):
    metric = {"namespace": namespace, "inferenceservice": name, "kinfer_signal": signal}
    return {"metric": {**metric, **labels}, "value": [0, str(value)]}


def test_the_answer_splits_by_service_and_version():
    answer = [
        sample("a", "x", "qps", 10),
        sample("a", "x", "latency_p95_ms", 40),
        sample("a", "x", "qps_by_version", 7, version="1"),
        sample("a", "x", "qps_by_version", 3, version="2"),
        sample("a", "x", "latency_p95_ms_by_version", "NaN", version="2"),
        sample("a", "x", "pods_reporting", 2),
        sample("b", "x", "qps", 5),  # same name, another namespace
        sample("b", "x", "qps_by_version", 1, version="fp16"),  # not one of ours
        {"metric": {"kinfer_signal": "qps"}, "value": [0, "1"]},  # no service labels
    ]
    found = split(answer)
    assert found == {
        ("a", "x"): {
            "qps": 10.0,
            "latency_p95_ms": 40.0,
            "qps_by_version": {1: 7.0, 2: 3.0},
            "pods_reporting": 2.0,
        },
        ("b", "x"): {"qps": 5.0},
    }
    x = observation(Wanted("a", "x", "onnxruntime"), found[("a", "x")])
    assert (x.qps, x.latency_p95_ms, x.pods_reporting) == (10.0, 40.0, 2)
    assert x.versions[1].qps == 7.0 and x.versions[2].latency_p95_ms is None
    missing = observation(Wanted("c", "y", "triton"), found.get(("c", "y")))
    assert not missing.ok and missing.error == "no series for c/y (triton) in Prometheus"


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


# -- status.slo: the share within the target -----------------------------------------


def test_the_slo_bucket_is_the_largest_server_bound_at_or_below_the_target():
    from kinfer.autoscale.metrics import slo_bucket

    assert slo_bucket(100) == "0.1"
    assert slo_bucket(120) == "0.1", "between bounds: the lower one, never overstating"
    assert slo_bucket(1000) == "1.0"
    assert slo_bucket(0.01) == "0.0001", "below every bound: the smallest"
    assert slo_bucket(60_000) == "10.0"


def test_the_server_buckets_are_the_operators():
    from kinfer.autoscale.metrics import SERVER_LATENCY_BUCKETS_S
    from kinfer_ort_server.metrics import LATENCY_BUCKETS_S

    assert LATENCY_BUCKETS_S == SERVER_LATENCY_BUCKETS_S


def test_the_slo_query_selects_the_wanted_bounds_and_all_requests():
    from kinfer.autoscale.metrics import slo_query

    query = slo_query({"0.1", "0.25"}, 3600)
    assert query == (
        "sum by (namespace, inferenceservice, le) (increase("
        'kinfer_inference_request_duration_seconds_bucket{inferenceservice!="",'
        'le=~"\\\\+Inf|0\\\\.1|0\\\\.25"}[3600s]))'
    )


def test_bucket_answers_split_per_service_and_a_service_without_requests_has_no_share():
    from kinfer.autoscale.metrics import split_buckets, within_share

    def sample(ns, name, le, value):
        return {
            "metric": {"namespace": ns, "inferenceservice": name, "le": le},
            "value": [0, value],
        }

    found = split_buckets(
        [
            sample("a", "x", "0.1", "30"),
            sample("a", "x", "+Inf", "40"),
            sample("b", "y", "0.1", "0"),
            sample("b", "y", "+Inf", "0"),
            sample("b", "z", "+Inf", "NaN"),
        ]
    )
    assert within_share(found[("a", "x")], "0.1") == 0.75
    assert within_share(found[("b", "y")], "0.1") is None, "no requests: unknown, not 0"
    assert found.get(("b", "z"), {}) == {}, "NaN dropped"
    assert within_share(found[("a", "x")], "0.25") is None, "a bound not read: unknown"
