"""The autoscaling decision (pure): metrics, replicas and history in; desired replicas, tier and a
one-line reason out.

The controller calls `decide` once a period with the last Observation and the PolicyState it kept
in the object's status (`PolicyState.to_dict()` / `from_dict`), and the simulator calls the very
same function, so the benchmark measures what runs. Rules, in order:

1. fail-static: no usable metrics -> keep the current replicas (clamped to min/max), say why;
2. QPS recommendation: ceil(QPS / targetQPSPerReplica), inside the tolerance band -> no change;
3. latency recommendation: replicas needed for p95 <= target, from a capacity estimate of one
   replica (M/M/1 inversion of the measured load and p95, see tiers.policy.capacity_at_target);
   once a lower tier has served a metrics window, sized so the first tier holds the QPS with the
   step-up's headroom (3a); while p95 is over target x (1 + tolerance) on a settled set of pods,
   up to twice the pods that reported, or what the servers' arrival-rate gauge says arrives now
   if more (with a faster tier and the first tier's capacity measured, what it says even if
   less), kept as a floor while they start (3b, overload);
4. short window and trend: both recommendations plan on the short (30 s) rate when it is above
   the window's by more than the tolerance, and, on a ramp of the window's rate (a rise in every
   quarter window for longer than a window: not a step filling the window), on the QPS projected
   trend_lookahead_s ahead (it covers the rate window's lag and the pods' start time);
5. the larger recommendation wins; stale or partial metrics never scale down;
6. HPA v2 `behavior`: stabilization windows (scale up to the lowest recommendation of the up
   window, down to the highest of the down window), step limits per period, min/max;
   6a. quick scale-down for a one-off fall: while the window's rate is below where it was a
   window ago and the load has not come back within recurrence_s of a scale-down (the rules
   asking for pods again) for RECURRENCE_MEMORY x recurrence_s, the down window is the quick
   one and the recommendations plan on the short rate: a spike's pods are released when it
   ends, a recurring load's are held for the whole window;
7. free GPU capacity caps a scale-up;
8. the tier decision (tiers.policy.decide_tier) with the outcome of the above;
9. tier-aware scale-down: while a lower tier could absorb a burst, the tiers' shorter scale-down
   window, the short rate for a scale-down, and a margin of the tolerance at the latency target
   (at the first tier) or the pods that bring the first tier back (while a lower tier serves);
10. absorb instead of scale (opt-in, spec.precision.absorbBursts): no scale-up while a measured
   lower tier, serving for less than a metrics window or stepped down to now, holds the whole ask
   on the Ready pods with the step-up's headroom.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from typing import Any

from kinfer.api import constants as c
from kinfer.autoscale.observation import Observation
from kinfer.tiers.policy import (
    TierConfig,
    TierProfile,
    capacity_at_target,
    decide_tier,
    faster_tier,
    update_profile,
)

# While p95 is over target the latency rule asks for at least this many times the Ready replicas;
# a saturated server's QPS is its capacity, not the offered load, so QPS alone under-asks.
OVERLOAD_MAX_FACTOR = 2.0
# The projected QPS is capped at this multiple of the measured QPS: a trend is a hint, not a fact.
TREND_MAX_FACTOR = 3.0
# Reads whose newest samples are this close in time come from the same scrape.
SAME_SCRAPE_S = 1.0
# The trend is fitted on this many metrics windows of history: a ramp must rise for longer than
# one window (a step lifts the window's rate for exactly one window, then holds it).
TREND_HISTORY_WINDOWS = 2
# Every rise over a quarter window is at least this share of the mean one (noise lifts a flat
# stretch by a little; a ramp lifts every quarter by about the same).
TREND_MIN_STEP_SHARE = 0.25
# A slope must be this many standard errors above zero to count as a trend.
TREND_MIN_T_STATISTIC = 4.0
# Once the load has come back within recurrence_s of a scale-down, scale-downs wait the whole
# window for this many recurrence_s: one gap longer than recurrence_s does not end a pattern.
RECURRENCE_MEMORY = 3


@dataclass(frozen=True)
class PolicyConfig:
    """The policy's knobs: spec.scaling and spec.precision, plus operator-level tuning."""

    min_replicas: int = c.DEFAULT_MIN_REPLICAS
    max_replicas: int = c.DEFAULT_MAX_REPLICAS
    target_latency_p95_ms: float | None = None
    target_qps_per_replica: float | None = None
    tolerance: float = c.DEFAULT_TOLERANCE
    scale_up_stabilization_s: float = c.DEFAULT_SCALE_UP_STABILIZATION_S
    scale_down_stabilization_s: float = c.DEFAULT_SCALE_DOWN_STABILIZATION_S
    # 6a: the down window for a one-off fall (off when not shorter than the window above), and
    # how soon after a scale-down a load that asks for pods again counts as recurring.
    quick_scale_down_stabilization_s: float = c.DEFAULT_QUICK_SCALE_DOWN_STABILIZATION_S
    recurrence_s: float = c.DEFAULT_RECURRENCE_S
    # Up: at most max(scale_up_max_step pods, scale_up_max_step_percent %) per period (HPA's
    # default behavior: 4 pods or 100 % per 15 s; kinfer's 8 pods per 5 s period, see
    # constants). Down: at most scale_down_max_step_percent % per period.
    scale_up_max_step: int = c.DEFAULT_SCALE_UP_MAX_STEP
    scale_up_max_step_percent: float = 100.0
    scale_down_max_step_percent: float = c.DEFAULT_SCALE_DOWN_MAX_STEP_PERCENT
    period_s: float = c.DEFAULT_SCALING_PERIOD_S
    metrics_window_s: float = c.DEFAULT_METRICS_WINDOW_S
    # The short window of Observation.qps_recent and versions_recent (the reader's
    # recent_window_s): a lower tier that served for less than metrics_window_s is measured on it.
    recent_window_s: float = 30.0
    # Metrics whose newest sample is older than this are stale (no scale-down on them).
    max_metrics_age_s: float = 60.0
    # How far ahead a rising QPS is projected; 0 switches the trend term off.
    trend_lookahead_s: float = 45.0
    # Expected time from a scale-up to a Ready pod; a tier step-down only pays when it is longer
    # than a period.
    expected_pod_start_s: float = 60.0
    tiers: TierConfig = field(default_factory=TierConfig)

    def __post_init__(self) -> None:
        if self.min_replicas < 0:
            raise ValueError(f"scaling.minReplicas: {self.min_replicas} must be >= 0")
        if self.max_replicas < max(self.min_replicas, 1):
            raise ValueError(
                f"scaling.maxReplicas: {self.max_replicas} must be >= minReplicas"
                f" ({self.min_replicas}) and >= 1"
            )
        for name, value in (
            ("scaling.targetLatencyP95Ms", self.target_latency_p95_ms),
            ("scaling.targetQPSPerReplica", self.target_qps_per_replica),
        ):
            if value is not None and value <= 0:
                raise ValueError(f"{name}: {value} must be > 0")


