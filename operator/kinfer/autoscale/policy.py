"""The autoscaling decision (pure): metrics, replicas and history in; replicas, tier and the trail
of reasons out.

The controller calls `decide` once a period with the last Observation and the PolicyState it kept
(a copy lives in the object's status), and the simulator calls the very same function, so the
benchmark measures what runs. One period is a pipeline of stages, run in this order:

1. signal (autoscale.signal): the rate to plan on: the window's, the short one or the trend's;
2. recommenders (autoscale.recommend): QPS, latency and overload, the largest wins;
3. guards: no scale-down on stale or partial metrics; while a faster tier could absorb a burst,
   a scale-down keeps the first tier's margin;
4. behavior (autoscale.behavior): the scale-down window (the quick one after a one-off fall or
   while a faster tier absorbs a burst), stabilization, step limits, min/max;
5. capacity: free GPU capacity caps a scale-up;
6. tier (tiers.policy): the precision tier; with absorbBursts, a lower tier holds the ask.

Both the scaling stages and the tier decision read one capacity model (autoscale.capacity_model).
Without usable metrics the replicas are held (fail-static).
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass, field, fields, replace
from typing import Any

from kinfer.api.model import PrecisionSpec, ScalingSpec
from kinfer.autoscale import recommend, signal
from kinfer.autoscale.behavior import Behavior, apply_behavior
from kinfer.autoscale.capacity_model import CapacityModel, Sample, TierProfile, measure
from kinfer.autoscale.observation import Observation
from kinfer.autoscale.reasons import Reason, Stage, Step, deciding
from kinfer.tiers.policy import TierDecision, TierInput, decide_tier, floor_index

# Once the load has come back within recurrence_s of a scale-down, scale-downs wait the whole
# window for this many recurrence_s: one gap longer than recurrence_s does not end a pattern.
RECURRENCE_MEMORY = 3


@dataclass(frozen=True)
class Tuning:
    """The operator's own settings (not in the spec)."""

    # The short window of Observation.qps_recent and versions_recent (the reader's
    # recent_window_s): a lower tier that served for less than a metrics window is measured on it.
    recent_window_s: float = 30.0
    # Metrics whose newest sample is older than this are stale (no scale-down on them).
    max_metrics_age_s: float = 60.0
    # How far ahead a rising QPS is projected; 0 switches the trend off.
    trend_lookahead_s: float = 45.0
    # Expected time from a scale-up to a Ready pod (the controller measures it per service); a
    # tier step-down only pays when it is longer than a period.
    expected_pod_start_s: float = 60.0
    # The scale-down window while a scale-down is cheap to be wrong about: after a one-off fall
    # (the load has not come back within recurrence_s of a scale-down) or while a faster tier
    # would absorb a burst that comes back. Off when not shorter than scaleDownStabilization.
    quick_scale_down_stabilization_s: float = 30.0
    recurrence_s: float = 300.0
    # Up: a step of max(scaleUpMaxStep pods, this %) per period (HPA's default: 100 %).
    scale_up_max_step_percent: float = 100.0
    # A higher tier must hold the load with this much headroom before the policy steps up to it.
    tier_hysteresis: float = 0.1


