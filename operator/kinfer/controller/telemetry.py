"""The operator's own metrics, on /metrics (prometheus_client): what its loop costs, how late
its decisions are, and what it decided for each InferenceService (labels `namespace` and
`inferenceservice`, removed when the service goes)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import Counter, Gauge, Histogram, start_http_server

DECISION_LAG = Histogram(
    "kinfer_decision_lag_seconds",
    "Actual time between two scaling decisions of one InferenceService minus its period.",
    buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.5, 2.0, 5.0, 10.0),
)
METRIC_READS = Counter(
    "kinfer_metric_reads_total",
    "Prometheus queries sent for scaling decisions (one per runtime and window per batch).",
)


SERVICE = ["namespace", "inferenceservice"]
RECONCILES = Counter(
    "kinfer_reconciles_total",
    "Reconciles of InferenceServices (on a change, and every resync), by result.",
    ["result"],
)
# Both results exist from the start at 0, so that rate() sees the first error.
for _result in ("success", "error"):
    RECONCILES.labels(_result)
DECISIONS = Counter(
    "kinfer_decisions_total",
    "Scaling decisions, by the deciding stage's reason (docs/autoscaling.md, Reasons).",
    [*SERVICE, "reason"],
)
METRIC_READ_FAILURES = Counter(
    "kinfer_metric_read_failures_total",
    "Decisions without usable metrics (Prometheus unreachable, no series): replicas held.",
    SERVICE,
)
DESIRED_REPLICAS = Gauge(
    "kinfer_inferenceservice_desired_replicas", "Replicas the last decision asked for.", SERVICE
)
CURRENT_REPLICAS = Gauge(
    "kinfer_inferenceservice_current_replicas", "spec.replicas as the last tick read it.", SERVICE
)
READY_REPLICAS = Gauge(
    "kinfer_inferenceservice_ready_replicas", "Ready replicas as the last tick read them.", SERVICE
)
ACTIVE_TIER = Gauge(
    "kinfer_inferenceservice_active_tier",
    "1 for the precision tier the Ready pods serve (status.activeTier), 0 for the others.",
    [*SERVICE, "tier"],
)
TIER_SECONDS = Counter(
    "kinfer_inferenceservice_tier_seconds_total",
    "Seconds the Ready pods served each precision tier.",
    [*SERVICE, "tier"],
)
LATENCY_TARGET = Gauge(
    "kinfer_inferenceservice_latency_target_seconds",
    "spec.scaling.targetLatencyP95Ms in seconds (absent without a latency target).",
    SERVICE,
)
SLO_BUCKET = Gauge(
    "kinfer_inferenceservice_slo_bucket",
    "1 on the kinfer-ort-server latency bucket boundary `le` at or below the latency target:"
    " SLO shares count the requests in buckets up to it (absent for triton, or without a"
    " latency target).",
    [*SERVICE, "le"],
)
ON_LOWER_TIER = Gauge(
    "kinfer_inferenceservice_on_lower_tier",
    "1 while the Ready pods serve a tier other than the first of spec.precision.tiers.",
    SERVICE,
)
FAIL_STATIC = Gauge(
    "kinfer_inferenceservice_fail_static",
    "1 while the last decision held the replicas because its metrics were unusable.",
    SERVICE,
)
CAPACITY_INSUFFICIENT = Gauge(
    "kinfer_inferenceservice_capacity_insufficient",
    "1 while the GPUCapacityAvailable condition is False.",
    SERVICE,
)
SCALE_EVENTS = Counter(
    "kinfer_inferenceservice_scale_events",
    "Changes of spec.replicas the autoscaler made, by direction (out, in).",
    [*SERVICE, "direction"],
)
TIER_SWITCHES = Counter(
    "kinfer_inferenceservice_tier_switches",
    "Changes of the tier the Ready pods serve (status.activeTier).",
    [*SERVICE, "from_tier", "to_tier"],
)
JOULES_PER_INFERENCE = Gauge(
    "kinfer_inferenceservice_joules_per_inference",
    "GPU energy per inference on each tier, over status.energy.windowSeconds (where read).",
    [*SERVICE, "tier"],
)
_SERVICE_METRICS = (
    LATENCY_TARGET,
    SLO_BUCKET,
    ON_LOWER_TIER,
    FAIL_STATIC,
    CAPACITY_INSUFFICIENT,
    SCALE_EVENTS,
    TIER_SWITCHES,
    JOULES_PER_INFERENCE,
    DECISIONS,
    METRIC_READ_FAILURES,
    DESIRED_REPLICAS,
    CURRENT_REPLICAS,
    READY_REPLICAS,
    ACTIVE_TIER,
    TIER_SECONDS,
)
# The label values each service's series were made with, so that they can go with it.
_series: dict[tuple[str, str], set[tuple[Any, tuple[str, ...]]]] = {}


def _labels(metric: Any, namespace: str, name: str, *extra: str) -> Any:
    _series.setdefault((namespace, name), set()).add((metric, (namespace, name, *extra)))
    return metric.labels(namespace, name, *extra)


def record_tick(
    namespace: str,
    name: str,
    body: dict[str, Any],
    reason: str | None,
    desired: int | None,
    metrics_failed: bool,
) -> None:
    """What one tick saw and decided (reason None: no decision this tick)."""
    spec, status = body.get("spec") or {}, body.get("status") or {}
    _labels(CURRENT_REPLICAS, namespace, name).set(int(spec.get("replicas") or 0))
    _labels(READY_REPLICAS, namespace, name).set(int(status.get("readyReplicas") or 0))
    if reason is None:
        return
    _labels(DECISIONS, namespace, name, reason).inc()
    if desired is not None:
        _labels(DESIRED_REPLICAS, namespace, name).set(desired)
    if metrics_failed:
        _labels(METRIC_READ_FAILURES, namespace, name).inc()


def record_tier(
    namespace: str, name: str, tiers: list[str], active: str | None, elapsed_s: float
) -> None:
    """The tier serving now (status.activeTier), and `elapsed_s` more seconds on it."""
    for tier in tiers:
        _labels(ACTIVE_TIER, namespace, name, tier).set(1 if tier == active else 0)
    if active in tiers and elapsed_s > 0:
        _labels(TIER_SECONDS, namespace, name, active).inc(elapsed_s)


def record_service(
    namespace: str,
    name: str,
    *,
    target_s: float | None,
    slo_le: str | None,
    on_lower_tier: bool,
    fail_static: bool,
    capacity_insufficient: bool,
    tiers: list[str] | None = None,
    joules: dict[str, float] | None = None,
) -> None:
    """The service's SLO facts and alert inputs as of this tick; its change counters exist
    from the start at 0 (every direction, every pair of `tiers`), so that increase() sees
    the first change."""
    if target_s is not None:
        _labels(LATENCY_TARGET, namespace, name).set(target_s)
    if slo_le is not None:
        for metric, values in list(_series.get((namespace, name), ())):
            if metric is SLO_BUCKET and values[2] != slo_le:  # the target moved
                with contextlib.suppress(KeyError):
                    metric.remove(*values)
                _series[(namespace, name)].discard((metric, values))
        _labels(SLO_BUCKET, namespace, name, slo_le).set(1)
    _labels(ON_LOWER_TIER, namespace, name).set(int(on_lower_tier))
    _labels(FAIL_STATIC, namespace, name).set(int(fail_static))
    _labels(CAPACITY_INSUFFICIENT, namespace, name).set(int(capacity_insufficient))
    for direction in ("out", "in"):
        _labels(SCALE_EVENTS, namespace, name, direction)
    for before in tiers or []:
        for after in tiers or []:
            if before != after:
                _labels(TIER_SWITCHES, namespace, name, before, after)
    for tier, value in (joules or {}).items():
        _labels(JOULES_PER_INFERENCE, namespace, name, tier).set(value)


def record_changes(
    namespace: str, name: str, scale: str | None, tier_switch: tuple[str, str] | None
) -> None:
    """A scale (direction "out" or "in") and a tier switch (from, to) this tick made."""
    if scale is not None:
        _labels(SCALE_EVENTS, namespace, name, scale).inc()
    if tier_switch is not None:
        _labels(TIER_SWITCHES, namespace, name, *tier_switch).inc()


def forget(namespace: str, name: str) -> None:
    """Drop a deleted service's series."""
    for metric, values in _series.pop((namespace, name), set()):
        with contextlib.suppress(KeyError):  # already gone
            metric.remove(*values)


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


def serve(port: int, address: str = "0.0.0.0") -> None:
    """/metrics on address:port in a background thread (0: not served)."""
    if port:
        start_http_server(port, addr=address)
