"""Prometheus metrics of the server (port 8002, /metrics), labelled model, version and tier.

QPS:  sum(rate(kinfer_inference_requests_total[1m]))
p95:  histogram_quantile(0.95,
        sum by (le) (rate(kinfer_inference_request_duration_seconds_bucket[1m])))
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LABELS = ("model", "version", "tier")
# Latency buckets from 100 us to 10 s: a CPU MLP answers in well under a millisecond,
# a large GPU model in hundreds of milliseconds; both need resolution near their p95.
LATENCY_BUCKETS_S = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# The model label of requests for a model the repository does not hold: one series,
# whatever names clients send, so a typo storm cannot blow up the series count.
UNKNOWN_MODEL = "_unknown_"


class Metrics:
    """The server's registry and metric families."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "kinfer_inference_requests",
            "Inference requests handled, successful or failed.",
            LABELS,
            registry=self.registry,
        )
        self.failures = Counter(
            "kinfer_inference_failures",
            "Inference requests that failed, by reason (bad_request, model_not_found, ...).",
            (*LABELS, "reason"),
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "kinfer_inference_request_duration_seconds",
            "Server-side end-to-end latency of successful inference requests.",
            LABELS,
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.queue_duration = Histogram(
            "kinfer_inference_queue_duration_seconds",
            "Time a request waited in the batcher before its batch started.",
            LABELS,
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "kinfer_inference_batch_size",
            "Rows (batch dimension) of each executed batch.",
            LABELS,
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.inflight = Gauge(
            "kinfer_inference_inflight_requests",
            "Inference requests being handled now.",
            LABELS,
            registry=self.registry,
        )

    def for_version(self, model: str, version: str, tier: str) -> VersionMetrics:
        return VersionMetrics(self, model, version, tier)


class VersionMetrics:
    """The children of one (model, version, tier), resolved once: no label lookups per request."""

    def __init__(self, metrics: Metrics, model: str, version: str, tier: str) -> None:
        labels = (model, version, tier)
        self._metrics = metrics
        self._labels = labels
        self.requests = metrics.requests.labels(*labels)
        self.request_duration = metrics.request_duration.labels(*labels)
        self.queue_duration = metrics.queue_duration.labels(*labels)
        self.batch_size = metrics.batch_size.labels(*labels)
        # A plain int read at scrape time: the hot path adds and subtracts without a lock
        # (all of it runs on the one event loop thread).
        self.inflight = 0
        metrics.inflight.labels(*labels).set_function(lambda: self.inflight)
        self._failures: dict[str, Counter] = {}
        # Series exist from the load on, so a query sees 0 rather than nothing.
        self.requests.inc(0)

    def success(self, duration_s: float) -> None:
        self.requests.inc()
        self.request_duration.observe(duration_s)

    def failure(self, reason: str) -> None:
        self.requests.inc()
        child = self._failures.get(reason)
        if child is None:
            child = self._failures[reason] = self._metrics.failures.labels(*self._labels, reason)
        child.inc()
