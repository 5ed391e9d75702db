"""The capacity model: what one replica of each tier serves with p95 at the latency target.

Both the scaling stages (how many replicas) and the tier decision (which tier holds the load on
the Ready replicas) read it, so they agree on what a replica is worth. Each tier's figure is
measured from the metrics (`measure`), kept in `PolicyState.tier_profiles`, and read through
`CapacityModel`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from kinfer.autoscale.observation import Observation, VersionObservation

# M/M/1 sojourn time is exponential with rate (mu - lambda), so its 95th percentile is
# ln(20) / (mu - lambda): the model that turns one (load, p95) sample into a capacity estimate.
LN20 = math.log(20.0)
# Weight of a new capacity sample in the profile's moving average: two samples outweigh history,
# so a tier re-measured after a rollout forgets its old figure within a minute or so.
PROFILE_EWMA_WEIGHT = 0.5
# TierProfile's energy figure in status (status.autoscaling.state.tierProfiles.<tier>).
JOULES_PER_INFERENCE_KEY = "joulesPerInference"


@dataclass(frozen=True)
class TierProfile:
    """Measured behaviour of one tier, kept in status between periods (JSON via to_dict)."""

    # Requests per second one replica of this tier serves with p95 at the latency target.
    capacity_qps_per_replica: float | None = None
    # The last measured per-replica load and p95 at this tier.
    qps_per_replica: float | None = None
    latency_p95_ms: float | None = None
    samples: int = 0
    # GPU energy per inference on this tier (kinfer.autoscale.energy; None: not read).
    joules_per_inference: float | None = None

    def to_dict(self) -> dict[str, float | int | None]:
        data = asdict(self)
        # In status as `joulesPerInference`, and only where read.
        joules = data.pop("joules_per_inference")
        if joules is not None:
            data[JOULES_PER_INFERENCE_KEY] = joules
        return data

    @classmethod
    def from_dict(cls, data: dict[str, float | int | None] | None) -> TierProfile:
        data = data or {}
        return cls(
            capacity_qps_per_replica=_opt_float(data.get("capacity_qps_per_replica")),
            qps_per_replica=_opt_float(data.get("qps_per_replica")),
            latency_p95_ms=_opt_float(data.get("latency_p95_ms")),
            samples=int(data.get("samples") or 0),
            joules_per_inference=_opt_float(data.get(JOULES_PER_INFERENCE_KEY)),
        )


def capacity_at_target(qps_per_replica: float, latency_p95_ms: float, target_ms: float) -> float:
    """Per-replica QPS at which p95 would equal target_ms, from one (load, p95) sample.

    Treats a replica as an M/M/1 queue with an unknown service rate mu: p95 = ln(20) / (mu - x),
    so mu = x + ln(20) / p95 and the load that gives p95 = target is mu - ln(20) / target.
    A batching server is not M/M/1, but the estimate is re-measured every period, so it only
    has to be right near the operating point, where it is used.
    """
    service_rate = qps_per_replica + LN20 * 1000.0 / latency_p95_ms
    return max(service_rate - LN20 * 1000.0 / target_ms, 0.0)


def update_profile(
    profile: TierProfile, qps_per_replica: float, latency_p95_ms: float, target_ms: float
) -> TierProfile:
    """Fold one clean per-version measurement (the tier served the whole window) into a profile."""
    if qps_per_replica <= 0 or latency_p95_ms <= 0:
        return profile
    estimate = capacity_at_target(qps_per_replica, latency_p95_ms, target_ms)
    if profile.capacity_qps_per_replica is not None:
        estimate = (
            PROFILE_EWMA_WEIGHT * estimate
            + (1 - PROFILE_EWMA_WEIGHT) * profile.capacity_qps_per_replica
        )
    return TierProfile(
        capacity_qps_per_replica=estimate,
        qps_per_replica=qps_per_replica,
        latency_p95_ms=latency_p95_ms,
        samples=profile.samples + 1,
        joules_per_inference=profile.joules_per_inference,
    )


@dataclass(frozen=True)
class Sample:
    """Where the active tier can be measured this period: per-version figures, over `pods`."""

    version: VersionObservation | None
    pods: int


def measure(
    profiles: dict[str, TierProfile],
    name: str,
    sample: Sample | None,
    target_ms: float | None,
) -> dict[str, TierProfile]:
    """The profiles with tier `name` re-measured on `sample` (unchanged where it cannot be).

    Over target the pods queue (or drain a queue): the M/M/1 inversion does not hold there.
    """
    if sample is None or target_ms is None or sample.pods <= 0 or sample.version is None:
        return profiles
    qps, p95 = sample.version.qps, sample.version.latency_p95_ms
    if qps is None or p95 is None or p95 > target_ms:
        return profiles
    updated = update_profile(profiles.get(name, TierProfile()), qps / sample.pods, p95, target_ms)
    return {**profiles, name: updated}


@dataclass(frozen=True)
class CapacityModel:
    """Per-replica capacity at the latency target, per tier (index 0: the first tier)."""

    names: tuple[str, ...]
    profiles: dict[str, TierProfile]
    target_ms: float | None
    target_qps: float | None
    tolerance: float
    # A tier must hold the load with this much headroom before the policy steps back up to it.
    hysteresis: float

    def measured(self, index: int) -> float | None:
        if not 0 <= index < len(self.names):
            return None
        return self.profiles.get(self.names[index], TierProfile()).capacity_qps_per_replica

    def of_tier(self, index: int) -> float | None:
        """The tier's measured capacity; the first tier's falls back to the QPS target plus the
        tolerance (users set the target below the SLO capacity)."""
        measured = self.measured(index)
        if measured is None and index == 0 and self.target_qps is not None:
            return self.target_qps * (1 + self.tolerance)
        return measured

    def first_at_target(self, observation: Observation, measure_now: bool) -> float | None:
        """The first tier's capacity as the latency recommender sees it: its profile, or lower
        when this window's (load, p95) says so (measure_now: the window is a clean sample)."""
        capacity = self.measured(0)
        qps, p95 = observation.qps, observation.latency_p95_ms
        if measure_now and self.target_ms is not None and qps and p95 and p95 > 0:
            reporting = max(observation.pods_reporting, 1)
            now = capacity_at_target(qps / reporting, p95, self.target_ms)
            capacity = now if capacity is None else min(capacity, now)
        return capacity

    def step_up(self, planned_qps: float) -> tuple[int, float] | None:
        """(replicas, capacity per replica) that hold planned_qps at the first tier with the
        hysteresis as headroom: the count a lower tier steps back up on; None when the first
        tier's capacity is unknown (no profile and no QPS target)."""
        capacity = self.of_tier(0)
        if capacity is None or capacity <= 0:
            return None
        needed = math.ceil(planned_qps / (capacity * (1 - self.hysteresis)) - 1e-9)
        return needed, capacity

    def faster(self, candidate: int, than: float | None) -> bool:
        """A tier is worth stepping down to when unmeasured (that is how it gets measured) or
        measured faster than `than` by more than the hysteresis (fp16 on a CPU is not)."""
        measured = self.measured(candidate)
        return measured is None or than is None or measured > than * (1 + self.hysteresis)

    def faster_tier(self, floor: int) -> int | None:
        """The lowest tier the step-down walk would go to from the first tier, or None: no tier
        between the first and the floor is worth stepping down to."""
        first = self.measured(0)
        return next((i for i in range(floor, 0, -1) if self.faster(i, first)), None)


def _opt_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
