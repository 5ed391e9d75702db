"""Prometheus metrics of the server (port 8002, /metrics), labelled model, version and tier.

QPS:  sum(rate(kinfer_inference_requests_total[1m]))
p95:  histogram_quantile(0.95,
        sum by (le) (rate(kinfer_inference_request_duration_seconds_bucket[1m])))
arriving now:  sum(kinfer_inference_arrival_rate)
"""

from __future__ import annotations

import time
from bisect import bisect_left

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
# kinfer_inference_arrival_rate counts the requests received over the last second, in
# ARRIVAL_SLOTS slots of 1 / ARRIVAL_SLOTS s each.
ARRIVAL_SLOTS = 10
# The model label of requests for a model the repository does not hold: one series,
# whatever names clients send, so a typo storm cannot blow up the series count.
UNKNOWN_MODEL = "_unknown_"


class Metrics:
    """The server's registry and metric families."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # Registered first, so a scrape folds what the hot path counted into the families
        # below before the registry reads them (it collects in registration order).
        self._pending: dict[tuple[str, ...], _PendingSeries] = {}
        self.registry.register(_Flush(self))
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
        self.arrival_rate = Gauge(
            "kinfer_inference_arrival_rate",
            "Inference requests received per second over the last second (as of the scrape).",
            LABELS,
            registry=self.registry,
        )

    def for_version(self, model: str, version: str, tier: str) -> VersionMetrics:
        return VersionMetrics(self, model, version, tier)

    def pending(self, labels: tuple[str, ...]) -> _PendingSeries:
        """The hot path's counts for one label set, shared by every load of that version."""
        series = self._pending.get(labels)
        if series is None:
            series = self._pending[labels] = _PendingSeries(self, labels)
        return series

    def flush(self) -> None:
        """Fold the counts not yet seen by the registry into it (done by every scrape)."""
        for series in self._pending.values():
            series.flush()


class _Flush:
    """A collector without metrics of its own: collecting it flushes the pending counts."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self):
        self._metrics.flush()
        return []


class _PendingHistogram:
    """Observations of one histogram child, counted per bucket until the next scrape.

    prometheus_client's `observe` takes a lock per bucket and sum and walks the bounds in
    Python: ~3 us, three times per request. Here an observation is a bisect and two
    additions; every hot-path call runs on the event loop thread, as does the scrape
    that folds them in, so no lock is needed. `bisect_left` picks the first bound >= the
    value, which is prometheus' `value <= le` rule.
    """

    __slots__ = ("_bounds", "_child", "_counts", "_sum")

    def __init__(self, child) -> None:
        self._child = child
        self._bounds = tuple(child._upper_bounds)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def flush(self) -> None:
        counts = self._counts
        if not any(counts):
            return
        # The child's own bucket and sum values (prometheus_client's layout since its
        # first releases; test_pending_metrics_match_prometheus_observe pins it).
        for index, count in enumerate(counts):
            if count:
                self._child._buckets[index].inc(count)
                counts[index] = 0
        self._child._sum.inc(self._sum)
        self._sum = 0.0


class ArrivalRate:
    """Requests received per second over the last second: the load offered now.

    rate(kinfer_inference_requests_total[...]) is only as fresh as the scrapes it spans: at
    the first scrape after a burst starts, the last interval (15 s by default) holds a few of
    its seconds. This gauge is the rate over the second before the scrape, so the autoscaler
    sizes a burst at that first scrape instead of a scrape later (docs/autoscaling.md,
    OverloadFloor). Counted when the server takes a request in, before the batcher's queue:
    a request waiting for a batch counts at once (one still in a socket buffer does not yet).

    ARRIVAL_SLOTS slots of the trailing second, each stamped with its tick: one index and one
    addition per request. A read sums the whole slots before the current, partial one.
    """

    __slots__ = ("_counts", "_ticks")

    def __init__(self) -> None:
        self._ticks = [-1] * ARRIVAL_SLOTS
        self._counts = [0] * ARRIVAL_SLOTS

    def arrived(self, now_s: float) -> None:
        """Count one request received at now_s (time.perf_counter())."""
        tick = int(now_s * ARRIVAL_SLOTS)
        slot = tick % ARRIVAL_SLOTS
        if self._ticks[slot] != tick:
            self._ticks[slot] = tick
            self._counts[slot] = 0
        self._counts[slot] += 1

    def per_second(self, now_s: float | None = None) -> float:
        """Requests received over the second before now_s's slot began."""
        tick = int((time.perf_counter() if now_s is None else now_s) * ARRIVAL_SLOTS)
        received = sum(
            count
            for slot_tick, count in zip(self._ticks, self._counts, strict=True)
            if tick - ARRIVAL_SLOTS <= slot_tick < tick
        )
        # ARRIVAL_SLOTS whole slots make exactly one second.
        return float(received)


class _PendingSeries:
    """The per-request counts of one (model, version, tier), folded in at scrape time."""

    __slots__ = (
        "_children",
        "arrivals",
        "batch_size",
        "queue_duration",
        "request_duration",
        "requests",
    )

    def __init__(self, metrics: Metrics, labels: tuple[str, ...]) -> None:
        self.requests = 0
        # Shared by every load of the version, like the counts: a reload keeps its arrivals.
        self.arrivals = ArrivalRate()
        metrics.arrival_rate.labels(*labels).set_function(self.arrivals.per_second)
        self._children = metrics.requests.labels(*labels)
        self.request_duration = _PendingHistogram(metrics.request_duration.labels(*labels))
        self.queue_duration = _PendingHistogram(metrics.queue_duration.labels(*labels))
        self.batch_size = _PendingHistogram(metrics.batch_size.labels(*labels))

    def flush(self) -> None:
        if self.requests:
            self._children.inc(self.requests)
            self.requests = 0
        self.request_duration.flush()
        self.queue_duration.flush()
        self.batch_size.flush()


class VersionMetrics:
    """The children of one (model, version, tier), resolved once: no label lookups per request."""

    def __init__(self, metrics: Metrics, model: str, version: str, tier: str) -> None:
        labels = (model, version, tier)
        self._metrics = metrics
        self._labels = labels
        self._series = series = metrics.pending(labels)
        self.request_duration = series.request_duration
        self.queue_duration = series.queue_duration
        self.batch_size = series.batch_size
        self.arrivals = series.arrivals
        # A plain int read at scrape time: the hot path adds and subtracts without a lock
        # (all of it runs on the one event loop thread).
        self.inflight = 0
        metrics.inflight.labels(*labels).set_function(lambda: self.inflight)
        self._failures: dict[str, Counter] = {}
        # Series exist from the load on, so a query sees 0 rather than nothing.
        metrics.requests.labels(*labels).inc(0)

    def success(self, duration_s: float) -> None:
        self._series.requests += 1
        self.request_duration.observe(duration_s)

    def failure(self, reason: str) -> None:
        self._series.requests += 1
        child = self._failures.get(reason)
        if child is None:
            child = self._failures[reason] = self._metrics.failures.labels(*self._labels, reason)
        child.inc()
