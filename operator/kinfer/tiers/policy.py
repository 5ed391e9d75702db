"""The precision-tier decision (pure): step down on an SLO breach that new pods cannot fix in time,
step back up when the higher tier holds the SLO on the Ready replicas.

Tiers are indexed 0 (the first, highest-quality tier, model version 1) upwards; index k serves
model version k + 1. The autoscaling policy (kinfer.autoscale.policy.decide) calls `decide_tier`
as its last stage, with its own replica decision, and both read one capacity model
(kinfer.autoscale.capacity_model).
"""

from __future__ import annotations

from dataclasses import dataclass

from kinfer.api.model import PrecisionSpec
from kinfer.autoscale.capacity_model import CapacityModel
from kinfer.autoscale.reasons import Reason

# p95 at this multiple of the target means the pods are saturated: they queue, their served rate is
# their capacity and the load beyond it is unmeasured. Stepping one tier per period would then cost
# a scrape per tier to learn that the next one does not hold it either, so the step-down goes as
# far as the faster tiers allow (M/M/1: 5x the target is a utilization of 94 % or more at the
# bench's 100/s service rate and 100 ms target; a moderate breach still walks one tier at a time).
SATURATED_P95_FACTOR = 5.0


@dataclass(frozen=True)
class TierDecision:
    index: int
    reason: Reason
    message: str
    changed: bool


@dataclass(frozen=True)
class TierInput:
    """One period's facts for the tier decision.

    capacity_pending: the replica decision wants more capacity than is Ready and it cannot
    arrive within a period (new pods still starting, at maxReplicas, or no free GPUs).
    last_switch_down: the last switch stepped down. The dwell time holds any switch after it,
    except a further step down while the SLO is still missed: that is no flap, and waiting
    would only lengthen the breach.
    """

    active_index: int
    latency_p95_ms: float | None
    qps: float | None
    target_latency_p95_ms: float | None
    tolerance: float
    ready_replicas: int
    capacity_pending: bool
    last_switch_s: float | None
    now_s: float
    last_switch_down: bool = False


def floor_index(precision: PrecisionSpec) -> int:
    """The last (lowest-quality) tier the policy may use: the accuracy floor."""
    names = precision.tier_names()
    if precision.min_tier is None or precision.min_tier not in names:
        return max(len(names) - 1, 0)
    return names.index(precision.min_tier)


def decide_tier(precision: PrecisionSpec, capacity: CapacityModel, tick: TierInput) -> TierDecision:
    """Which tier should serve now."""
    names = precision.tier_names()
    if len(names) <= 1:
        return TierDecision(0, Reason.TIER_HELD, "", False)
    fixed = _pinned_or_floor(precision, tick.active_index)
    if fixed is not None:
        return fixed
    active = tick.active_index
    target, p95 = tick.target_latency_p95_ms, tick.latency_p95_ms
    # An idle window (QPS 0: no request, so no p95) misses no SLO: the step-up decides, on no
    # load. A lower tier left by a spike's last requests comes back once the pods are idle.
    idle = p95 is None and tick.qps == 0
    if target is None or tick.qps is None or (p95 is None and not idle):
        return _held(active, f"tier {names[active]}: no latency target or data")
    over_slo = p95 is not None and p95 > target * (1 + tick.tolerance)
    dwelt = None if tick.last_switch_s is None else tick.now_s - tick.last_switch_s
    if dwelt is not None and dwelt < precision.dwell_s and not (over_slo and tick.last_switch_down):
        return _held(
            active, f"tier {names[active]}: dwelling ({dwelt:.0f}/{precision.dwell_s:.0f} s)"
        )
    if over_slo:
        return _step_down(precision, capacity, tick)
    if active == 0 or (p95 is not None and p95 > target):
        return _held(active, f"tier {names[active]}")
    return _step_up(names, capacity, tick)


def _held(index: int, message: str) -> TierDecision:
    return TierDecision(index, Reason.TIER_HELD, message, False)


def _pinned_or_floor(precision: PrecisionSpec, active_index: int) -> TierDecision | None:
    names = precision.tier_names()
    if precision.pinned is not None and precision.pinned in names:
        pinned = names.index(precision.pinned)
        return TierDecision(
            pinned, Reason.TIER_PINNED, f"tier pinned to {precision.pinned}", pinned != active_index
        )
    floor = floor_index(precision)
    active = min(max(active_index, 0), floor)
    if active == active_index:
        return None
    was = names[active_index] if 0 <= active_index < len(names) else str(active_index)
    return TierDecision(
        active,
        Reason.TIER_FLOOR,
        f"tier {was} -> {names[active]}: accuracy floor {names[floor]}",
        True,
    )


def _step_down(precision: PrecisionSpec, capacity: CapacityModel, tick: TierInput) -> TierDecision:
    """Walk down from the active tier. An unmeasured tier is tried (that is how it gets
    measured); a measured one counts only when faster than the best above it by more than the
    hysteresis, and the walk stops at the first one that holds the load on the Ready replicas.
    Saturated pods hide the load (QPS is their capacity), so then neither an unmeasured tier nor
    "holds the QPS" ends the walk: it goes to the fastest tier allowed, and the step-up brings
    quality back once the load is known."""
    names, active = precision.tier_names(), tick.active_index
    assert tick.latency_p95_ms is not None and tick.target_latency_p95_ms is not None
    if not tick.capacity_pending:
        return _held(active, f"tier {names[active]}: p95 over target, but capacity is Ready")
    saturated = tick.latency_p95_ms >= SATURATED_P95_FACTOR * tick.target_latency_p95_ms
    best = capacity.of_tier(active)
    chosen: int | None = None
    for candidate in range(active + 1, floor_index(precision) + 1):
        candidate_capacity = capacity.of_tier(candidate)
        if candidate_capacity is None or best is None:
            chosen = candidate
            if not saturated:
                break
            # Unknown against unknown: the lower tier is presumed faster, as when tried.
            best = candidate_capacity
        elif capacity.faster(candidate, best):
            chosen, best = candidate, candidate_capacity
            if not saturated and tick.ready_replicas * candidate_capacity >= (tick.qps or 0.0):
                break
    if chosen is None:
        floor = names[floor_index(precision)]
        return _held(active, f"tier {names[active]}: p95 over target, no faster tier above {floor}")
    why = "saturated" if saturated and chosen > active + 1 else "new capacity is not Ready"
    return TierDecision(
        chosen,
        Reason.TIER_DEGRADED,
        f"tier {names[active]} -> {names[chosen]}: p95 {tick.latency_p95_ms:.0f} ms"
        f" > {tick.target_latency_p95_ms:.0f} ms target and {why}",
        True,
    )


def _step_up(names: list[str], capacity: CapacityModel, tick: TierInput) -> TierDecision:
    """Step up to the best tier that holds the current load on the Ready replicas with the
    hysteresis as headroom."""
    qps, active = tick.qps or 0.0, tick.active_index
    for candidate in range(active):
        candidate_capacity = capacity.of_tier(candidate)
        if candidate_capacity is None:
            continue
        if qps <= tick.ready_replicas * candidate_capacity * (1 - capacity.hysteresis):
            return TierDecision(
                candidate,
                Reason.TIER_RESTORED,
                f"tier {names[active]} -> {names[candidate]}: QPS {qps:.0f} fits"
                f" {tick.ready_replicas} Ready x {candidate_capacity:.0f}/replica"
                f" at {names[candidate]}",
                True,
            )
    return _held(active, f"tier {names[active]}: higher tiers would not hold QPS {qps:.0f}")