@dataclass(frozen=True)
class PolicyConfig:
    """The policy's settings: the typed spec (spec.scaling, spec.precision) and the tuning."""

    scaling: ScalingSpec = field(default_factory=ScalingSpec)
    precision: PrecisionSpec = field(default_factory=PrecisionSpec)
    tuning: Tuning = field(default_factory=Tuning)

    @property
    def tier_names(self) -> tuple[str, ...]:
        return tuple(self.precision.tier_names())

    @property
    def tiers_enabled(self) -> bool:
        return len(self.precision.tiers) > 1

    def behavior(self, down_window_s: float | None = None) -> Behavior:
        s = self.scaling
        return Behavior(
            min_replicas=s.min_replicas,
            max_replicas=s.max_replicas,
            up_window_s=s.scale_up_stabilization_s,
            down_window_s=s.scale_down_stabilization_s if down_window_s is None else down_window_s,
            up_max_step=s.scale_up_max_step,
            up_max_step_percent=self.tuning.scale_up_max_step_percent,
            down_max_step_percent=s.scale_down_max_step_percent,
        )

    def capacity(self, profiles: dict[str, TierProfile]) -> CapacityModel:
        return CapacityModel(
            names=self.tier_names,
            profiles=profiles,
            target_ms=self.scaling.target_latency_p95_ms,
            target_qps=self.scaling.target_qps_per_replica,
            tolerance=self.scaling.tolerance,
            hysteresis=self.tuning.tier_hysteresis,
        )

    def targets(self) -> recommend.Targets:
        s = self.scaling
        return recommend.Targets(s.target_latency_p95_ms, s.target_qps_per_replica, s.tolerance)


@dataclass(frozen=True)
class Replicas:
    """The replica facts the controller reads from the cluster each period."""

    current: int  # spec.replicas (what was last asked for)
    ready: int  # Ready pods
    # How many more pods the cluster can place (free GPUs / GPUs per pod); None: no limit known.
    max_additional: int | None = None


