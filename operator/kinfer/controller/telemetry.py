"""The operator's own metrics, on /metrics (prometheus_client): what its loop costs and how
late its decisions are."""

from __future__ import annotations

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


def serve(port: int) -> None:
    """/metrics on 0.0.0.0:port in a background thread (0: not served)."""
    if port:
        start_http_server(port)