def policy_config_from_spec(scaling: Any, precision: Any = None, **tuning: Any) -> PolicyConfig:
    """Build the policy's config from the API model's ScalingSpec and PrecisionSpec.

    tuning: operator-level knobs that are not in the spec (e.g. expected_pod_start_s,
    trend_lookahead_s, max_metrics_age_s).
    """
    tiers = TierConfig()
    if precision is not None and precision.tiers:
        tiers = TierConfig(
            names=tuple(tier.name for tier in precision.tiers),
            pinned=precision.pinned,
            min_tier=precision.min_tier,
            dwell_s=float(precision.dwell_s),
            scale_down_stabilization_s=float(precision.scale_down_stabilization_s),
            absorb_bursts=bool(precision.absorb_bursts),
        )
    return PolicyConfig(
        min_replicas=scaling.min_replicas,
        max_replicas=scaling.max_replicas,
        target_latency_p95_ms=scaling.target_latency_p95_ms,
        target_qps_per_replica=scaling.target_qps_per_replica,
        tolerance=scaling.tolerance,
        scale_up_stabilization_s=scaling.scale_up_stabilization_s,
        scale_down_stabilization_s=scaling.scale_down_stabilization_s,
        quick_scale_down_stabilization_s=scaling.quick_scale_down_stabilization_s,
        recurrence_s=scaling.recurrence_s,
        scale_up_max_step=scaling.scale_up_max_step,
        scale_down_max_step_percent=scaling.scale_down_max_step_percent,
        period_s=scaling.period_s,
        metrics_window_s=scaling.metrics_window_s,
        tiers=tiers,
        **tuning,
    )


@dataclass(frozen=True)
class Replicas:
    """The replica facts the controller reads from the cluster each period."""

    current: int  # spec.replicas (what was last asked for)
    ready: int  # Ready pods
    # How many more pods the cluster can place (free GPUs / GPUs per pod); None: no limit known.
    max_additional: int | None = None


