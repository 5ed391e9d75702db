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
