"""Stage 2, recommenders: replicas for the planned rate, each with its reason.

- QPS: ceil(planned / targetQPSPerReplica), none inside the tolerance band.
- latency: replicas that hold p95 <= target at the first tier's capacity (the tier we scale
  for: lower tiers only bridge the wait for pods); while a lower tier serves, the replicas on
  which the first tier comes back with the step-up's headroom.
- overload: while p95 is over target on a settled set of pods, a saturated server's QPS is its
  capacity, not the offered load: up to twice the pods that reported, or what the servers'
  arrival-rate gauge says arrives now. It is a floor while its pods start, not a history entry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kinfer.autoscale.capacity_model import CapacityModel
from kinfer.autoscale.observation import Observation
from kinfer.autoscale.reasons import Reason, Stage, Step

# While p95 is over target the overload recommender asks for at least this many times the Ready
# replicas; a saturated server's QPS is its capacity, not the offered load, so QPS alone under-asks.
OVERLOAD_MAX_FACTOR = 2.0


@dataclass(frozen=True)
class Recommendation:
    replicas: int
    step: Step


@dataclass(frozen=True)
class Targets:
    latency_p95_ms: float | None
    qps_per_replica: float | None
    tolerance: float


def qps(targets: Targets, planned: float | None, current: int) -> Recommendation | None:
    target = targets.qps_per_replica
    if planned is None or target is None:
        return None
    ratio = planned / (max(current, 1) * target)
    if abs(ratio - 1) <= targets.tolerance and current > 0:
        wanted, relation = current, "~"
    else:
        wanted = math.ceil(planned / target - 1e-9)
        relation = ">" if wanted > current else "<"
    figures = {"planned": planned, "current": current, "target": target, "replicas": wanted}
    message = f"QPS {planned:.0f} {relation} {current} x {target:g} target"
    return Recommendation(wanted, Step(Stage.RECOMMEND, Reason.QPS_TARGET, message, figures))


@dataclass(frozen=True)
class LatencyInput:
    observation: Observation
    planned: float | None
    current: int
    active_tier: int
    # A lower tier serves and may step back up: size for the first tier's return.
    stepping_up: bool
    tier_names: tuple[str, ...]


def latency(targets: Targets, model: CapacityModel, tick: LatencyInput) -> Recommendation | None:
    target, p95 = targets.latency_p95_ms, tick.observation.latency_p95_ms
    if target is None or p95 is None:
        return None
    over = p95 > target * (1 + targets.tolerance)
    # Measure now only inside the operating range at the first tier: over target the pods queue
    # or drain a queue, and the M/M/1 inversion says nothing there.
    capacity = model.first_at_target(tick.observation, not over and tick.active_tier == 0)
    wanted = tick.current
    if capacity is not None and capacity > 0 and tick.planned is not None:
        wanted = math.ceil(tick.planned / capacity - 1e-9)
    step_up = _step_up(model, tick, wanted)
    if step_up is not None:
        return step_up
    figures = {"p95Ms": p95, "targetMs": target, "capacity": capacity, "replicas": wanted}
    if over:
        message = f"p95 {p95:.0f} ms > {target:g} ms target"
    else:
        if capacity is None and targets.qps_per_replica is None:
            # Latency only and nothing to size with: step down gently while p95 is far below.
            far_below = p95 < target * (1 - targets.tolerance) / 2
            wanted = tick.current - 1 if far_below else tick.current
            figures["replicas"] = wanted
        relation = "<=" if p95 <= target else f"within {targets.tolerance:.0%} of"
        message = f"p95 {p95:.0f} ms {relation} {target:g} ms target"
        if wanted < tick.current:
            message = f"p95 {p95:.0f} ms, {wanted} replicas hold {target:g} ms target"
    return Recommendation(wanted, Step(Stage.RECOMMEND, Reason.LATENCY_TARGET, message, figures))


def _step_up(model: CapacityModel, tick: LatencyInput, wanted: int) -> Recommendation | None:
    """A lower tier steps back up only when the first tier holds the QPS on the Ready pods with
    the hysteresis' headroom, so size for exactly that: sized at the QPS target alone the
    service would stay on the lower tier for as long as the load stays up."""
    if not tick.stepping_up or not tick.tier_names or tick.planned is None:
        return None
    step_up = model.step_up(tick.planned)
    if step_up is None or step_up[0] <= wanted:
        return None
    return Recommendation(step_up[0], headroom_step(model, tick.planned, tick.active_tier, step_up))


def headroom_step(
    model: CapacityModel, planned: float, active_tier: int, step_up: tuple[int, float]
) -> Step:
    needed, per_replica = step_up
    first = model.names[0]
    return Step(
        Stage.RECOMMEND if active_tier > 0 else Stage.GUARD,
        Reason.STEP_UP_HEADROOM,
        f"QPS {planned:.0f} at {model.names[active_tier]}: {needed} x {per_replica:.0f}/replica"
        f" hold it at {first} with {model.hysteresis:.0%} headroom",
        {"planned": planned, "replicas": needed, "capacity": per_replica},
    )


@dataclass(frozen=True)
class OverloadInput:
    observation: Observation
    settled: bool
    # The first tier's measured capacity, when a faster tier bridges the wait (else None).
    first_capacity: float | None
    first_tier: str | None


def overload(targets: Targets, tick: OverloadInput) -> Recommendation | None:
    """Up to twice the pods that reported; with kinfer's arrival-rate gauge, what arrives now
    (measures the load at this very scrape, where the rates hold only its first seconds). Never
    less than the blind ask on the QPS target alone. With a faster tier to bridge the wait and
    the first tier's capacity measured, the ask sized on both replaces the blind one, also when
    smaller, but is still at least a pod more than reported."""
    target, p95 = targets.latency_p95_ms, tick.observation.latency_p95_ms
    if not tick.settled or target is None or p95 is None:
        return None
    if p95 <= target * (1 + targets.tolerance):
        return None
    reporting = max(tick.observation.pods_reporting, 1)
    asked = math.ceil(reporting * min(p95 / target, OVERLOAD_MAX_FACTOR))
    figures: dict[str, float | int | str | None] = {"p95Ms": p95, "targetMs": target}
    figures["pods"] = reporting
    message = f"p95 {p95:.0f} ms > {target:g} ms target on {reporting} pods"
    arriving, target_qps = tick.observation.qps_arriving, targets.qps_per_replica
    if arriving is not None and target_qps:
        per_replica, checked = target_qps, tick.first_capacity is not None
        if tick.first_capacity is not None:
            per_replica = min(target_qps, tick.first_capacity)
        sized = math.ceil(arriving / per_replica - 1e-9)
        if checked:
            sized = max(sized, reporting + 1)
        if sized > asked or checked:
            asked = sized
            figures.update(arriving=arriving, perReplica=per_replica)
            message += f", {arriving:.0f} QPS arriving"
            if checked:
                message += f" / {per_replica:.0f} per {tick.first_tier} pod"
    figures["replicas"] = asked
    return Recommendation(asked, Step(Stage.RECOMMEND, Reason.OVERLOAD_FLOOR, message, figures))
