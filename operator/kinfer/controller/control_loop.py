"""The per-InferenceService control loop: metrics -> decision -> replicas and tier.

The scheduler (`kinfer.controller.scheduler`) runs `run_period` for a service when its
`plan` says something is due: each `scaling.periodSeconds` a decision on the metrics the
scheduler read for every service due at once (`kinfer.autoscale.policy.decide`), and every
TICK_S a check that the Ready pods serve the active tier, so a restarted pod converges
within seconds. Everything here blocks (tritonclient, the API client) and runs in a
thread, never on kopf's event loop.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from kinfer.api import constants as c
from kinfer.api.model import InferenceService, checked
from kinfer.autoscale.energy import energy_status, fold_energy, name_tiers
from kinfer.autoscale.metrics import RUNTIME_ONNXRUNTIME, Wanted, slo_bucket
from kinfer.autoscale.observation import Observation
from kinfer.autoscale.policy import Decision, PolicyConfig, PolicyState, Replicas, Tuning, decide
from kinfer.autoscale.reasons import Reason, Step
from kinfer.controller.capacity import observe_capacity
from kinfer.controller.kube import Kube
from kinfer.controller.reconcile import Event
from kinfer.controller.slo import SloLedger
from kinfer.controller.status import Condition, merge_conditions, now_rfc3339, spec_rejected
from kinfer.tiers import actuator

log = logging.getLogger(__name__)

# How often the loop wakes: tier convergence of new or restarted pods.
TICK_S = 3.0
# The Events' `action` (their `reason` is the deciding stage's).
ACTION_SCALE = "Scale"
ACTION_SWITCH_TIER = "SwitchTier"


class MetricsReader(Protocol):
    """kinfer.autoscale.metrics.PrometheusReader's shape."""

    def observe(
        self, namespace: str, name: str, runtime: str, window_s: int = 60
    ) -> Observation: ...


@dataclass
class PeriodResult:
    status_patch: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    replicas: int | None = None  # new spec.replicas to write, if any
    decision: Decision | None = None  # this tick's scaling decision, if one was due
    tier_switch: tuple[str, str] | None = None  # (from, to): the served tier changed


def tiers_switchable(isvc: InferenceService) -> bool:
    return len(isvc.spec.precision.tiers) > 1


def loop_needed(isvc: InferenceService) -> bool:
    return isvc.spec.scaling.enabled or tiers_switchable(isvc)


def _conditions_patch(
    body: dict[str, Any], conditions: list[Condition], generation: Any
) -> dict[str, Any]:
    current = (body.get("status") or {}).get("conditions")
    merged = merge_conditions(current, conditions, generation, now_rfc3339())
    return {} if merged == current else {"conditions": merged}


def _scaling_conditions(decision: Decision, observation: Observation) -> list[Condition]:
    if decision.metrics_available:
        metrics = Condition(
            c.CONDITION_METRICS_AVAILABLE, "True", "MetricsRead", "p95 and QPS read from Prometheus"
        )
    else:
        # The reader reports an empty answer as "no series ...": Prometheus is up.
        no_data = observation.error is None or observation.error.startswith("no series")
        reason = "NoSamples" if no_data else "PrometheusUnavailable"
        metrics = Condition(
            c.CONDITION_METRICS_AVAILABLE,
            "False",
            reason,
            f"{decision.message} (replicas held: fail-static)",
        )
    # The deciding stage's reason (docs/autoscaling.md, "Reasons").
    active = Condition(
        c.CONDITION_AUTOSCALING,
        "True" if decision.metrics_available else "False",
        decision.reason.value,
        decision.message,
    )
    return [metrics, active]


