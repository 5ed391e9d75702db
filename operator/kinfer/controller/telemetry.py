"""The operator's own metrics, on /metrics (prometheus_client): what its loop costs and how
late its decisions are."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import Counter, Histogram, start_http_server

DECISION_LAG = Histogram(
    "kinfer_decision_lag_seconds",
    "Actual time between two scaling decisions of one InferenceService minus its period.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0),
)
METRIC_READS = Counter(
    "kinfer_metric_reads_total",
    "Prometheus queries sent for scaling decisions (one per runtime and window per batch).",
)


API_REQUESTS = Counter(
    "kinfer_api_requests_total",
    "Requests kinfer's Kubernetes client sent, by verb (WATCH for a watch) and resource."
    " kopf's own watches and patches are not counted.",
    ["verb", "resource"],
)


def verb_and_resource(method: str, url: str) -> tuple[str, str]:
    """("LIST", "pods") for GET .../api/v1/namespaces/a/pods, as the API server names them."""
    parts_of_url = urlsplit(url)
    parts = [part for part in parts_of_url.path.split("/") if part]
    # .../api/v1/... or .../apis/<group>/<version>/... (a server URL may have a path prefix)
    if "api" in parts:
        rest = parts[parts.index("api") + 2 :]
    elif "apis" in parts:
        rest = parts[parts.index("apis") + 3 :]
    else:
        rest = parts
    if len(rest) > 2 and rest[0] == "namespaces":
        rest = rest[2:]
    resource = rest[0] if rest else "unknown"
    if len(rest) >= 3:
        resource = f"{resource}/{rest[2]}"  # a subresource: status, scale
    if parse_qs(parts_of_url.query).get("watch", [""])[0] in ("true", "1", "True"):
        return "WATCH", resource
    method = method.upper()
    if method == "GET":
        return ("GET" if len(rest) >= 2 else "LIST"), resource
    return method, resource


def count_requests(api_client: Any) -> None:
    """Count every request `api_client` sends in API_REQUESTS (wraps its call_api)."""
    original: Callable[..., Any] = api_client.call_api

    def call_api(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        verb, resource = verb_and_resource(method, url)
        API_REQUESTS.labels(verb=verb, resource=resource).inc()
        return original(method, url, *args, **kwargs)

    api_client.call_api = call_api


def serve(port: int) -> None:
    """/metrics on 0.0.0.0:port in a background thread (0: not served)."""
    if port:
        start_http_server(port)
