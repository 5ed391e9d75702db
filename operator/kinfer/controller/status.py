"""InferenceService status from what the cluster shows (pure).

Conditions follow the Kubernetes API conventions: a condition's
lastTransitionTime moves only when its status does, so a resync of an
unchanged object produces an identical status and no API write.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kinfer.api import constants as c
from kinfer.api.model import InferenceService
from kinfer.api.validation import FieldError
from kinfer.capacity import CapacityReport
from kinfer.controller.pod_failures import pod_failure
from kinfer.render.deployment import effective_replicas
from kinfer.render.service import grpc_address, service_url


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    previous: list[dict[str, Any]] | None,
    conditions: list[Condition],
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """New condition list; keeps lastTransitionTime where a status did not change, and
    keeps conditions owned by other loops (autoscaler, tiers) that are not in `conditions`."""
    by_type = {item.get("type"): item for item in previous or []}
    updated = {cond.type for cond in conditions}
    result = [item for item in previous or [] if item.get("type") not in updated]
    for cond in conditions:
        old = by_type.get(cond.type)
        changed = old is None or old.get("status") != cond.status
        entry: dict[str, Any] = {
            "type": cond.type,
            "status": cond.status,
            "reason": cond.reason,
            "message": cond.message,
            "lastTransitionTime": now if changed else old.get("lastTransitionTime", now),
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        result.append(entry)
    order = {name: i for i, name in enumerate(_CONDITION_ORDER)}
    return sorted(result, key=lambda item: order.get(item.get("type"), len(order)))


# Which loop owns which conditions: each writes only its own, merged into the live list
# (see Kube.patch_isvc_status), so neither puts back what the other replaced meanwhile.
RECONCILE_CONDITIONS = frozenset(
    {c.CONDITION_READY, c.CONDITION_SPEC_VALID, c.CONDITION_GPU_CAPACITY}
)
CONTROL_LOOP_CONDITIONS = frozenset(
    {c.CONDITION_METRICS_AVAILABLE, c.CONDITION_AUTOSCALING, c.CONDITION_TIER_CONVERGED}
)


def merge_owned(
    live: list[dict[str, Any]] | None, ours: list[dict[str, Any]], owned: frozenset[str]
) -> list[dict[str, Any]]:
    """The live conditions with the `owned` types taken from `ours` (in the usual order)."""
    merged = [item for item in live or [] if item.get("type") not in owned]
    merged += [item for item in ours if item.get("type") in owned]
    order = {name: i for i, name in enumerate(_CONDITION_ORDER)}
    return sorted(merged, key=lambda item: order.get(item.get("type"), len(order)))


_CONDITION_ORDER = (
    c.CONDITION_READY,
    c.CONDITION_SPEC_VALID,
    c.CONDITION_GPU_CAPACITY,
    c.CONDITION_METRICS_AVAILABLE,
    c.CONDITION_AUTOSCALING,
    c.CONDITION_TIER_CONVERGED,
)


REJECTED_REASON = "RejectedByAPIServer"


def invalid_spec_conditions(errors: list[FieldError]) -> list[Condition]:
    message = "; ".join(str(error) for error in errors)
    return [
        Condition(c.CONDITION_SPEC_VALID, "False", "InvalidSpec", message),
        Condition(c.CONDITION_READY, "False", "InvalidSpec", message),
    ]


def rejected_spec_conditions(message: str) -> list[Condition]:
    """The spec passed validation but the API server refused a child rendered from it."""
    return [
        Condition(c.CONDITION_SPEC_VALID, "False", REJECTED_REASON, message),
        Condition(c.CONDITION_READY, "False", REJECTED_REASON, message),
    ]


def spec_not_applied(body: dict[str, Any]) -> bool:
    """True while the object's current generation has not been applied: not reconciled yet
    (status.observedGeneration behind), or refused (SpecValid False for this generation).
    Status from the children then describes an older spec, so it must not be reported as
    this generation's."""
    generation = (body.get("metadata") or {}).get("generation")
    status = body.get("status") or {}
    if generation is None or status.get("observedGeneration") != generation:
        return True
    return spec_rejected(body)