@dataclass
class PolicyState:
    """History the policy keeps between periods; status keeps a copy (to_dict / from_dict)."""

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
    # When the last period scaled down, and when a scale-up followed within recurrence_s.
    last_scale_down_s: float | None = None
    load_returned_s: float | None = None

    def copy(self) -> PolicyState:
        """An independent copy: the lists and the dict are new; what they hold (tuples,
        frozen TierProfiles) is immutable, so it is shared."""
        return replace(
            self,
            recommendations=list(self.recommendations),
            qps_history=list(self.qps_history),
            tier_profiles=dict(self.tier_profiles),
        )

    def to_dict(self) -> dict[str, Any]:
        return {_camel(f.name): _to_json(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PolicyState:
        """The state kept in status; a malformed one (hand-edited status) starts afresh rather
        than stopping the control loop: the policy only loses its history."""
        hints = typing.get_type_hints(cls)
        values = {}
        try:
            for f in fields(cls):
                key = _camel(f.name)
                if data and key in data:
                    values[f.name] = _from_json(hints[f.name], data[key])
            return cls(**values)
        except (TypeError, ValueError, KeyError, IndexError, AttributeError):
            return cls()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _to_json(value: Any) -> Any:
    if isinstance(value, TierProfile):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    return value


def _from_json(hint: Any, value: Any) -> Any:
    """A JSON value as the field's type: X | None, list[...], tuple[...], dict[str, ...]."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not type(None)]
        return None if value is None else _from_json(inner[0], value)
    if origin is list:
        return [_from_json(args[0], v) for v in value]
    if origin is tuple:
        if len(value) != len(args):
            raise ValueError(f"{value!r} is not a {hint}")
        return tuple(_from_json(a, v) for a, v in zip(args, value, strict=True))
    if origin is dict:
        return {str(k): _from_json(args[1], v) for k, v in value.items()}
    if hint is TierProfile:
        return TierProfile.from_dict(value)
    return hint(value)


@dataclass(frozen=True)
class Decision:
    desired_replicas: int
    current_replicas: int
    metrics_available: bool
    # One Step per stage that had something to say, in pipeline order.
    trail: tuple[Step, ...]
    # The tier that should serve (index into the tier names); None when there are no tiers.
    tier_index: int | None = None
    tier: TierDecision | None = None

    @property
    def scaled(self) -> bool:
        return self.desired_replicas != self.current_replicas

    @property
    def tier_changed(self) -> bool:
        return self.tier is not None and self.tier.changed

    @property
    def step(self) -> Step:
        """The deciding step."""
        found = deciding(list(self.trail))
        assert found is not None, "a decision always has a deciding step"
        return found

    @property
    def reason(self) -> Reason:
        """The deciding stage's reason: the AutoscalingActive condition's and the Event's."""
        return self.step.reason

    @property
    def message(self) -> str:
        """One human line: "scaled 2 -> 4: p95 180 ms > 100 ms target on 2 pods; step limit +2"."""
        if self.desired_replicas != self.current_replicas:
            verb = f"scaled {self.current_replicas} -> {self.desired_replicas}"
        else:
            verb = f"holding {self.current_replicas}"
        return f"{verb}: " + "; ".join(step.message for step in self.trail if step.binding)

    def steps(self, reason: Reason) -> list[Step]:
        return [step for step in self.trail if step.reason is reason]

    def tier_name(self, config: PolicyConfig) -> str | None:
        return None if self.tier_index is None else config.tier_names[self.tier_index]


@dataclass
class _Tick:
    """One period's inputs and what the stages worked out so far."""

    config: PolicyConfig
    observation: Observation
    replicas: Replicas
    state: PolicyState
    now_s: float
    trail: list[Step] = field(default_factory=list)

    @property
    def stale(self) -> bool:
        age = self.observation.newest_sample_age_s
        return age is not None and age > self.config.tuning.max_metrics_age_s

    @property
    def partial(self) -> bool:
        return self.observation.pods_reporting < self.replicas.ready

    @property
    def since_switch_s(self) -> float:
        switched = self.state.last_tier_switch_s
        return math.inf if switched is None else self.now_s - switched


def decide(
    config: PolicyConfig,
    observation: Observation,
    replicas: Replicas,
    state: PolicyState,
    now_s: float,
) -> tuple[Decision, PolicyState]:
    """One period's decision; returns it and the state to keep for the next period."""
    tick = _Tick(config, observation, replicas, state.copy(), now_s)
    if not observation.ok:
        why = observation.error or "no samples"
        return _held(tick, Reason.METRICS_UNAVAILABLE, f"metrics unavailable ({why})"), tick.state
    if config.tiers_enabled and not tick.stale:
        _measure_active_tier(tick)
    model = config.capacity(tick.state.tier_profiles)
    fast = _faster_tier(config, model)
    planned, quick = _signal(tick, fast is not None)
    recommendations = _recommend(tick, model, planned)
    if not recommendations:
        message = "metrics carry no signal for the configured targets"
        return _held(tick, Reason.NO_SIGNAL, message), tick.state
    winner = max(recommendations, key=lambda rec: rec.replicas)
    tick.trail.append(winner.step)
    recommended = _guard(tick, model, fast, planned, winner.replicas)
    floor_before = tick.state.urgent_floor
    if replicas.ready != tick.state.ready_seen:
        tick.state.ready_seen, tick.state.ready_changed_s = replicas.ready, now_s
    urgent = _overload(tick, model, fast, recommended)
    floor = _urgent_floor(tick, urgent)
    desired = _behave(tick, recommended, max(urgent, floor), floor, quick)
    uncapped, desired = desired, _cap(tick, desired)
    if not config.tiers_enabled:
        return _decision(tick, desired), tick.state
    pending = _capacity_pending(tick, desired, max(urgent, uncapped), recommended)
    tier = _tier(tick, model, pending)
    if _absorbed(tick, model, tier.index, desired, max(urgent, floor)):
        desired = config.behavior().clamp(replicas.current)
        tick.state.urgent_floor = floor_before  # nothing was asked for: no floor to wait for
    return _decision(tick, desired, tier), tick.state


def _held(tick: _Tick, reason: Reason, message: str) -> Decision:
    """Fail-static: no decision on these metrics; the replicas stay (within min/max)."""
    config, current = tick.config, tick.replicas.current
    tier = None
    if config.tiers_enabled:
        tier = TierDecision(
            tick.state.active_tier, Reason.TIER_HELD, "tier held: " + message, False
        )
    return Decision(
        desired_replicas=config.behavior().clamp(current),
        current_replicas=current,
        metrics_available=False,
        trail=(Step(Stage.GUARD, reason, message),),
        tier_index=tick.state.active_tier if config.tiers_enabled else None,
        tier=tier,
    )


def _decision(tick: _Tick, desired: int, tier: TierDecision | None = None) -> Decision:
    return Decision(
        desired_replicas=desired,
        current_replicas=tick.replicas.current,
        metrics_available=True,
        trail=tuple(tick.trail),
        tier_index=None if tier is None else tier.index,
        tier=tier,
    )


def _faster_tier(config: PolicyConfig, model: CapacityModel) -> int | None:
    """A lower tier that would absorb a burst (unmeasured, or measured faster than the first):
    with it, a scale-down may follow the load sooner, as long as it keeps a margin."""
    if not config.tiers_enabled or config.precision.pinned is not None:
        return None
    return model.faster_tier(floor_index(config.precision))


def _measure_active_tier(tick: _Tick) -> None:
    """Measure the active tier on a window whose scrapes all follow the switch to it.

    The first tier: the metrics window, once it has served a whole one, per Ready pod. A lower
    tier serves for about a cold start per burst, so it is measured on the short window as soon
    as that window follows the switch, and per pod that served the window: only while the Ready
    count is unchanged since the window began. A window that holds the switch dilutes the tier's
    QPS over seconds it did not serve and adds the seconds that drain the backlog built before.
    """
    config, state, observation = tick.config, tick.state, tick.observation
    if tick.replicas.ready <= 0:
        return
    window_s = config.scaling.metrics_window_s
    sample: Sample | None = None
    if state.active_tier == 0:
        if tick.since_switch_s >= window_s:
            sample = Sample(observation.versions.get(1), tick.replicas.ready)
    else:
        if tick.since_switch_s >= window_s:
            span, versions = float(window_s), observation.versions
        elif tick.since_switch_s >= config.tuning.recent_window_s:
            span, versions = config.tuning.recent_window_s, observation.versions_recent
        else:
            return
        # ready_seen is the last period's Ready count; a change seen only now happened within
        # the last period of the window at most.
        changed = state.ready_changed_s
        if changed is None or changed <= tick.now_s - span:
            sample = Sample(versions.get(state.active_tier + 1), state.ready_seen)
    name = config.tier_names[state.active_tier]
    state.tier_profiles = measure(
        state.tier_profiles, name, sample, config.scaling.target_latency_p95_ms
    )


def _signal(tick: _Tick, fast: bool) -> tuple[float | None, bool]:
    """Stage 1: the planned rate, and whether the quick scale-down applies this period."""
    config, state, observation = tick.config, tick.state, tick.observation
    qps, window_s = observation.qps, config.scaling.metrics_window_s
    ramp = None
    if qps is not None and not tick.stale:
        sampled_s = tick.now_s - (observation.newest_sample_age_s or 0.0)
        state.qps_history = signal.record(
            state.qps_history, qps, tick.now_s, sampled_s, tick.partial, window_s
        )
        ramp = signal.trend(state.qps_history, qps, window_s, config.tuning.trend_lookahead_s)
    quick = fast or _one_off_fall(tick)
    planned, step = signal.plan(
        qps,
        observation.qps_recent,
        config.scaling.tolerance,
        ramp,
        quick,
        config.tuning.trend_lookahead_s,
    )
    if step is not None:
        tick.trail.append(step)
    return planned, quick


def _one_off_fall(tick: _Tick) -> bool:
    """The load is below where it was a metrics window ago (the trend history's point from
    then), and has not come back within recurrence_s of a scale-down in the last
    RECURRENCE_MEMORY x recurrence_s. Off when the quick window is not the shorter one."""
    config, state, now_s = tick.config, tick.state, tick.now_s
    tuning = config.tuning
    if tuning.quick_scale_down_stabilization_s >= config.scaling.scale_down_stabilization_s:
        return False
    returned = state.load_returned_s
    if returned is not None and now_s - returned <= RECURRENCE_MEMORY * tuning.recurrence_s:
        return False
    window_s = config.scaling.metrics_window_s
    earlier = [q for t, q in state.qps_history if t <= now_s - window_s]
    qps = tick.observation.qps
    return qps is not None and bool(earlier) and qps < earlier[-1]


def _recommend(
    tick: _Tick, model: CapacityModel, planned: float | None
) -> list[recommend.Recommendation]:
    """Stage 2: the QPS and latency recommenders (overload comes after the guards)."""
    config, state = tick.config, tick.state
    stepping_up = (
        state.active_tier > 0
        and config.precision.pinned is None
        and tick.since_switch_s >= config.scaling.metrics_window_s
    )
    latency_input = recommend.LatencyInput(
        tick.observation,
        planned,
        tick.replicas.current,
        state.active_tier,
        stepping_up,
        config.tier_names,
    )
    found = [
        recommend.qps(config.targets(), planned, tick.replicas.current),
        recommend.latency(config.targets(), model, latency_input),
    ]
    return [rec for rec in found if rec is not None]


def _guard(
    tick: _Tick, model: CapacityModel, fast: int | None, planned: float | None, recommended: int
) -> int:
    """Stage 3: a scale-down keeps a margin while a faster tier serves as the burst absorber,
    and never happens on stale or partial metrics."""
    current, observation = tick.replicas.current, tick.observation
    if fast is not None and recommended < current and planned is not None:
        recommended = _tier_margin(tick, model, planned, recommended)
    if recommended < current and (tick.stale or tick.partial):
        recommended = current
        if tick.stale:
            age = observation.newest_sample_age_s or 0.0
            step = Step(
                Stage.GUARD,
                Reason.STALE_METRICS,
                f"no scale-down on stale metrics ({age:.0f} s old)",
                {"ageS": age},
            )
        else:
            pods, ready = observation.pods_reporting, tick.replicas.ready
            step = Step(
                Stage.GUARD,
                Reason.PARTIAL_METRICS,
                f"no scale-down on partial metrics ({pods}/{ready} pods)",
                {"podsReporting": pods, "ready": ready},
            )
        tick.trail.append(step)
    return recommended


def _tier_margin(tick: _Tick, model: CapacityModel, planned: float, recommended: int) -> int:
    """At the first tier: a scale-down only to a count that holds the planned QPS plus the
    tolerance at the latency target (else the QPS recommender releases a pod that the latency
    one asks back a period later). While a lower tier serves: the pods that bring the first tier
    back (the latency recommender's step-up count), or it asks them back a period later."""
    current, tolerance = tick.replicas.current, tick.config.scaling.tolerance
    if tick.state.active_tier > 0:
        step_up = model.step_up(planned)
        if step_up is None or step_up[0] <= recommended:
            return recommended
        step = recommend.headroom_step(model, planned, tick.state.active_tier, step_up)
        tick.trail.append(replace(step, stage=Stage.GUARD))
        return min(step_up[0], current)
    target, p95 = model.target_ms, tick.observation.latency_p95_ms
    if target is None or p95 is None or p95 > target:
        return recommended
    capacity = model.first_at_target(tick.observation, measure_now=True)
    if capacity is None:
        return recommended
    holds = current if capacity <= 0 else math.ceil(planned * (1 + tolerance) / capacity - 1e-9)
    if holds <= recommended:
        return recommended
    holds = min(holds, current)
    tick.trail.append(
        Step(
            Stage.GUARD,
            Reason.TIER_MARGIN,
            f"{holds} x {capacity:.0f}/replica hold it +{tolerance:.0%}"
            f" at the {target:g} ms target",
            {"replicas": holds, "capacity": capacity},
        )
    )
    return holds


def _overload(tick: _Tick, model: CapacityModel, fast: int | None, recommended: int) -> int:
    """The overload recommender: it wins over the others when it asks for more, and is then a
    floor while its pods start (kept out of the stabilization history: it would hold the peak
    for the whole down window). Only on a settled set of pods: the window's p95 must describe
    the pods that are Ready now, and pods still starting are capacity on its way."""
    config, state, replicas = tick.config, tick.state, tick.replicas
    settled = replicas.current <= replicas.ready and (
        state.ready_changed_s is None
        or tick.now_s - state.ready_changed_s >= config.scaling.metrics_window_s
    )
    first = (model.measured(0) or None) if fast is not None else None
    first_name = config.tier_names[0] if config.tier_names else None
    ask = recommend.overload(
        config.targets(), recommend.OverloadInput(tick.observation, settled, first, first_name)
    )
    if ask is None or ask.replicas <= recommended:
        return recommended
    # The overload replaces the winner, and what the guards did to it no longer matters.
    moot = (Stage.RECOMMEND, Stage.GUARD)
    tick.trail[:] = [s for s in tick.trail if s.stage not in moot] + [ask.step]
    state.urgent_floor = (tick.now_s, ask.replicas)
    return ask.replicas


def _urgent_floor(tick: _Tick, asked_now: int) -> int:
    """The pods the overload asked for are not cancelled while they start (that would flap): its
    request is a floor until they are Ready or a start time and a window have passed. When it
    holds more than this period asks for, it is what decides, and the trail says so."""
    state, tuning = tick.state, tick.config.tuning
    if state.urgent_floor is None:
        return 0
    asked_s, asked = state.urgent_floor
    expiry_s = asked_s + tuning.expected_pod_start_s + tick.config.scaling.metrics_window_s
    if tick.replicas.ready >= asked or tick.now_s >= expiry_s:
        state.urgent_floor = None
        return 0
    if asked > asked_now:
        tick.trail.append(
            Step(
                Stage.GUARD,
                Reason.OVERLOAD_FLOOR,
                f"{asked} pods asked for under overload are still starting"
                f" ({tick.replicas.ready} Ready)",
                {"replicas": asked, "ready": tick.replicas.ready},
            )
        )
    return asked


def _behave(tick: _Tick, recommended: int, asked: int, floor: int, quick: bool) -> int:
    """Stage 4: the recommendation history through HPA's behavior. The scale-down window is the
    quick one while `quick` (a one-off fall, or a faster tier to absorb a burst)."""
    config, state, now_s, current = tick.config, tick.state, tick.now_s, tick.replicas.current
    scaling, tuning = config.scaling, config.tuning
    window = max(scaling.scale_up_stabilization_s, scaling.scale_down_stabilization_s)
    state.recommendations = [(t, n) for t, n in state.recommendations if t > now_s - window]
    state.recommendations.append((now_s, recommended))
    history = state.recommendations + ([(now_s, floor)] if floor > recommended else [])
    down_window = scaling.scale_down_stabilization_s
    if quick:
        down_window = min(down_window, tuning.quick_scale_down_stabilization_s)
    desired, steps = apply_behavior(config.behavior(down_window), history, current, asked, now_s)
    if desired < current:
        if down_window < scaling.scale_down_stabilization_s:
            steps.insert(0, _quick_step(down_window))
        state.last_scale_down_s = now_s
    elif (
        desired > current
        and state.last_scale_down_s is not None
        and now_s - state.last_scale_down_s <= tuning.recurrence_s
    ):
        state.load_returned_s = now_s
    tick.trail.extend(steps)
    return desired


def _quick_step(window_s: float) -> Step:
    return Step(
        Stage.BEHAVIOR,
        Reason.QUICK_SCALE_DOWN,
        f"quick scale-down, {window_s:.0f} s window: a one-off fall, or a faster tier absorbs"
        " a burst that comes back",
        {"windowS": window_s},
    )


def _cap(tick: _Tick, desired: int) -> int:
    """Stage 5: free GPU capacity caps a scale-up."""
    current, free = tick.replicas.current, tick.replicas.max_additional
    if free is None or desired <= current + free:
        return desired
    capped = max(current + free, current)
    tick.trail.append(
        Step(
            Stage.CAPACITY,
            Reason.CAPACITY_CAPPED,
            f"capped at {capped} by free GPU capacity ({free})",
            {"replicas": capped, "free": free},
        )
    )
    return capped


def _capacity_pending(tick: _Tick, desired: int, wanted: int, recommended: int) -> bool:
    """Capacity is pending when no more can come (capped, at maxReplicas, no free GPU) or what
    is coming will not be Ready within a period (pods still starting)."""
    config, replicas = tick.config, tick.replicas
    max_replicas = config.scaling.max_replicas
    capped = wanted > desired or recommended > max_replicas
    no_room = desired >= max_replicas or (
        replicas.max_additional is not None and replicas.max_additional <= 0
    )
    starting = max(desired, replicas.current) > replicas.ready
    slow_start = config.tuning.expected_pod_start_s > config.scaling.period_s
    return capped or no_room or (starting and slow_start)


def _tier(tick: _Tick, model: CapacityModel, capacity_pending: bool) -> TierDecision:
    """Stage 6: the tier decision on the replica decision's outcome."""
    config, state, observation = tick.config, tick.state, tick.observation
    active = observation.versions.get(state.active_tier + 1)
    p95 = active.latency_p95_ms if active is not None else None
    tier = decide_tier(
        config.precision,
        model,
        TierInput(
            active_index=state.active_tier,
            latency_p95_ms=p95 or observation.latency_p95_ms,
            qps=observation.qps,
            target_latency_p95_ms=config.scaling.target_latency_p95_ms,
            tolerance=config.scaling.tolerance,
            ready_replicas=tick.replicas.ready,
            capacity_pending=capacity_pending,
            last_switch_s=state.last_tier_switch_s,
            now_s=tick.now_s,
            last_switch_down=state.last_tier_switch_down,
        ),
    )
    if tier.changed:
        state.last_tier_switch_down = tier.index > state.active_tier
        state.active_tier = tier.index
        state.last_tier_switch_s = tick.now_s
    # A note in the replicas' trail: the tier has its own reason (Decision.tier).
    tick.trail.append(Step(Stage.TIER, tier.reason, tier.message, binding=False))
    return tier


def _absorbed(tick: _Tick, model: CapacityModel, tier_index: int, desired: int, asked: int) -> bool:
    """spec.precision.absorbBursts: a scale-up to `asked` is held when the lower tier that serves
    (for less than a metrics window) or that this period stepped to, measured, holds on the
    Ready pods what the recommenders ask for at the first tier, measured too, with the
    step-up's headroom: `ready x capacity(tier) x (1 - hysteresis) >= asked x capacity(first)`.
    Not with a pinned tier: it never steps back up, so nothing would end the hold."""
    config, ready = tick.config, tick.replicas.ready
    precision = config.precision
    if not precision.absorb_bursts or tick.stale or precision.pinned is not None:
        return False
    if desired <= config.behavior().clamp(tick.replicas.current) or tier_index <= 0 or ready <= 0:
        return False
    if tick.since_switch_s >= config.scaling.metrics_window_s:
        return False
    lower, first = model.measured(tier_index), model.measured(0)
    if not lower or not first:
        return False
    holds = ready * lower * (1 - model.hysteresis)
    if holds < asked * first:
        return False
    names = config.tier_names
    tick.trail.append(
        Step(
            Stage.TIER,
            Reason.BURST_ABSORBED,
            f"{names[tier_index]} holds {holds:.0f} QPS on {ready} Ready pods"
            f" ({lower:.0f}/replica, {model.hysteresis:.0%} headroom) >= {asked}"
            f" x {first:.0f}/replica asked at {names[0]}",
            {"holds": holds, "asked": asked, "ready": ready},
        )
    )
    return True