@dataclass
class PolicyState:
    """History the policy keeps between periods; lives in status, so it round-trips JSON."""

    recommendations: list[tuple[float, int]] = field(default_factory=list)
    qps_history: list[tuple[float, float]] = field(default_factory=list)
    active_tier: int = 0
    last_tier_switch_s: float | None = None
    last_tier_switch_down: bool = False
    tier_profiles: dict[str, TierProfile] = field(default_factory=dict)
    ready_seen: int = 0
    ready_changed_s: float | None = None
    # (time, replicas) of the last overload request, a floor while those pods start.
    urgent_floor: tuple[float, int] | None = None
    # 6a: when the last period scaled down, and when the rules last asked for pods within
    # recurrence_s of that (the load came back).
    last_scale_down_s: float | None = None
    load_returned_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "lastScaleDownS": self.last_scale_down_s,
            "loadReturnedS": self.load_returned_s,
            "urgentFloor": None if self.urgent_floor is None else list(self.urgent_floor),
            "readySeen": self.ready_seen,
            "readyChangedS": self.ready_changed_s,
            "recommendations": [[t, n] for t, n in self.recommendations],
            "qpsHistory": [[t, q] for t, q in self.qps_history],
            "activeTier": self.active_tier,
            "lastTierSwitchS": self.last_tier_switch_s,
            "lastTierSwitchDown": self.last_tier_switch_down,
            "tierProfiles": {name: p.to_dict() for name, p in self.tier_profiles.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PolicyState:
        """The state kept in status; a malformed one (hand-edited status) starts afresh rather
        than stopping the control loop: the policy only loses its history."""
        try:
            return cls._parse(data or {})
        except (TypeError, ValueError, KeyError, IndexError, AttributeError):
            return cls()

    @classmethod
    def _parse(cls, data: dict[str, Any]) -> PolicyState:
        return cls(
            recommendations=[(float(t), int(n)) for t, n in data.get("recommendations", [])],
            qps_history=[(float(t), float(q)) for t, q in data.get("qpsHistory", [])],
            active_tier=int(data.get("activeTier", 0)),
            last_tier_switch_s=_opt_float(data.get("lastTierSwitchS")),
            last_tier_switch_down=bool(data.get("lastTierSwitchDown", False)),
            tier_profiles={
                name: TierProfile.from_dict(p) for name, p in data.get("tierProfiles", {}).items()
            },
            ready_seen=int(data.get("readySeen", 0)),
            ready_changed_s=_opt_float(data.get("readyChangedS")),
            last_scale_down_s=_opt_float(data.get("lastScaleDownS")),
            load_returned_s=_opt_float(data.get("loadReturnedS")),
            urgent_floor=(
                None
                if data.get("urgentFloor") is None
                else (float(data["urgentFloor"][0]), int(data["urgentFloor"][1]))
            ),
        )


@dataclass(frozen=True)
class Decision:
    desired_replicas: int
    # One status line: "scaled 2 -> 4: p95 180 ms > 100 ms target".
    reason: str
    scaled: bool
    metrics_available: bool
    # The tier that should serve (index into config.tiers.names); None when there are no tiers.
    tier_index: int | None = None
    tier_changed: bool = False
    tier_reason: str = ""

    def tier_name(self, config: PolicyConfig) -> str | None:
        if self.tier_index is None:
            return None
        return config.tiers.names[self.tier_index]


def decide(
    config: PolicyConfig,
    observation: Observation,
    replicas: Replicas,
    state: PolicyState,
    now_s: float,
) -> tuple[Decision, PolicyState]:
    """One period's decision; returns it and the state to keep for the next period."""
    current = replicas.current
    tiers_enabled = len(config.tiers.names) > 1
    state = PolicyState(
        recommendations=list(state.recommendations),
        qps_history=list(state.qps_history),
        active_tier=state.active_tier,
        last_tier_switch_s=state.last_tier_switch_s,
        last_tier_switch_down=state.last_tier_switch_down,
        tier_profiles=dict(state.tier_profiles),
        ready_seen=state.ready_seen,
        ready_changed_s=state.ready_changed_s,
        urgent_floor=state.urgent_floor,
        last_scale_down_s=state.last_scale_down_s,
        load_returned_s=state.load_returned_s,
    )

    if not observation.ok:
        bounded = _clamp(current, config)
        why = observation.error or "no samples"
        verb = f"scaled {current} -> {bounded}" if bounded != current else f"holding {current}"
        return (
            Decision(
                desired_replicas=bounded,
                reason=f"{verb}: metrics unavailable ({why})",
                scaled=bounded != current,
                metrics_available=False,
                tier_index=state.active_tier if tiers_enabled else None,
                tier_reason="tier held: metrics unavailable" if tiers_enabled else "",
            ),
            state,
        )

    qps = observation.qps
    p95 = observation.latency_p95_ms
    target_ms = config.target_latency_p95_ms
    stale = (
        observation.newest_sample_age_s is not None
        and observation.newest_sample_age_s > config.max_metrics_age_s
    )
    partial = observation.pods_reporting < replicas.ready

    if tiers_enabled and not stale:
        _update_tier_profiles(config, observation, replicas, state, now_s)
    # 9. tier-aware scale-down: with a lower tier that could absorb a burst (faster_tier:
    # unmeasured, or measured faster than the first), a burst that comes back is absorbed by
    # stepping down within a second, so a scale-down may follow the load sooner (the short rate,
    # a shorter window) as long as it keeps a margin (below).
    fast = faster_tier(config.tiers, state.tier_profiles) if tiers_enabled else None

    # 4. trend: the QPS the recommendations plan for.
    planned_qps, trend_note = qps, ""
    recent = observation.qps_recent
    if qps is not None and recent is not None and recent > qps * (1 + config.tolerance):
        # The short window sees a step a whole window earlier; only a rise is trusted from it.
        planned_qps, trend_note = recent, f" ({recent:.0f} over the last scrapes)"
    elif fast is not None and qps is not None and recent is not None and recent < qps:
        # The 60 s rate still holds a burst a whole window after it ended; the short one does not.
        planned_qps, trend_note = recent, f" ({recent:.0f} over the last scrapes)"
    if qps is not None and not stale:
        window_start = now_s - TREND_HISTORY_WINDOWS * config.metrics_window_s
        state.qps_history = [(t, q) for t, q in state.qps_history if t > window_start]
        # The trend follows the window's rate alone (mixed with the short one it would zigzag),
        # one point per scrape at the scrape's time: between scrapes a period reads the same
        # scrape again, and a repeat is no rise. On partial metrics the sum lacks the pods with
        # too few samples for a rate: a lower bound of the load, so a dip below the last point
        # is no fall of the load and is left out.
        last = state.qps_history[-1] if state.qps_history else None
        if not partial or last is None or qps >= last[1]:
            sampled_s = now_s - (observation.newest_sample_age_s or 0.0)
            if last is not None and sampled_s - last[0] < SAME_SCRAPE_S:
                state.qps_history[-1] = (last[0], qps)
            else:
                state.qps_history.append((sampled_s, qps))
            projected, projected_note = _project(config, state.qps_history, qps)
            if projected_note and (planned_qps is None or projected > planned_qps):
                planned_qps, trend_note = projected, projected_note

    # 6a. a one-off fall: the down window is the quick one, and a falling load is planned on the
    # short rate (the window's holds the spike for a whole window after its end).
    quick = _one_off_fall(config, state, qps, now_s)
    if (
        quick
        and fast is None
        and qps is not None
        and recent is not None
        and recent < qps
        and planned_qps == qps
    ):
        planned_qps, trend_note = recent, f" ({recent:.0f} over the last scrapes)"

    # 2. QPS recommendation.
    recs: list[tuple[int, str]] = []
    target_qps = config.target_qps_per_replica
    if planned_qps is not None and target_qps is not None:
        ratio = planned_qps / (max(current, 1) * target_qps)
        if abs(ratio - 1) <= config.tolerance and current > 0:
            recs.append((current, f"QPS {qps:.0f}{trend_note} ~ {current} x {target_qps:g} target"))
        else:
            wanted = math.ceil(planned_qps / target_qps - 1e-9)
            op = ">" if wanted > current else "<"
            recs.append(
                (wanted, f"QPS {qps:.0f}{trend_note} {op} {current} x {target_qps:g} target")
            )

    # 3. latency recommendation.
    if p95 is not None and target_ms is not None:
        recs.append(
            _latency_recommendation(
                config, state, replicas, observation, planned_qps, trend_note, now_s
            )
        )

    if not recs:
        bounded = _clamp(current, config)
        return (
            Decision(
                desired_replicas=bounded,
                reason=f"holding {current}: metrics carry no signal for the configured targets",
                scaled=bounded != current,
                metrics_available=False,
                tier_index=state.active_tier if tiers_enabled else None,
            ),
            state,
        )

    # 5. the larger recommendation wins; its text is the reason.
    recommended, why = max(recs, key=lambda rec: rec[0])
    if fast is not None and recommended < current and state.active_tier == 0:
        recommended, why = _scale_down_margin(
            config, state, observation, planned_qps, current, recommended, why
        )
    elif fast is not None and recommended < current and planned_qps is not None:
        # 9d. A lower tier serves: a scale-down keeps the pods that bring the first tier back
        # (rule 3a's count, also before 3a's window), or 3a asks them back a period later.
        step_up = _step_up_replicas(config, state, planned_qps)
        if step_up is not None and step_up[0] > recommended:
            recommended = min(step_up[0], current)
            why += (
                f"; {step_up[0]} x {step_up[1]:.0f}/replica hold it at {config.tiers.names[0]}"
                f" with {config.tiers.hysteresis:.0%} headroom"
            )
    if recommended < current and (stale or partial):
        recommended = current
        why += (
            f"; no scale-down on stale metrics ({observation.newest_sample_age_s:.0f} s old)"
            if stale
            else f"; no scale-down on partial metrics ({observation.pods_reporting}"
            f"/{replicas.ready} pods)"
        )

    # 3b. overload: while p95 is over target, a saturated server's QPS is its capacity, not the
    # offered load, so ask for up to twice the pods the metrics came from. This urgent term is not
    # kept in the stabilization history: it would hold the peak for the whole down window.
    urgent = recommended
    floor_before = state.urgent_floor
    if replicas.ready != state.ready_seen:
        state.ready_seen, state.ready_changed_s = replicas.ready, now_s
    # Only on a settled set of pods: the window's p95 must describe the pods that are Ready now,
    # and pods still starting are capacity already on its way.
    settled = replicas.current <= replicas.ready and (
        state.ready_changed_s is None or now_s - state.ready_changed_s >= config.metrics_window_s
    )
    if (
        settled
        and p95 is not None
        and target_ms is not None
        and p95 > target_ms * (1 + config.tolerance)
    ):
        reporting = max(observation.pods_reporting, 1)
        overload = math.ceil(reporting * min(p95 / target_ms, OVERLOAD_MAX_FACTOR))
        measured = ""
        arriving = observation.qps_arriving
        if arriving is not None and target_qps:
            # The servers' own last-second arrival rate (kinfer's server exports it) measures the
            # load at this very scrape, where the rates hold only its first seconds: an overload
            # beyond twice the pods is asked for now rather than a scrape later. Never less than
            # the blind ask on the QPS target alone: a target set above the pods' real capacity
            # would under-ask. With a faster tier to bridge the wait and the first tier's capacity
            # measured, the ask sized on both replaces the blind one, also when smaller: twice
            # the pods overshoots every burst under 2x, and the lower tier holds one it misses.
            # Still at least a pod more than reported: the p95 says those do not hold the load,
            # whatever the profile says.
            per_replica, checked = target_qps, False
            first = state.tier_profiles.get(config.tiers.names[0]) if fast is not None else None
            if first is not None and first.capacity_qps_per_replica:
                per_replica = min(target_qps, first.capacity_qps_per_replica)
                checked = True
            sized = math.ceil(arriving / per_replica - 1e-9)
            if checked:
                sized = max(sized, reporting + 1)
            if sized > overload or checked:
                overload = sized
                measured = f", {arriving:.0f} QPS arriving" + (
                    f" / {per_replica:.0f} per {config.tiers.names[0]} pod" if checked else ""
                )
        if overload > recommended:
            urgent = overload
            why = (
                f"p95 {p95:.0f} ms > {target_ms:g} ms target on {reporting} pods"
                f"{measured}{trend_note}"
            )
            state.urgent_floor = (now_s, overload)
    # The pods the urgent term asked for are not cancelled while they start (that would flap):
    # its request is a floor until they are Ready or a start time and a window have passed.
    floor = 0
    if state.urgent_floor is not None:
        asked_s, asked = state.urgent_floor
        expiry_s = asked_s + config.expected_pod_start_s + config.metrics_window_s
        if replicas.ready >= asked or now_s >= expiry_s:
            state.urgent_floor = None
        else:
            floor = asked

    # 6. stabilization windows, step limits, min/max.
    window = max(config.scale_up_stabilization_s, config.scale_down_stabilization_s)
    state.recommendations = [(t, n) for t, n in state.recommendations if t > now_s - window]
    state.recommendations.append((now_s, recommended))
    history = state.recommendations + ([(now_s, floor)] if floor > recommended else [])
    behavior = config
    if fast is not None and config.tiers.scale_down_stabilization_s < (
        config.scale_down_stabilization_s
    ):
        behavior = replace(
            config, scale_down_stabilization_s=config.tiers.scale_down_stabilization_s
        )
    if quick:
        behavior = replace(
            behavior,
            scale_down_stabilization_s=min(
                behavior.scale_down_stabilization_s, config.quick_scale_down_stabilization_s
            ),
        )
    desired, notes = apply_behavior(behavior, history, current, max(urgent, floor), now_s)
    if desired < current:
        if quick:
            notes.append(
                f"one-off fall, {behavior.scale_down_stabilization_s:.0f} s window: the load"
                f" has not come back within {config.recurrence_s:.0f} s of a scale-down"
            )
        elif fast is not None and behavior is not config:
            notes.append(f"{config.tiers.names[fast]} absorbs a burst that comes back")
        state.last_scale_down_s = now_s
    elif (
        desired > current
        and state.last_scale_down_s is not None
        and now_s - state.last_scale_down_s <= config.recurrence_s
    ):
        state.load_returned_s = now_s

    # 7. free GPU capacity.
    uncapped = desired
    if replicas.max_additional is not None and desired > current + replicas.max_additional:
        desired = max(current + replicas.max_additional, current)
        notes.append(f"capped at {desired} by free GPU capacity ({replicas.max_additional})")

    if desired != current:
        reason = f"scaled {current} -> {desired}: {why}"
    else:
        reason = f"holding {current}: {why}"
    if notes:
        reason += " (" + "; ".join(notes) + ")"

    decision = Decision(
        desired_replicas=desired,
        reason=reason,
        scaled=desired != current,
        metrics_available=True,
    )
    if not tiers_enabled:
        return decision, state

    # 8. tiers: capacity is pending when no more can come (capped, at maxReplicas, no free GPU)
    # or what is coming will not be Ready within a period (pods still starting).
    wanted = max(urgent, uncapped)
    capped = wanted > desired or recommended > config.max_replicas
    no_room = desired >= config.max_replicas or (
        replicas.max_additional is not None and replicas.max_additional <= 0
    )
    starting = max(desired, current) > replicas.ready
    capacity_pending = (
        capped or no_room or (starting and config.expected_pod_start_s > config.period_s)
    )
    tier = decide_tier(
        config.tiers,
        active_index=state.active_tier,
        profiles=state.tier_profiles,
        latency_p95_ms=_active_tier_p95(observation, state.active_tier) or p95,
        qps=qps,
        target_latency_p95_ms=target_ms,
        tolerance=config.tolerance,
        ready_replicas=replicas.ready,
        capacity_pending=capacity_pending,
        top_tier_capacity_hint=target_qps,
        last_switch_s=state.last_tier_switch_s,
        now_s=now_s,
        last_switch_down=state.last_tier_switch_down,
    )
    if tier.changed:
        state.last_tier_switch_down = tier.index > state.active_tier
        state.active_tier = tier.index
        state.last_tier_switch_s = now_s
    # 10. absorb instead of scale (spec.precision.absorbBursts): the lower tier decided now, or
    # serving for less than a metrics window, holds the rules' whole ask on the Ready pods.
    if config.tiers.absorb_bursts and not stale and desired > _clamp(current, config):
        held = _absorbed(config, state, replicas, tier.index, max(urgent, floor), now_s)
        if held is not None:
            desired = _clamp(current, config)
            reason = f"held at {desired}: {held} ({why})"
            # Nothing was asked for: no floor of pods to wait for.
            state.urgent_floor = floor_before
    return (
        Decision(
            desired_replicas=desired,
            reason=reason,
            scaled=desired != current,
            metrics_available=True,
            tier_index=tier.index,
            tier_changed=tier.changed,
            tier_reason=tier.reason,
        ),
        state,
    )


def _one_off_fall(
    config: PolicyConfig, state: PolicyState, qps: float | None, now_s: float
) -> bool:
    """6a: the load is below where it was a metrics window ago (the trend history's point from
    then), and has not come back within recurrence_s of a scale-down in the last
    RECURRENCE_MEMORY x recurrence_s. Off when the quick window is not the shorter one."""
    if config.quick_scale_down_stabilization_s >= config.scale_down_stabilization_s:
        return False
    if (
        state.load_returned_s is not None
        and now_s - state.load_returned_s <= RECURRENCE_MEMORY * config.recurrence_s
    ):
        return False
    earlier = [q for t, q in state.qps_history if t <= now_s - config.metrics_window_s]
    return qps is not None and bool(earlier) and qps < earlier[-1]


def _absorbed(
    config: PolicyConfig,
    state: PolicyState,
    replicas: Replicas,
    tier_index: int,
    asked: int,
    now_s: float,
) -> str | None:
    """Why a scale-up to `asked` is held, or None: the lower tier that serves (for less than a
    metrics window) or that this period stepped to, measured, holds on the Ready pods what the
    rules ask for at the first tier, measured too, with the step-up's headroom:
    `ready x capacity(tier) x (1 - hysteresis) >= asked x capacity(first)`. Once that tier has
    served a window, rule 3a sizes for the step back up as without the option. Not with a
    pinned tier: it never steps back up, so nothing would end the hold but the window."""
    if tier_index <= 0 or replicas.ready <= 0 or config.tiers.pinned is not None:
        return None
    since = math.inf if state.last_tier_switch_s is None else now_s - state.last_tier_switch_s
    if since >= config.metrics_window_s:
        return None
    names = config.tiers.names
    lower = state.tier_profiles.get(names[tier_index])
    first = state.tier_profiles.get(names[0])
    lower_capacity = None if lower is None else lower.capacity_qps_per_replica
    first_capacity = None if first is None else first.capacity_qps_per_replica
    if not lower_capacity or not first_capacity:
        return None
    headroom = config.tiers.hysteresis
    holds = replicas.ready * lower_capacity * (1 - headroom)
    if holds < asked * first_capacity:
        return None
    return (
        f"{names[tier_index]} holds {holds:.0f} QPS on {replicas.ready} Ready pods"
        f" ({lower_capacity:.0f}/replica, {headroom:.0%} headroom) >= {asked}"
        f" x {first_capacity:.0f}/replica asked at {names[0]}"
    )


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _clamp(replicas: int, config: PolicyConfig) -> int:
    return min(max(replicas, config.min_replicas), config.max_replicas)


def _project(
    config: PolicyConfig, history: list[tuple[float, float]], qps: float
) -> tuple[float, str]:
    """QPS projected trend_lookahead_s ahead by a least-squares slope; rises only."""
    if config.trend_lookahead_s <= 0 or len(history) < 3:
        return qps, ""
    n = len(history)
    mean_t = sum(t for t, _ in history) / n
    mean_q = sum(q for _, q in history) / n
    var_t = sum((t - mean_t) ** 2 for t, _ in history)
    if var_t <= 0:
        return qps, ""
    slope = sum((t - mean_t) * (q - mean_q) for t, q in history) / var_t
    # A ramp, not a step filling the rate window, nor noise: the rise spans more than a window,
    # every quarter window adds a fair share of it, and the slope stands out of the residuals.
    # No band on the rise itself: the projection only moves the planned QPS, and the QPS
    # rule's tolerance band still applies to it. Quarter windows rather than points: where
    # pods are scraped at different offsets the points come closer together and each holds
    # one pod's share of the rise.
    spaced = [history[-1]]
    for point in reversed(history[:-1]):
        if spaced[-1][0] - point[0] >= config.metrics_window_s / 4:
            spaced.append(point)
    spaced.reverse()
    if len(spaced) < 3:
        return qps, ""
    steps = [later[1] - earlier[1] for earlier, later in itertools.pairwise(spaced)]
    mean_step = (spaced[-1][1] - spaced[0][1]) / len(steps)
    if (
        spaced[-1][0] - spaced[0][0] <= config.metrics_window_s
        or mean_step <= 0
        or min(steps) < TREND_MIN_STEP_SHARE * mean_step
    ):
        return qps, ""
    residual = sum((q - mean_q - slope * (t - mean_t)) ** 2 for t, q in history)
    if n > 2 and residual > 0:
        standard_error = math.sqrt(residual / (n - 2) / var_t)
        if slope < TREND_MIN_T_STATISTIC * standard_error:
            return qps, ""
    projected = min(qps + slope * config.trend_lookahead_s, qps * TREND_MAX_FACTOR)
    return projected, f" rising {slope:.1f}/s, {projected:.0f} in {config.trend_lookahead_s:.0f} s"


def _latency_recommendation(
    config: PolicyConfig,
    state: PolicyState,
    replicas: Replicas,
    observation: Observation,
    planned_qps: float | None,
    trend_note: str,
    now_s: float,
) -> tuple[int, str]:
    """Replicas that hold p95 <= target for the planned QPS at the first tier's capacity (the tier
    we scale for: lower tiers only bridge the wait for pods)."""
    target_ms = config.target_latency_p95_ms
    p95 = observation.latency_p95_ms
    assert target_ms is not None and p95 is not None
    current = replicas.current
    over = p95 > target_ms * (1 + config.tolerance)
    top = config.tiers.names[0] if config.tiers.names else None
    profile = state.tier_profiles.get(top) if top is not None else None
    capacity = None if profile is None else profile.capacity_qps_per_replica
    # Measure now only inside the operating range at the first tier: over target the pods queue
    # or drain a queue, and the M/M/1 inversion says nothing there.
    if not over and state.active_tier == 0 and observation.qps and observation.qps > 0:
        reporting = max(observation.pods_reporting, 1)
        measured = capacity_at_target(observation.qps / reporting, p95, target_ms)
        capacity = measured if capacity is None else min(capacity, measured)
    wanted = current
    if capacity is not None and capacity > 0 and planned_qps is not None:
        wanted = math.ceil(planned_qps / capacity - 1e-9)
    # Not with a pinned tier: it never steps up, the headroom would be pods for nothing. Nor
    # before the lower tier has served a metrics window: a burst shorter than that is over before
    # such pods would be Ready (the lower tier holds it alone), and its load is not measured yet.
    stepping_up = (
        state.active_tier > 0
        and config.tiers.pinned is None
        and (
            state.last_tier_switch_s is None
            or now_s - state.last_tier_switch_s >= config.metrics_window_s
        )
    )
    if stepping_up and top is not None and planned_qps is not None:
        # A lower tier serves. It steps back up only when the first tier holds the QPS on the
        # Ready pods with the hysteresis' headroom, so size for exactly that: sized at the QPS
        # target alone (65/replica against a 70/replica capacity less 10 %) the service would
        # stay on the lower tier for as long as the load stays up.
        step_up = _step_up_replicas(config, state, planned_qps)
        if step_up is not None and step_up[0] > wanted:
            needed, per_replica = step_up
            return needed, (
                f"QPS {planned_qps:.0f} at {config.tiers.names[state.active_tier]}:"
                f" {needed} x {per_replica:.0f}/replica hold it at {top} with"
                f" {config.tiers.hysteresis:.0%} headroom{trend_note}"
            )
    if over:
        return wanted, f"p95 {p95:.0f} ms > {target_ms:g} ms target{trend_note}"
    if capacity is None and config.target_qps_per_replica is None:
        # Latency only and nothing to size with: step down gently while p95 is far below target.
        wanted = current - 1 if p95 < target_ms * (1 - config.tolerance) / 2 else current
    if wanted >= current:
        # Over the target but inside the tolerance is not "over" (no overload ask), nor "<=".
        relation = "<=" if p95 <= target_ms else f"within {config.tolerance:.0%} of"
        return wanted, f"p95 {p95:.0f} ms {relation} {target_ms:g} ms target{trend_note}"
    return wanted, f"p95 {p95:.0f} ms, {wanted} replicas hold {target_ms:g} ms target"


def _step_up_replicas(
    config: PolicyConfig, state: PolicyState, planned_qps: float
) -> tuple[int, float] | None:
    """(replicas, capacity per replica) that hold planned_qps at the first tier with the tier
    step-up's hysteresis as headroom: the count a lower tier steps back up on. The capacity is the
    first tier's profile, else targetQPSPerReplica x (1 + tolerance); None without either."""
    profile = state.tier_profiles.get(config.tiers.names[0]) if config.tiers.names else None
    capacity = None if profile is None else profile.capacity_qps_per_replica
    if capacity is None and config.target_qps_per_replica is not None:
        capacity = config.target_qps_per_replica * (1 + config.tolerance)
    if capacity is None or capacity <= 0:
        return None
    needed = math.ceil(planned_qps / (capacity * (1 - config.tiers.hysteresis)) - 1e-9)
    return needed, capacity


def _scale_down_margin(
    config: PolicyConfig,
    state: PolicyState,
    observation: Observation,
    planned_qps: float | None,
    current: int,
    recommended: int,
    why: str,
) -> tuple[int, str]:
    """A scale-down only to a count that holds the planned QPS plus the tolerance at the latency
    target, at the first tier's capacity as the latency rule sees it (the lower of its profile and
    this window's estimate). Without it the QPS rule (65/replica) releases a pod that the latency
    rule asks back a period later when the load moves by a few percent: the two disagree at the
    margin, and a short scale-down window no longer hides that."""
    target_ms = config.target_latency_p95_ms
    p95 = observation.latency_p95_ms
    if target_ms is None or p95 is None or planned_qps is None or p95 > target_ms:
        return recommended, why
    profile = state.tier_profiles.get(config.tiers.names[0])
    capacity = None if profile is None else profile.capacity_qps_per_replica
    if observation.qps and p95 > 0:
        reporting = max(observation.pods_reporting, 1)
        measured = capacity_at_target(observation.qps / reporting, p95, target_ms)
        capacity = measured if capacity is None else min(capacity, measured)
    if capacity is None:
        return recommended, why
    holds = (
        current
        if capacity <= 0
        else math.ceil(planned_qps * (1 + config.tolerance) / capacity - 1e-9)
    )
    if holds <= recommended:
        return recommended, why
    holds = min(holds, current)
    return holds, (
        f"{why}; {holds} x {capacity:.0f}/replica hold it"
        f" +{config.tolerance:.0%} at the {target_ms:g} ms target"
    )


def apply_behavior(
    config: PolicyConfig,
    history: list[tuple[float, int]],
    current: int,
    recommended: int,
    now_s: float,
) -> tuple[int, list[str]]:
    """HPA v2 behavior: stabilization windows, then per-period step limits, then min/max."""
    notes: list[str] = []
    # Both windows include this period's recommendation (HPA keeps it in its history first).
    up_window = [n for t, n in history if t > now_s - config.scale_up_stabilization_s]
    down_window = [n for t, n in history if t > now_s - config.scale_down_stabilization_s]
    up_window.append(recommended)
    down_window.append(recommended)
    up_rec, down_rec = min(up_window), max(down_window)
    desired = current
    if desired < up_rec:
        desired = up_rec
    if desired > down_rec:
        desired = down_rec
    if recommended < current and desired > recommended:
        notes.append(f"stabilized over {config.scale_down_stabilization_s:.0f} s")
    up_limit = max(
        current + config.scale_up_max_step,
        math.ceil(current * (1 + config.scale_up_max_step_percent / 100)),
    )
    down_limit = current - max(1, math.floor(current * config.scale_down_max_step_percent / 100))
    if desired > up_limit:
        desired = up_limit
        notes.append(f"step limit +{up_limit - current}")
    if desired < down_limit:
        desired = down_limit
        notes.append(f"step limit -{current - down_limit}")
    bounded = _clamp(desired, config)
    if bounded != desired:
        which = "maxReplicas" if bounded < desired else "minReplicas"
        notes.append(f"{which} {bounded}")
    return bounded, notes


def _active_tier_p95(observation: Observation, active_tier: int) -> float | None:
    version = observation.versions.get(active_tier + 1)
    return None if version is None else version.latency_p95_ms


def _update_tier_profiles(
    config: PolicyConfig,
    observation: Observation,
    replicas: Replicas,
    state: PolicyState,
    now_s: float,
) -> None:
    """Measure the active tier on a window whose scrapes all follow the switch to it.

    The first tier: the metrics window, once it has served a whole one, per Ready pod. A lower
    tier serves for about a cold start per burst, so it is measured on the short window as soon as
    that window follows the switch, and per pod that served the window: only while the Ready
    count is unchanged since the window began (pods Ready midway lower the mean load per pod but
    not the p95 the busy seconds set, and the M/M/1 inversion would read a slower tier). A window
    that holds the switch dilutes the tier's QPS over seconds it did not serve and adds the
    seconds that drain the backlog built before it (a p95 over target: no sample).
    """
    target_ms = config.target_latency_p95_ms
    if target_ms is None or replicas.ready <= 0:
        return
    since = math.inf if state.last_tier_switch_s is None else now_s - state.last_tier_switch_s
    if state.active_tier == 0:
        if since < config.metrics_window_s:
            return
        version = observation.versions.get(1)
        pods = replicas.ready
    else:
        if since >= config.metrics_window_s:
            window, versions = config.metrics_window_s, observation.versions
        elif since >= config.recent_window_s:
            window, versions = config.recent_window_s, observation.versions_recent
        else:
            return
        # state.ready_seen is the Ready count of the last period; a change seen only now happened
        # after that read, so within the last period of the window at most.
        if state.ready_changed_s is not None and state.ready_changed_s > now_s - window:
            return
        pods = state.ready_seen
        version = versions.get(state.active_tier + 1)
    if pods <= 0 or version is None or version.qps is None or version.latency_p95_ms is None:
        return
    # Over target the pods queue (or drain a queue): the M/M/1 inversion does not hold there.
    if version.latency_p95_ms > target_ms:
        return
    name = config.tiers.names[state.active_tier]
    state.tier_profiles[name] = update_profile(
        state.tier_profiles.get(name, TierProfile()),
        version.qps / pods,
        version.latency_p95_ms,
        target_ms,
    )