@dataclass
class LoopMemory:
    """What one InferenceService's loop keeps between ticks (in the daemon, not the API).

    The policy's history lives here, as HPA keeps its recommendations in memory;
    status gets a copy when it is written, so a restarted operator resumes from it.
    """

    last_decision_s: float = 0.0
    last_written_s: float = 0.0
    next_tier_s: float = 0.0
    state: PolicyState | None = None
    # The metrics the scheduler read for this period's decision (one query for every service
    # due), consumed by it; None: read alone.
    observation: Observation | None = None
    # What the scheduler planned for this tick, consumed by it; None: the tick plans itself.
    # A tick that runs late does what was due when it was planned, not a decision whose
    # metrics nobody read.
    planned: Plan | None = None
    # Actual time between the last two decisions minus the period (the scheduler's delay).
    lag_s: float | None = None
    # When the tier metrics last counted this service's seconds (monotonic; 0: never).
    tier_clock_s: float = 0.0
    # status.slo's counts over the last hour.
    slo: SloLedger = field(default_factory=SloLedger)
    # The last energy reading: joules per inference by tier name (empty: none).
    energy: dict[str, float] = field(default_factory=dict)

    # Whether the last decision held for want of usable metrics (fail-static).
    held_static: bool = False
    # The tier index the last tick served (None: none yet), for the Event of a switch that no
    # scaling decision made.
    served_tier: int | None = None

    # Whether the status should be reported again (a child's status changed since the last
    # report): set from the Deployment cache's thread, consumed by the tick.
    status_stale: bool = False

    # The last parse, by the resourceVersion it was made from.
    parsed_version: str | None = None
    parsed: InferenceService | None = None

    def isvc(self, body: dict[str, Any]) -> InferenceService | None:
        """The parsed spec (None when it is invalid: the reconcile reports what is wrong).

        The scheduler asks every wake for every service: an object with the same
        resourceVersion has the same content, so the last answer stands without even
        `checked`'s canonical JSON of the spec."""
        version = (body.get("metadata") or {}).get("resourceVersion")
        if version is None or version != self.parsed_version:
            self.parsed = checked(body)[1]
            self.parsed_version = version
        return self.parsed

    def fail_static(self, decision: Decision | None) -> bool:
        """Fail-static as of this tick: the new decision's, else the last one's."""
        if decision is not None:
            self.held_static = not decision.metrics_available
        return self.held_static


def _period(t_s: float, period_s: float) -> int:
    """Which period of the wall clock `t_s` falls in. Decisions are due once per period on this
    shared grid, so the services with one period are due together and share one metrics read
    (a decision per elapsed period each would drift apart and split the reads)."""
    return math.floor(t_s / period_s) if period_s > 0 else int(t_s)


@dataclass(frozen=True)
class Plan:
    """What a tick of one InferenceService has to do now."""

    # A scaling decision is due: the metrics it needs.
    wanted: Wanted | None
    # The Ready pods are due a tier check.
    tier: bool
    # With nothing due: how long nothing will be, unless the object or the loop's memory
    # changes (infinite: nothing until then). The scheduler does not ask again before.
    quiet_s: float = 0.0

    @property
    def any(self) -> bool:
        return self.wanted is not None or self.tier


def plan(body: dict[str, Any], memory: LoopMemory, now_s: float) -> Plan:
    """Which halves of a tick are due (nothing on an invalid or rejected spec), and with
    nothing due, until when: the next period's start, the next tier check."""
    isvc = memory.isvc(body)
    if isvc is None or spec_rejected(body):
        return Plan(None, False, math.inf)
    wanted = None
    quiet_s = math.inf
    scaling = isvc.spec.scaling
    if scaling.enabled:
        current = _period(now_s, scaling.period_s)
        if current > _period(memory.last_decision_s, scaling.period_s):
            wanted = Wanted(
                isvc.namespace,
                isvc.name,
                isvc.spec.runtime,
                scaling.metrics_window_s,
                scaling.period_s,
            )
        step_s = scaling.period_s if scaling.period_s > 0 else 1.0
        quiet_s = (current + 1) * step_s - now_s
    tier = tiers_switchable(isvc)
    if tier:
        quiet_s = min(quiet_s, memory.next_tier_s - now_s)
    return Plan(wanted, tier and now_s >= memory.next_tier_s, max(quiet_s, 0.0))


# Status is refreshed at most this often when only the figures (QPS, p95) move, and with them
# the conditions' messages that quote them; a new decision, tier, or condition status or reason
# is written at once. Nothing moves: no write.
STATUS_REFRESH_S = 30.0
DEFAULT_POD_START_S = 60.0


