"""One reconcile of an InferenceService: validate, render, apply, observe, report.

Data flows one way (spec -> plan -> apply -> status); every decision is made
by the pure modules, this one only moves their results to and from the API.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from kinfer.api import constants as c
from kinfer.api.model import InferenceService, checked
from kinfer.capacity import CapacityReport
from kinfer.config import RenderOptions
from kinfer.controller.capacity import observe_capacity
from kinfer.controller.kube import Kube
from kinfer.controller.pod_failures import FETCH_FAILED, SERVER_FAILING
from kinfer.controller.rejection import refused, rejection_message, rejections
from kinfer.controller.status import (
    Condition,
    invalid_spec_conditions,
    merge_conditions,
    now_rfc3339,
    rejected_spec_conditions,
    service_status,
    spec_not_applied,
)
from kinfer.render import render, scheduling

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str
    # What was done (core/v1 Event.action): e.g. Scale, SwitchTier; None: not said.
    action: str | None = None


@dataclass
class Outcome:
    """What a reconcile wants written back: a status patch (empty: none) and Events."""

    status_patch: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    isvc: InferenceService | None = None
    capacity: CapacityReport | None = None


def _status_patch(
    current: dict[str, Any], fields: dict[str, Any], conditions: list[Condition], generation: Any
) -> dict[str, Any]:
    """Only the status keys whose value changes (empty: nothing to write)."""
    patch = {key: value for key, value in fields.items() if current.get(key) != value}
    merged = merge_conditions(current.get("conditions"), conditions, generation, now_rfc3339())
    if merged != current.get("conditions"):
        patch["conditions"] = merged
    return patch


def _transition_events(current: dict[str, Any], conditions: list[Condition]) -> list[Event]:
    """An Event when a condition turns bad or recovers (not on every resync)."""
    before = {item.get("type"): item for item in current.get("conditions") or []}
    events = []
    for cond in conditions:
        old = before.get(cond.type)
        if (
            old is not None
            and old.get("status") == cond.status
            and old.get("reason") == cond.reason
        ):
            continue
        if cond.status == "False" and (
            cond.type != c.CONDITION_READY or cond.reason in (FETCH_FAILED, SERVER_FAILING)
        ):
            events.append(Event("Warning", cond.reason, cond.message))
        elif cond.type == c.CONDITION_READY and cond.status == "True":
            events.append(Event("Normal", "Ready", cond.message))
    return events


def reconcile(body: dict[str, Any], kube: Kube, options: RenderOptions) -> Outcome:
    """Bring the children in line with the spec and compute the status to report."""
    current = body.get("status") or {}
    generation = (body.get("metadata") or {}).get("generation")
    errors, parsed = checked(body)
    if errors or parsed is None:
        conditions = invalid_spec_conditions(errors)
        return Outcome(
            status_patch=_status_patch(
                current, {"observedGeneration": generation}, conditions, generation
            ),
            events=_transition_events(current, conditions),
        )
    isvc = parsed
    applied: dict[str, list[str]] = {}  # action -> "Kind name", in order
    for obj in render(isvc, options):
        try:
            action = kube.apply(obj)
        except ApiException as error:
            if not refused(error.status, error.body):
                raise  # the API server or the network: kopf retries
            # Invalid, not transient: retrying the same spec cannot succeed. Say so where the
            # user looks and wait for the next edit of the spec.
            message = rejection_message(obj, rejections(obj, error.body))
            conditions = rejected_spec_conditions(message)
            transition = _transition_events(current, conditions)
            if transition:
                log.warning("%s/%s: %s", isvc.namespace, isvc.name, message)
            return Outcome(
                status_patch=_status_patch(
                    current, {"observedGeneration": generation}, conditions, generation
                ),
                events=_applied_events(applied) + transition,
            )
        if action != "unchanged":
            name = obj["metadata"]["name"]
            log.info("%s %s %s/%s", action, obj["kind"], isvc.namespace, name)
            applied.setdefault(action, []).append(f"{obj['kind']} {name}")
    return _observe(body, isvc, kube, options, _applied_events(applied))


def _applied_events(applied: dict[str, list[str]]) -> list[Event]:
    """One Event per action, naming every child it touched ("created ConfigMap a, Service a,
    Deployment a"): a reconcile's Events are one or two writes, not one per child."""
    return [
        Event("Normal", action.capitalize(), f"{action} {', '.join(children)}")
        for action, children in applied.items()
    ]


def refresh_status(body: dict[str, Any], kube: Kube, options: RenderOptions) -> Outcome:
    """Status only (children changed): no apply, so a Deployment's change never loops. Nothing
    while this generation is not applied: the children still run an older spec. The caller is
    told of the change by the cache it reads the Deployment from, so the cache has it."""
    errors, isvc = checked(body)
    if errors or isvc is None or spec_not_applied(body):
        return Outcome()
    return _observe(body, isvc, kube, options, [])


def _observe(
    body: dict[str, Any],
    isvc: InferenceService,
    kube: Kube,
    options: RenderOptions,
    events: list[Event],
) -> Outcome:
    """The status the children show."""
    current = body.get("status") or {}
    deployment = kube.get("apps/v1", "Deployment", isvc.namespace, isvc.name)
    capacity = observe_capacity(kube, isvc)
    fields, conditions = service_status(
        isvc,
        deployment,
        capacity,
        cluster_domain=options.cluster_domain,
        node_selector=scheduling.node_selector(isvc),
        pods=kube.list("v1", "Pod", isvc.namespace, isvc.selector_string),
    )
    return Outcome(
        status_patch=_status_patch(current, fields, conditions, isvc.generation),
        events=events + _transition_events(current, conditions),
        isvc=isvc,
        capacity=capacity,
    )
