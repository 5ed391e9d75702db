"""One InferenceService's history for `kinfer plot`: Prometheus range queries (QPS, p95, the
target, replicas, the tier) and its scale and tier Events from the API server, as a Timeline.

The PromQL is built by pure functions: QPS and p95 are the operator's own queries
(`kinfer.autoscale.metrics.queries`), the rest read the operator's metrics
(docs/observability.md), so Prometheus must scrape the operator too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kinfer.autoscale.metrics import (
    GROUP,
    RUNTIME_ONNXRUNTIME,
    PrometheusSettings,
    queries,
    selector,
)
from kinfer.observability.plot import Marker, Point, Timeline, markers_from_events

# A plot needs no more points than this per series: the step grows with the range.
MAX_POINTS = 600
MIN_STEP_S = 2
DEFAULT_WINDOW_S = 60
SIGNALS = ("qps", "p95_ms", "target_ms", "ready_replicas", "desired_replicas", "tier")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class HistoryError(RuntimeError):
    """Prometheus or the API server could not be read; the message says which and why."""


def parse_duration(text: str) -> float:
    """`90s`, `30m`, `1h30m`, `2d` in seconds (a bare number is seconds)."""
    raw = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", raw):
        return float(raw)
    parts = _DURATION.findall(raw)
    if not parts or "".join(number + unit for number, unit in parts) != raw:
        raise ValueError(f"duration {text!r}: expected e.g. 90s, 30m, 1h30m, 2d")
    return sum(float(number) * _UNIT_S[unit] for number, unit in parts)


def step_s(range_s: float) -> int:
    """The range query's step: at most MAX_POINTS points, never under MIN_STEP_S."""
    return max(MIN_STEP_S, math.ceil(range_s / MAX_POINTS))


def range_queries(
    namespace: str,
    name: str,
    runtime: str = RUNTIME_ONNXRUNTIME,
    window_s: int = DEFAULT_WINDOW_S,
    triton_p95_aggregation: str = "max",
) -> dict[str, str]:
    """The PromQL of each plotted signal (SIGNALS) for one service."""
    sel = selector(namespace, name)
    built = queries(runtime, window_s, triton_p95_aggregation=triton_p95_aggregation, sel=sel)

    def operator(metric: str, by: str = GROUP) -> str:
        # max: one series per service even if two operator replicas were scraped.
        return f"max by ({by}) ({metric}{{{sel}}})"

    return {
        "qps": built.qps,
        "p95_ms": built.latency_p95_ms,
        "target_ms": f"{operator('kinfer_inferenceservice_latency_target_seconds')} * 1000",
        "ready_replicas": operator("kinfer_inferenceservice_ready_replicas"),
        "desired_replicas": operator("kinfer_inferenceservice_current_replicas"),
        "tier": f"{operator('kinfer_inferenceservice_active_tier', f'{GROUP}, tier')} == 1",
    }


def points(matrix: list[dict[str, Any]]) -> list[Point]:
    """A range answer's samples (one series per service expected; several are merged by time),
    NaN and infinities dropped, oldest first."""
    found: dict[float, float] = {}
    for series in matrix:
        for raw_t, raw_value in series.get("values") or []:
            value = float(raw_value)
            if math.isfinite(value):
                found[float(raw_t)] = value
    return sorted(found.items())


def tier_points(matrix: list[dict[str, Any]]) -> list[tuple[float, str]]:
    """(time, tier) from the `active_tier == 1` answer: each series is one tier's stretches."""
    found = {
        float(raw_t): str((series.get("metric") or {}).get("tier", "?"))
        for series in matrix
        for raw_t, _ in series.get("values") or []
    }
    return sorted(found.items())


@dataclass(frozen=True)
class Subject:
    """What the plot needs of the InferenceService itself (its spec), when it still exists."""

    namespace: str
    name: str
    runtime: str = RUNTIME_ONNXRUNTIME
    tiers: tuple[str, ...] = ()
    target_ms: float | None = None
    window_s: int = DEFAULT_WINDOW_S

    @classmethod
    def of(cls, namespace: str, name: str, body: Mapping[str, Any] | None) -> Subject:
        spec = (body or {}).get("spec") or {}
        scaling = spec.get("scaling") or {}
        tiers = ((spec.get("precision") or {}).get("tiers")) or []
        target = scaling.get("targetLatencyP95Ms")
        return cls(
            namespace,
            name,
            runtime=str(spec.get("runtime") or RUNTIME_ONNXRUNTIME),
            tiers=tuple(str(tier["name"]) for tier in tiers),
            target_ms=float(target) if target is not None else None,
            window_s=int(scaling.get("metricsWindowSeconds") or DEFAULT_WINDOW_S),
        )


