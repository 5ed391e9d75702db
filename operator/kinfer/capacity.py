"""GPU capacity: how many more replicas of an InferenceService the cluster can place.

A pure function of node and pod objects (as the API returns them), so the
operator can say "not enough GPUs" in a condition instead of leaving pods
Pending without a word, and the autoscaler can cap a scale-up at what fits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIXES = {
    "": 1,
    "m": Decimal("0.001"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def parse_quantity(value: Any) -> Decimal:
    """A Kubernetes quantity ("2", "500m", "4Gi") as a number; 0 when unparsable."""
    match = _QUANTITY.match(str(value).strip())
    if not match or match.group(2) not in _SUFFIXES:
        return Decimal(0)
    return Decimal(match.group(1)) * Decimal(_SUFFIXES[match.group(2)])


@dataclass(frozen=True)
class CapacityReport:
    resource: str | None
    per_replica: int
    matching_nodes: int
    free_units: int
    placeable_replicas: int
    """More replicas of this InferenceService that fit now (on top of its scheduled pods)."""
    scheduled_replicas: int
    wanted_replicas: int

    @property
    def sufficient(self) -> bool:
        return self.resource is None or self.scheduled_replicas + self.placeable_replicas >= (
            self.wanted_replicas
        )

    def message(self, node_selector: dict[str, str]) -> str:
        if self.resource is None:
            return "no GPU requested"
        labels = ", ".join(f"{k}={v}" for k, v in sorted(node_selector.items()))
        where = f"nodes with {labels}" if labels else "any node"
        # Room counts this service's own running replicas too: they hold their GPUs.
        fits = self.scheduled_replicas + self.placeable_replicas
        verdict = "enough" if self.sufficient else "not enough"
        return (
            f"{verdict} GPUs: {_count(self.wanted_replicas, 'replica')} x {self.per_replica} "
            f"{self.resource} on {where}; {_count(self.matching_nodes, 'matching node')} with "
            f"{self.free_units} free, room for {_count(fits, 'replica')} (running ones included)"
        )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _tolerates(taint: dict[str, Any], tolerations: list[dict[str, Any]]) -> bool:
    if taint.get("effect") not in ("NoSchedule", "NoExecute"):
        return True
    for toleration in tolerations:
        if toleration.get("effect") not in (None, "", taint.get("effect")):
            continue
        if toleration.get("operator") == "Exists":
            if toleration.get("key") in (None, "", taint.get("key")):
                return True
        elif toleration.get("key") == taint.get("key") and toleration.get("value") == taint.get(
            "value"
        ):
            return True
    return False


def node_is_eligible(
    node: dict[str, Any], node_selector: dict[str, str], tolerations: list[dict[str, Any]]
) -> bool:
    spec = node.get("spec") or {}
    if spec.get("unschedulable"):
        return False
    labels = (node.get("metadata") or {}).get("labels") or {}
    if any(labels.get(key) != value for key, value in node_selector.items()):
        return False
    conditions = (node.get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    if ready is not None and ready.get("status") != "True":
        return False
    return all(_tolerates(taint, tolerations) for taint in spec.get("taints") or [])


def _pod_request(pod: dict[str, Any], resource: str) -> Decimal:
    total = Decimal(0)
    for container in (pod.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        amount = (resources.get("limits") or {}).get(resource) or (
            resources.get("requests") or {}
        ).get(resource)
        if amount is not None:
            total += parse_quantity(amount)
    return total


def _is_active(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def gpu_capacity(
    *,
    resource: str | None,
    per_replica: int,
    node_selector: dict[str, str],
    tolerations: list[dict[str, Any]],
    nodes: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    own_pod_labels: dict[str, str],
    wanted_replicas: int,
) -> CapacityReport:
    """How many replicas needing `per_replica` x `resource` fit on eligible nodes.

    Free units per node are allocatable minus the requests of active pods bound
    to it; a replica needs all its units on one node.
    """

    def is_own(pod: dict[str, Any]) -> bool:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        return all(labels.get(k) == v for k, v in own_pod_labels.items())

    active = [pod for pod in pods if _is_active(pod)]
    scheduled_own = sum(
        1 for pod in active if is_own(pod) and (pod.get("spec") or {}).get("nodeName")
    )
    if resource is None or per_replica <= 0:
        return CapacityReport(None, 0, 0, 0, 0, scheduled_own, wanted_replicas)
    used: dict[str, Decimal] = {}
    for pod in active:
        node_name = (pod.get("spec") or {}).get("nodeName")
        if node_name:
            used[node_name] = used.get(node_name, Decimal(0)) + _pod_request(pod, resource)
    matching = free_units = placeable = 0
    for node in nodes:
        if not node_is_eligible(node, node_selector, tolerations):
            continue
        allocatable = parse_quantity(
            ((node.get("status") or {}).get("allocatable") or {}).get(resource, 0)
        )
        if allocatable <= 0:
            continue
        matching += 1
        free = max(int(allocatable - used.get(node["metadata"]["name"], Decimal(0))), 0)
        free_units += free
        placeable += free // per_replica
    return CapacityReport(
        resource=resource,
        per_replica=per_replica,
        matching_nodes=matching,
        free_units=free_units,
        placeable_replicas=placeable,
        scheduled_replicas=scheduled_own,
        wanted_replicas=wanted_replicas,
    )


# Resources a pod may request that are not extended ones (GPUs are: nvidia.com/gpu, ...).
STANDARD_RESOURCES = frozenset({"cpu", "memory", "ephemeral-storage", "storage"})


def requests_extended_resource(pod: dict[str, Any]) -> bool:
    """True when any container asks for an extended resource (a GPU, a MIG slice, ...): the
    pods GPU capacity is computed from."""
    spec = pod.get("spec") or {}
    for container in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        resources = container.get("resources") or {}
        for amounts in (resources.get("requests") or {}, resources.get("limits") or {}):
            if any(name not in STANDARD_RESOURCES for name in amounts):
                return True
    return False
