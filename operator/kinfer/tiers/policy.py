"""The precision-tier decision (pure): step down on an SLO breach that new pods cannot fix in time,
step back up when the higher tier holds the SLO on the Ready replicas.

Tiers are indexed 0 (the first, highest-quality tier, model version 1) upwards; index k serves
model version k + 1. The autoscaling policy (kinfer.autoscale.policy.decide) calls `decide_tier`
once a period with its own replica decision, so one status line explains both.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from kinfer.api.constants import DEFAULT_TIER_SCALE_DOWN_STABILIZATION_S

# M/M/1 sojourn time is exponential with rate (mu - lambda), so its 95th percentile is
# ln(20) / (mu - lambda): the model that turns one (load, p95) sample into a capacity estimate.
LN20 = math.log(20.0)
# Weight of a new capacity sample in the profile's moving average: two samples outweigh history,
# so a tier re-measured after a rollout forgets its old figure within a minute or so.
PROFILE_EWMA_WEIGHT = 0.5
# p95 at this multiple of the target means the pods are saturated: they queue, their served rate is
# their capacity and the load beyond it is unmeasured. Stepping one tier per period would then cost
# a scrape per tier to learn that the next one does not hold it either, so the step-down goes as
# far as the faster tiers allow (M/M/1: 5x the target is a utilization of 94 % or more at the
# bench's 100/s service rate and 100 ms target; a moderate breach still walks one tier at a time).
SATURATED_P95_FACTOR = 5.0


@dataclass(frozen=True)
class TierConfig:
    """What the tier policy needs from spec.precision (and the latency target)."""

    names: tuple[str, ...] = ()
    pinned: str | None = None
    # The last (lowest-quality) tier the policy may use: the accuracy floor.
    min_tier: str | None = None
    dwell_s: float = 30.0
    # A higher tier must hold the load with this much headroom before the policy steps back up.
    hysteresis: float = 0.1
    # The scale-down window while a lower tier could absorb a burst (none pinned, and faster_tier
    # finds one: unmeasured, or measured faster than the first): stepping down absorbs a burst
    # that comes back, so pods can go sooner.
    scale_down_stabilization_s: float = DEFAULT_TIER_SCALE_DOWN_STABILIZATION_S
    # spec.precision.absorbBursts: no scale-up while a measured lower tier, the one serving for
    # less than a metrics window or the one stepped down to, holds the ask on the Ready pods
    # (kinfer.autoscale.policy, rule 10). Opt-in: it trades lower-tier time for replica-seconds.
    absorb_bursts: bool = False

    def floor_index(self) -> int:
        if self.min_tier is None or self.min_tier not in self.names:
            return max(len(self.names) - 1, 0)
        return self.names.index(self.min_tier)


@dataclass(frozen=True)
class TierProfile:
    """Measured behaviour of one tier, kept in status between periods (JSON via to_dict)."""

    # Requests per second one replica of this tier serves with p95 at the latency target.
    capacity_qps_per_replica: float | None = None
    # The last measured per-replica load and p95 at this tier.
    qps_per_replica: float | None = None
    latency_p95_ms: float | None = None
    samples: int = 0

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, float | int | None] | None) -> TierProfile:
        data = data or {}
        return cls(
            capacity_qps_per_replica=_opt_float(data.get("capacity_qps_per_replica")),
            qps_per_replica=_opt_float(data.get("qps_per_replica")),
            latency_p95_ms=_opt_float(data.get("latency_p95_ms")),
            samples=int(data.get("samples") or 0),
        )


@dataclass(frozen=True)
class TierDecision:
    index: int
    reason: str
    changed: bool


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
    )


def decide_tier(
    config: TierConfig,
    *,
    active_index: int,
    profiles: dict[str, TierProfile],
    latency_p95_ms: float | None,
    qps: float | None,
    target_latency_p95_ms: float | None,
    tolerance: float,
    ready_replicas: int,
    capacity_pending: bool,
    top_tier_capacity_hint: float | None,
    last_switch_s: float | None,
    now_s: float,
    last_switch_down: bool = False,
) -> TierDecision:
    """Which tier should serve now.

    capacity_pending: the replica decision wants more capacity than is Ready and it cannot
    arrive within a period (new pods still starting, at maxReplicas, or no free GPUs).
    top_tier_capacity_hint: per-replica QPS the first tier holds when it has no profile yet
    (the QPS target, which users set below the SLO capacity).
    last_switch_down: the last switch stepped down. The dwell time holds any switch after it,
    except a further step down while the SLO is still missed: that is no flap, and waiting
    would only lengthen the breach.
    """
    names = config.names
    if len(names) <= 1:
        return TierDecision(0, "", False)
    floor = config.floor_index()
    if config.pinned is not None and config.pinned in names:
        pinned = names.index(config.pinned)
        return TierDecision(
            pinned, f"tier pinned to {config.pinned}", changed=pinned != active_index
        )
    active = min(max(active_index, 0), floor)
    if active != active_index:
        was = names[active_index] if 0 <= active_index < len(names) else str(active_index)
        return TierDecision(
            active, f"tier {was} -> {names[active]}: accuracy floor {names[floor]}", changed=True
        )
    if target_latency_p95_ms is None or latency_p95_ms is None or qps is None:
        return TierDecision(active, f"tier {names[active]}: no latency target or data", False)
    over_slo = latency_p95_ms > target_latency_p95_ms * (1 + tolerance)
    dwelling = last_switch_s is not None and now_s - last_switch_s < config.dwell_s
    if dwelling and not (over_slo and last_switch_down):
        assert last_switch_s is not None
        return TierDecision(
            active,
            f"tier {names[active]}: dwelling ({now_s - last_switch_s:.0f}/{config.dwell_s:.0f} s)",
            False,
        )

    def capacity(index: int) -> float | None:
        measured = profiles.get(names[index], TierProfile()).capacity_qps_per_replica
        if measured is None and index == 0 and top_tier_capacity_hint is not None:
            return top_tier_capacity_hint * (1 + tolerance)
        return measured

    if over_slo:
        if not capacity_pending:
            return TierDecision(
                active, f"tier {names[active]}: p95 over target, but capacity is Ready", False
            )
        # Walk down from the active tier. An unmeasured tier is tried (that is how it gets
        # measured); a measured one counts only when faster than the best above it by more than
        # the hysteresis (fp16 on a CPU is not), and the walk stops at the first one that holds
        # the load on the Ready replicas. Saturated pods hide the load (QPS is their capacity), so
        # then neither an unmeasured tier nor "holds the QPS" ends the walk: it goes to the
        # fastest tier allowed, and the step-up rule brings quality back once the load is known.
        saturated = latency_p95_ms >= SATURATED_P95_FACTOR * target_latency_p95_ms
        best = capacity(active)
        chosen: int | None = None
        for candidate in range(active + 1, floor + 1):
            candidate_capacity = capacity(candidate)
            if candidate_capacity is None or best is None:
                chosen = candidate
                if saturated:
                    # Unknown against unknown: the lower tier is presumed faster, as when tried.
                    best = candidate_capacity
                    continue
                break
            if candidate_capacity > best * (1 + config.hysteresis):
                chosen, best = candidate, candidate_capacity
                if not saturated and ready_replicas * candidate_capacity >= qps:
                    break
        if chosen is not None:
            why = "saturated" if saturated and chosen > active + 1 else "new capacity is not Ready"
            return TierDecision(
                chosen,
                f"tier {names[active]} -> {names[chosen]}: p95 {latency_p95_ms:.0f} ms"
                f" > {target_latency_p95_ms:.0f} ms target and {why}",
                True,
            )
        return TierDecision(
            active,
            f"tier {names[active]}: p95 over target, no faster tier above the floor {names[floor]}",
            False,
        )
    if active == 0 or latency_p95_ms > target_latency_p95_ms:
        return TierDecision(active, f"tier {names[active]}", False)
    # Step up to the best tier that holds the current load on the Ready replicas with headroom.
    for candidate in range(active):
        candidate_capacity = capacity(candidate)
        if candidate_capacity is None:
            continue
        holds = ready_replicas * candidate_capacity * (1 - config.hysteresis)
        if qps <= holds:
            return TierDecision(
                candidate,
                f"tier {names[active]} -> {names[candidate]}: QPS {qps:.0f} fits"
                f" {ready_replicas} Ready x {candidate_capacity:.0f}/replica at {names[candidate]}",
                True,
            )
    return TierDecision(
        active, f"tier {names[active]}: higher tiers would not hold QPS {qps:.0f}", False
    )


def faster_tier(config: TierConfig, profiles: dict[str, TierProfile]) -> int | None:
    """The lowest tier the step-down walk would go to from the first tier, or None (no tier below
    the first above the floor, a pinned tier, or every lower tier measured no faster than the
    first). As in the walk, an unmeasured tier counts (it would be tried) and a measured one only
    when faster than the first by more than the hysteresis (fp16 on a CPU is not)."""
    if len(config.names) <= 1 or config.pinned is not None:
        return None
    first = profiles.get(config.names[0], TierProfile()).capacity_qps_per_replica
    for index in range(config.floor_index(), 0, -1):
        measured = profiles.get(config.names[index], TierProfile()).capacity_qps_per_replica
        if measured is None or first is None or measured > first * (1 + config.hysteresis):
            return index
    return None


def _opt_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
