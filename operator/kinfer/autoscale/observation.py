"""What one read of the metrics says about an InferenceService: the policy's input, plain data."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class VersionObservation:
    """QPS and p95 of one model version (one precision tier) over the metrics window."""

    qps: float | None = None
    latency_p95_ms: float | None = None


@dataclass(frozen=True)
class Observation:
    """QPS and p95 of the whole InferenceService over the metrics window, and how much to trust it.

    error is set when the read failed (Prometheus down, bad query, no series at all); the other
    fields are then None. A read that succeeded can still be stale (newest_sample_age_s large)
    or partial (pods_reporting below the Ready replicas): the policy refuses to scale down on it.
    """

    qps: float | None = None
    latency_p95_ms: float | None = None
    # QPS over a short recent window (two or three scrapes): sees a step a window earlier than qps.
    qps_recent: float | None = None
    # The load offered now: the servers' requests received over their last second, as last
    # scraped (kinfer's server exports it; Triton does not: None). Sizes an overload.
    qps_arriving: float | None = None
    pods_reporting: int = 0
    newest_sample_age_s: float | None = None
    error: str | None = None
    # Keyed by model version (1 = the first tier), from the series' `version` label.
    versions: dict[int, VersionObservation] = field(default_factory=dict)
    # The same per version over the short window of qps_recent: a tier that served only since a
    # switch less than a window ago is measured on it (its scrapes all follow the switch).
    versions_recent: dict[int, VersionObservation] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and (self.qps is not None or self.latency_p95_ms is not None)

    def to_dict(self) -> dict[str, object]:
        """The last metrics as status shows them (JSON-friendly, rounded for humans)."""
        return {
            "qps": _round(self.qps, 2),
            "qpsRecent": _round(self.qps_recent, 2),
            "qpsArriving": _round(self.qps_arriving, 2),
            "latencyP95Ms": _round(self.latency_p95_ms, 1),
            "podsReporting": self.pods_reporting,
            "newestSampleAgeS": _round(self.newest_sample_age_s, 1),
            "error": self.error,
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
