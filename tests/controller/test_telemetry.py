"""The operator's request counter names requests as the API server does."""

from __future__ import annotations

import pytest

from kinfer.controller.telemetry import API_REQUESTS, count_requests, verb_and_resource

HOST = "https://127.0.0.1:6443"


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/api/v1/namespaces/a/pods", ("LIST", "pods")),
        ("GET", "/api/v1/pods?labelSelector=x", ("LIST", "pods")),
        ("GET", "/api/v1/nodes", ("LIST", "nodes")),
        ("GET", "/api/v1/namespaces/a/pods?watch=true&resourceVersion=7", ("WATCH", "pods")),
        (
            "GET",
            "/apis/kinfer.dev/v1alpha1/namespaces/a/inferenceservices/mlp",
            ("GET", "inferenceservices"),
        ),
        (
            "PATCH",
            "/apis/kinfer.dev/v1alpha1/namespaces/a/inferenceservices/mlp/status",
            ("PATCH", "inferenceservices/status"),
        ),
        ("POST", "/api/v1/namespaces/a/events", ("POST", "events")),
        ("GET", "/apis/apps/v1/namespaces/a/deployments/mlp", ("GET", "deployments")),
    ],
)
def test_verbs_and_resources(method, path, expected):
    assert verb_and_resource(method, HOST + path) == expected


def test_count_requests_counts_and_passes_through():
    class Client:
        def call_api(self, method, url, header_params=None, body=None, **kwargs):
            return (method, url, body)

    client = Client()
    count_requests(client)
    before = API_REQUESTS.labels(verb="LIST", resource="nodes")._value.get()
    assert client.call_api("GET", HOST + "/api/v1/nodes", {}, None) == (
        "GET",
        HOST + "/api/v1/nodes",
        None,
    )
    assert API_REQUESTS.labels(verb="LIST", resource="nodes")._value.get() == before + 1


def sample(metric, **labels):
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(metric, labels)


def test_a_services_decisions_replicas_and_tiers_and_their_removal():
    from kinfer.controller import telemetry

    body = {"spec": {"replicas": 3}, "status": {"readyReplicas": 2}}
    svc = {"namespace": "t-tel", "inferenceservice": "mlp"}
    telemetry.record_tick("t-tel", "mlp", body, "QPSTarget", 4, False)
    telemetry.record_tick("t-tel", "mlp", body, "MetricsUnavailable", 3, True)
    telemetry.record_tick("t-tel", "mlp", body, None, None, False)  # no decision due
    assert sample("kinfer_decisions_total", **svc, reason="QPSTarget") == 1
    assert sample("kinfer_metric_read_failures_total", **svc) == 1
    assert sample("kinfer_inferenceservice_desired_replicas", **svc) == 3
    assert sample("kinfer_inferenceservice_current_replicas", **svc) == 3
    assert sample("kinfer_inferenceservice_ready_replicas", **svc) == 2
    telemetry.record_tier("t-tel", "mlp", ["fp32", "int8"], "int8", 0.0)
    telemetry.record_tier("t-tel", "mlp", ["fp32", "int8"], "int8", 3.0)
    telemetry.record_tier("t-tel", "mlp", ["fp32", "int8"], "fp32", 2.5)
    assert sample("kinfer_inferenceservice_active_tier", **svc, tier="fp32") == 1
    assert sample("kinfer_inferenceservice_active_tier", **svc, tier="int8") == 0
    assert sample("kinfer_inferenceservice_tier_seconds_total", **svc, tier="int8") == 3.0
    assert sample("kinfer_inferenceservice_tier_seconds_total", **svc, tier="fp32") == 2.5
    telemetry.forget("t-tel", "mlp")
    assert sample("kinfer_inferenceservice_ready_replicas", **svc) is None
    assert sample("kinfer_decisions_total", **svc, reason="QPSTarget") is None
    assert sample("kinfer_inferenceservice_active_tier", **svc, tier="int8") is None


def _sample(name: str, **labels: str) -> float | None:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels)


def test_a_services_slo_facts_and_changes_are_exported_and_go_with_it():
    from kinfer.controller.telemetry import forget, record_changes, record_service

    svc = {"namespace": "team-t", "inferenceservice": "mlp"}
    record_service(
        "team-t",
        "mlp",
        target_s=0.1,
        slo_le="0.1",
        on_lower_tier=True,
        fail_static=False,
        capacity_insufficient=True,
    )
    record_changes("team-t", "mlp", "out", ("fp32", "int8"))
    assert _sample("kinfer_inferenceservice_latency_target_seconds", **svc) == 0.1
    assert _sample("kinfer_inferenceservice_slo_bucket", le="0.1", **svc) == 1
    assert _sample("kinfer_inferenceservice_on_lower_tier", **svc) == 1
    assert _sample("kinfer_inferenceservice_fail_static", **svc) == 0
    assert _sample("kinfer_inferenceservice_capacity_insufficient", **svc) == 1
    assert _sample("kinfer_inferenceservice_scale_events_total", direction="out", **svc) == 1
    switch = {"from_tier": "fp32", "to_tier": "int8", **svc}
    assert _sample("kinfer_inferenceservice_tier_switches_total", **switch) == 1
    # The target moves to 250 ms: one bucket series, the new one.
    record_service(
        "team-t",
        "mlp",
        target_s=0.25,
        slo_le="0.25",
        on_lower_tier=False,
        fail_static=True,
        capacity_insufficient=False,
    )
    assert _sample("kinfer_inferenceservice_slo_bucket", le="0.1", **svc) is None
    assert _sample("kinfer_inferenceservice_slo_bucket", le="0.25", **svc) == 1
    assert _sample("kinfer_inferenceservice_fail_static", **svc) == 1
    record_service(
        "team-t",
        "mlp",
        target_s=0.25,
        slo_le="0.25",
        on_lower_tier=False,
        fail_static=True,
        capacity_insufficient=False,
        tiers=["fp32", "int8"],
        joules={"int8": 0.2},
    )
    assert _sample("kinfer_inferenceservice_scale_events_total", direction="in", **svc) == 0
    back = {"from_tier": "int8", "to_tier": "fp32", **svc}
    assert _sample("kinfer_inferenceservice_tier_switches_total", **back) == 0, "there at 0"
    assert _sample("kinfer_inferenceservice_joules_per_inference", tier="int8", **svc) == 0.2
    forget("team-t", "mlp")
    assert _sample("kinfer_inferenceservice_joules_per_inference", tier="int8", **svc) is None
    assert _sample("kinfer_inferenceservice_latency_target_seconds", **svc) is None
    assert _sample("kinfer_inferenceservice_tier_switches_total", **switch) is None