def timeline_of(
    subject: Subject,
    start_s: float,
    end_s: float,
    answers: Mapping[str, list[dict[str, Any]]],
    markers: list[Marker],
) -> Timeline:
    """The Timeline from the range answers (by SIGNALS name) and the Markers in [start, end].
    It starts at the first sample or Marker when that is later (a service younger than the
    range). Without the target's series, the spec's target is drawn flat over the range."""
    series = {signal: points(answers.get(signal, [])) for signal in SIGNALS if signal != "tier"}
    tier = tier_points(answers.get("tier", []))
    markers = [m for m in markers if start_s <= m.at_s <= end_s]
    seen = [p[0] for found in (*series.values(), tier) for p in found[:1]]
    seen += [m.at_s for m in markers[:1]]
    if seen:
        start_s = max(start_s, min(seen))
    target = series["target_ms"]
    if not target and subject.target_ms is not None:
        target = [(start_s, subject.target_ms), (end_s, subject.target_ms)]
    return Timeline(
        title=f"{subject.namespace}/{subject.name}",
        start_s=start_s,
        end_s=end_s,
        qps=series["qps"],
        p95_ms=series["p95_ms"],
        target_ms=target,
        ready_replicas=series["ready_replicas"],
        desired_replicas=series["desired_replicas"],
        tier=tier,
        tiers=list(subject.tiers),
        markers=markers,
    )


def read_timeline(
    settings: PrometheusSettings,
    api_client: Any,
    namespace: str,
    name: str,
    since_s: float,
    window_s: int | None = None,
    now_s: float | None = None,
) -> Timeline:
    """The last `since_s` seconds of one InferenceService, from Prometheus and the API server.
    `window_s` is the rate window of QPS and p95 (default: the spec's metricsWindowSeconds)."""
    end_s = datetime.now(UTC).timestamp() if now_s is None else now_s
    start_s = end_s - since_s
    subject = Subject.of(namespace, name, _read_service(api_client, namespace, name))
    built = range_queries(
        namespace, name, subject.runtime, window_s or subject.window_s,
        settings.triton_p95_aggregation,
    )  # fmt: skip
    client = _prometheus(settings)
    step = f"{step_s(since_s)}s"
    answers = {}
    for signal, promql in built.items():
        try:
            answers[signal] = client.custom_query_range(
                promql,
                start_time=datetime.fromtimestamp(start_s, UTC),
                end_time=datetime.fromtimestamp(end_s, UTC),
                step=step,
            )
        except Exception as error:
            raise HistoryError(f"Prometheus at {settings.url}: {_first_line(error)}") from None
    markers = markers_from_events(_read_events(api_client, namespace, name))
    return timeline_of(subject, start_s, end_s, answers, markers)


def _read_service(api_client: Any, namespace: str, name: str) -> dict[str, Any] | None:
    """The InferenceService, or None when it is gone (its history may still be in Prometheus)."""
    from kubernetes import client

    from kinfer.api import constants as c

    try:
        return dict(
            client.CustomObjectsApi(api_client).get_namespaced_custom_object(
                c.GROUP, c.VERSION, namespace, c.PLURAL, name
            )
        )
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise HistoryError(f"the API server: {error.status} {error.reason}") from None


def _read_events(api_client: Any, namespace: str, name: str) -> list[dict[str, Any]]:
    from kubernetes import client

    try:
        listed = client.CoreV1Api(api_client).list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name}"
        )
    except client.ApiException as error:
        raise HistoryError(f"the API server: {error.status} {error.reason}") from None
    return list(api_client.sanitize_for_serialization(listed).get("items") or [])


def _prometheus(settings: PrometheusSettings) -> Any:
    import requests
    from prometheus_api_client import PrometheusConnect
    from urllib3.util.retry import Retry

    session = requests.Session()
    if settings.ca_file:
        session.verify = settings.ca_file
    if settings.insecure_skip_verify:
        session.verify = False
    headers = None
    if settings.bearer_token_file:
        with open(settings.bearer_token_file) as handle:
            headers = {"Authorization": f"Bearer {handle.read().strip()}"}
    auth = (settings.username, settings.password) if settings.username else None
    return PrometheusConnect(
        url=settings.url,
        headers=headers,
        disable_ssl=settings.insecure_skip_verify,
        auth=auth,
        session=session,
        timeout=settings.timeout_s,
        retry=Retry(total=0),
    )


def _first_line(error: Exception) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    # Never echo credentials.
    return type(error).__name__ if ("Authorization" in text or "Bearer" in text) else text[:200]