def observed_pod_start_s(pods: list[dict[str, Any]]) -> float:
    """How long this InferenceService's pods took from creation to Ready (the slowest),
    which is how long new capacity takes to arrive: the tier policy's horizon."""
    durations = []
    for pod in pods:
        created = (pod.get("metadata") or {}).get("creationTimestamp")
        ready = next(
            (
                cond.get("lastTransitionTime")
                for cond in (pod.get("status") or {}).get("conditions") or []
                if cond.get("type") == "Ready" and cond.get("status") == "True"
            ),
            None,
        )
        if created and ready:
            start = datetime.fromisoformat(str(created).replace("Z", "+00:00"))
            end = datetime.fromisoformat(str(ready).replace("Z", "+00:00"))
            durations.append((end - start).total_seconds())
    return min(max(durations), 600.0) if durations else DEFAULT_POD_START_S


def _step_record(step: Step) -> dict[str, Any]:
    """A trail step as status shows it: stage, reason, figures (rounded for humans)."""
    figures = {k: round(v, 2) if isinstance(v, float) else v for k, v in step.figures.items()}
    return {"stage": step.stage.value, "reason": step.reason.value, "figures": figures}


def as_stored(value: Any) -> Any:
    """What a merge patch leaves in the object: a null removes its key (RFC 7386), so the
    record read back from the API has no `error: null`. Compare records in this form."""
    if isinstance(value, dict):
        return {k: as_stored(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [as_stored(item) for item in value]
    return value


def _figures(record: dict[str, Any] | None) -> dict[str, Any]:
    """A status record as stored, without what changes every period by itself: the decision's
    time, the policy's history, and the age of the newest sample (it cycles with every scrape).
    An idle service's record then stays the same, and is not rewritten."""
    figures = {
        k: v for k, v in as_stored(record or {}).items() if k not in ("lastDecisionTime", "state")
    }
    metrics = figures.get("lastMetrics")
    if isinstance(metrics, dict):
        figures["lastMetrics"] = {k: v for k, v in metrics.items() if k != "newestSampleAgeS"}
    return figures


def _transitions(patch: dict[str, Any], current: list[dict[str, Any]] | None) -> bool:
    """Whether a conditions patch changes more than messages: a status, a reason, or the
    generation observed."""

    def states(conditions: list[dict[str, Any]] | None) -> set[tuple[Any, ...]]:
        keys = ("type", "status", "reason", "observedGeneration")
        return {tuple(item.get(key) for key in keys) for item in conditions or []}

    return "conditions" in patch and states(patch["conditions"]) != states(current)


def scaling_period(
    body: dict[str, Any],
    isvc: InferenceService,
    kube: Kube,
    reader: MetricsReader | None,
    memory: LoopMemory,
    now_s: float,
) -> tuple[PeriodResult, int | None]:
    """One autoscaling decision; returns what to write and the tier index to serve."""
    status = body.get("status") or {}
    autoscaling = status.get("autoscaling") or {}
    if memory.state is None:
        memory.state = PolicyState.from_dict(autoscaling.get("state"))
    before = memory.state
    pods = kube.peek_list("v1", "Pod", isvc.namespace, label_selector=isvc.selector_string)
    tuning = Tuning(expected_pod_start_s=observed_pod_start_s(pods))
    config = PolicyConfig(isvc.spec.scaling, isvc.spec.precision, tuning)
    observation, memory.observation = memory.observation, None
    if observation is None and reader is None:
        observation = Observation(error="no Prometheus configured (--prometheus-url)")
    elif observation is None:
        assert reader is not None
        observation = reader.observe(
            isvc.namespace, isvc.name, isvc.spec.runtime, isvc.spec.scaling.metrics_window_s
        )
    capacity = observe_capacity(kube, isvc)
    replicas = Replicas(
        current=isvc.spec.replicas,
        ready=int(status.get("readyReplicas") or 0),
        max_additional=None if capacity.resource is None else capacity.placeable_replicas,
    )
    decision, memory.state = decide(config, observation, replicas, before, now_s)
    result = PeriodResult(decision=decision)
    record: dict[str, Any] = {
        "lastMetrics": observation.to_dict(),
        "desiredReplicas": decision.desired_replicas,
        "reason": decision.reason.value,
        "message": decision.message,
        "trail": [_step_record(step) for step in decision.trail],
        "lastDecisionTime": now_rfc3339(),
        "lastScaleTime": autoscaling.get("lastScaleTime"),
        "lastScale": autoscaling.get("lastScale"),
        "state": memory.state.to_dict(),
    }
    if decision.desired_replicas != isvc.spec.replicas:
        result.replicas = decision.desired_replicas
        record["lastScaleTime"] = record["lastDecisionTime"]
        # The last change and its whole trail, kept until the next one.
        record["lastScale"] = {
            "from": isvc.spec.replicas,
            "to": decision.desired_replicas,
            "reason": decision.reason.value,
            "trail": record["trail"],
        }
        result.events.append(
            Event("Normal", decision.reason.value, decision.message, action=ACTION_SCALE)
        )
    conditions = _conditions_patch(
        body, _scaling_conditions(decision, observation), isvc.generation
    )
    decided = (
        result.replicas is not None
        or decision.tier_changed
        or _transitions(conditions, status.get("conditions"))
        or record["desiredReplicas"] != autoscaling.get("desiredReplicas")
    )
    # A condition's message carries the figures ("holding 3: QPS 142.7 ..."): it moves with them.
    moved = bool(conditions) or _figures(record) != _figures(autoscaling)
    if decided or (moved and now_s - memory.last_written_s >= STATUS_REFRESH_S):
        result.status_patch.update(conditions)
        result.status_patch["autoscaling"] = record
        memory.last_written_s = now_s
    tier_index = decision.tier_index if tiers_switchable(isvc) else None
    if decision.tier is not None and decision.tier.changed:
        # TierDegraded, TierRestored, TierPinned or TierFloor: "tier fp32 -> fp16: p95 ...".
        tier = decision.tier
        result.events.append(
            Event("Normal", tier.reason.value, tier.message, action=ACTION_SWITCH_TIER)
        )
    return result, tier_index


def desired_tier_index(isvc: InferenceService, memory: LoopMemory, body: dict[str, Any]) -> int:
    """The tier to serve when no decision was made this tick: pinned, else the policy's."""
    precision = isvc.spec.precision
    if precision.pinned:
        return precision.index_of(precision.pinned)
    state = memory.state
    if state is None:
        state = PolicyState.from_dict(
            ((body.get("status") or {}).get("autoscaling") or {}).get("state")
        )
    index = state.active_tier
    return index if 0 <= index < len(precision.tiers) else 0


def unplanned_switch_events(
    isvc: InferenceService, served: int | None, tier_index: int
) -> list[Event]:
    """The SwitchTier Event of a switch no scaling decision made: a pin or unpin of a service
    that does not autoscale (a decision posts its own). `served`: the tier this loop served
    last (None: none yet, as after a restart). The loop's own memory, not status: the cached
    copy of status may not have this loop's last write yet."""
    names = isvc.spec.precision.tier_names()
    if served is None or served == tier_index or not 0 <= served < len(names):
        return []
    was, now = names[served], names[tier_index]
    pinned = isvc.spec.precision.pinned
    reason, why = (
        (Reason.TIER_PINNED, f"tier pinned to {pinned}")
        if pinned
        else (Reason.TIER_RESTORED, "tier unpinned")
    )
    message = f"tier {was} -> {now}: {why}"
    return [Event("Normal", reason.value, message, action=ACTION_SWITCH_TIER)]


def tier_period(
    body: dict[str, Any], isvc: InferenceService, kube: Kube, tier_index: int
) -> dict[str, Any]:
    """Bring Ready pods to the tier; returns the status keys that change."""
    names = isvc.spec.precision.tier_names()
    pods = kube.list("v1", "Pod", isvc.namespace, label_selector=isvc.selector_string)
    results = actuator.converge(pods, isvc.spec.model.name, tier_index + 1)
    by_version = {index + 1: name for index, name in enumerate(names)}
    pod_tiers = {
        r.pod: (by_version.get(r.version, f"version {r.version}") if r.version else "unknown")
        for r in results
    }
    errors = {r.pod: r.error for r in results if r.error}
    converged = bool(results) and all(r.version == tier_index + 1 for r in results)
    status = body.get("status") or {}
    previous = status.get("tiers") or {}
    patch: dict[str, Any] = {}
    tiers_status = {"desired": names[tier_index], "pods": pod_tiers}
    if errors:
        tiers_status["errors"] = errors
    if {k: previous.get(k) for k in tiers_status} != tiers_status or (
        "errors" in previous and not errors
    ):
        patch["tiers"] = {**tiers_status, "errors": errors or None}
    if converged and status.get("activeTier") != names[tier_index]:
        patch["activeTier"] = names[tier_index]
    if results:
        done = sum(1 for r in results if r.version == tier_index + 1)
        condition = Condition(
            c.CONDITION_TIER_CONVERGED,
            "True" if converged else "False",
            "Converged" if converged else "Converging",
            f"{done}/{len(results)} ready pods serve tier {names[tier_index]}",
        )
        patch.update(_conditions_patch(body, [condition], isvc.generation))
    return patch


def run_period(
    body: dict[str, Any], kube: Kube, reader: MetricsReader | None, memory: LoopMemory
) -> PeriodResult:
    """One tick: a scaling decision when a period has passed, the tiers every TICK_S."""
    now_s = time.time()
    planned, memory.planned = memory.planned, None
    due = planned if planned is not None else plan(body, memory, now_s)
    isvc = memory.isvc(body)
    if isvc is None or not due.any:
        return PeriodResult()
    result = PeriodResult()
    tier_index: int | None = None
    if due.wanted is not None:
        result, tier_index = scaling_period(body, isvc, kube, reader, memory, now_s)
        if memory.last_decision_s:
            period_s = isvc.spec.scaling.period_s
            memory.lag_s = max(now_s - memory.last_decision_s - period_s, 0.0)
        memory.last_decision_s = now_s
    if tiers_switchable(isvc) and (due.tier or tier_index is not None):
        memory.next_tier_s = now_s + TICK_S
        if isvc.spec.precision.pinned or tier_index is None:
            tier_index = desired_tier_index(isvc, memory, body)
        served, memory.served_tier = memory.served_tier, tier_index
        if not any(event.action == ACTION_SWITCH_TIER for event in result.events):
            result.events.extend(unplanned_switch_events(isvc, served, tier_index))
        # Conditions from both halves merge onto the same list.
        merged_body = {**body, "status": {**(body.get("status") or {}), **result.status_patch}}
        result.status_patch.update(tier_period(merged_body, isvc, kube, tier_index))
    account(body, isvc, result, memory, reader, now_s)
    return result


def account(
    body: dict[str, Any],
    isvc: InferenceService,
    result: PeriodResult,
    memory: LoopMemory,
    reader: Any,
    now_s: float,
) -> None:
    """The tick into status.slo's ledger; the summary rides on a status write this tick makes
    anyway (never a write of its own)."""
    before = (body.get("status") or {}).get("activeTier")
    after = result.status_patch.get("activeTier", before)
    if before is not None and after is not None and after != before:
        result.tier_switch = (before, after)
    names = isvc.spec.precision.tier_names()
    memory.slo.observe(
        now_s,
        scaled_out=result.replicas is not None and result.replicas > isvc.spec.replicas,
        tier_switched=result.tier_switch is not None,
        on_lower_tier=len(names) > 1 and after is not None and after != names[0],
    )
    if result.status_patch:
        within = _within_target(reader, isvc)
        result.status_patch["slo"] = memory.slo.summary(now_s, within, now_rfc3339())


def add_energy(
    isvc: InferenceService, result: PeriodResult, memory: LoopMemory, energy_reader: Any
) -> None:
    """Energy per inference of a GPU service (the energy reader: one query per minute for
    every service) into `memory.energy`, its tier profiles, and status.energy on a status
    write this tick makes anyway."""
    if energy_reader is None or isvc.spec.resources.gpu_resource_name is None:
        return
    reading = energy_reader.read(isvc.namespace, isvc.name)
    if reading is None:
        return
    memory.energy = name_tiers(reading.joules_per_inference, isvc.spec.precision.tier_names())
    if memory.state is not None:
        memory.state.tier_profiles = fold_energy(memory.state.tier_profiles, memory.energy)
        record = result.status_patch.get("autoscaling")
        if record is not None:  # written this tick: with the figures folded in
            record["state"] = memory.state.to_dict()
    if result.status_patch:
        result.status_patch["energy"] = energy_status(
            memory.energy, reading.window_s, reading.source, datetime.now(UTC)
        )


def _within_target(reader: Any, isvc: InferenceService) -> float | None:
    """The share of requests within the latency target over the SLO window (onnxruntime: the
    server's histogram; None for triton, without a target, or without a reader)."""
    target_ms = isvc.spec.scaling.target_latency_p95_ms
    within = getattr(reader, "within_target", None)
    if within is None or target_ms is None or isvc.spec.runtime != RUNTIME_ONNXRUNTIME:
        return None
    return within(isvc.namespace, isvc.name, slo_bucket(target_ms))