def spec_rejected(body: dict[str, Any]) -> bool:
    """True when SpecValid is False for the object's current generation."""
    generation = (body.get("metadata") or {}).get("generation")
    return any(
        item.get("type") == c.CONDITION_SPEC_VALID
        and item.get("status") == "False"
        and item.get("observedGeneration") == generation
        for item in (body.get("status") or {}).get("conditions") or []
    )


def _deployment_counts(deployment: dict[str, Any] | None) -> tuple[int, int, int, bool]:
    """(replicas, ready, updated, rolled out) of a Deployment's status."""
    if deployment is None:
        return 0, 0, 0, False
    status = deployment.get("status") or {}
    meta = deployment.get("metadata") or {}
    spec_replicas = (deployment.get("spec") or {}).get("replicas", 1)
    replicas = status.get("replicas", 0)
    ready = status.get("readyReplicas", 0)
    updated = status.get("updatedReplicas", 0)
    rolled_out = (
        status.get("observedGeneration", 0) >= meta.get("generation", 0)
        and updated >= spec_replicas
        and replicas <= spec_replicas
    )
    return replicas, ready, updated, rolled_out


def service_status(
    isvc: InferenceService,
    deployment: dict[str, Any] | None,
    capacity: CapacityReport,
    *,
    cluster_domain: str,
    node_selector: dict[str, str],
    pods: list[dict[str, Any]] | None = None,
) -> tuple[dict[str, Any], list[Condition]]:
    """Status fields (besides conditions) and the conditions this loop owns."""
    desired, clamp_note = effective_replicas(isvc)
    replicas, ready, updated, rolled_out = _deployment_counts(deployment)
    tier = isvc.spec.served_tier
    fields: dict[str, Any] = {
        "observedGeneration": isvc.generation,
        "replicas": replicas,
        "readyReplicas": ready,
        "updatedReplicas": updated,
        "selector": isvc.selector_string,
        "url": service_url(isvc, cluster_domain),
        "grpcAddress": grpc_address(isvc, cluster_domain),
        "modelName": isvc.spec.model.name,
    }
    # One writer per field: with switchable tiers, what serves is the control loop's to say
    # (controller.control_loop.tier_period, once the Ready pods serve it); with one tier,
    # that tier is all that can serve.
    if tier is not None and len(isvc.spec.precision.tiers) == 1:
        fields["activeTier"] = tier.name

    conditions = [Condition(c.CONDITION_SPEC_VALID, "True", "Valid", "spec is valid")]
    if capacity.resource is None:
        conditions.append(
            Condition(c.CONDITION_GPU_CAPACITY, "True", "NoGPURequested", "no GPU requested")
        )
    elif capacity.sufficient:
        conditions.append(
            Condition(
                c.CONDITION_GPU_CAPACITY, "True", "Sufficient", capacity.message(node_selector)
            )
        )
    else:
        conditions.append(
            Condition(
                c.CONDITION_GPU_CAPACITY,
                "False",
                "InsufficientGPUs",
                capacity.message(node_selector),
            )
        )

    note = f" ({clamp_note})" if clamp_note else ""
    if desired == 0:
        ready_cond = Condition(c.CONDITION_READY, "False", "ScaledToZero", "spec.replicas is 0")
    elif ready >= desired and rolled_out:
        ready_cond = Condition(
            c.CONDITION_READY, "True", "Available", f"{ready}/{desired} replicas ready{note}"
        )
    elif not capacity.sufficient and ready < desired:
        ready_cond = Condition(
            c.CONDITION_READY,
            "False",
            "InsufficientGPUs",
            f"{ready}/{desired} replicas ready{note}; {capacity.message(node_selector)}",
        )
    elif deployment is None:
        ready_cond = Condition(c.CONDITION_READY, "False", "Creating", "creating the Deployment")
    elif (failure := pod_failure(pods or [])) is not None:
        ready_cond = Condition(
            c.CONDITION_READY,
            "False",
            failure.reason,
            f"{ready}/{desired} replicas ready{note}; {failure.message}",
        )
    else:
        ready_cond = Condition(
            c.CONDITION_READY,
            "False",
            "Progressing",
            f"{ready}/{desired} replicas ready, {updated} updated{note}",
        )
    conditions.insert(0, ready_cond)
    return fields, conditions
