"""Pods that KWOK left behind: a kubelet's periodic status sync, for the local cluster.

KWOK plays a pod's Stages when the pod changes. A Stage whose write fails with an error KWOK
does not retry (anything but connection refused, a timeout, 429 or 503: an API server that
is restarting answers others) is dropped, and KWOK looks at the pod again only on its next
change. A real kubelet syncs each pod's status on a period instead, so nothing stays stale.

The pod runner does the same here: a kinfer pod that waits on KWOK (`awaiting_kwok`) with
the same resourceVersion for `stall_s` gets an annotation bump (`ANNOTATION_RESYNC`), a
change that makes KWOK match its Stages again; at most once per `stall_s` a pod.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kinfer_dev.localcluster.config import (
    ANNOTATION_SERVER_READY,
    ANNOTATION_SERVER_RESTARTS,
    ANNOTATION_SERVER_WAITING,
)

ANNOTATION_RESYNC = "kinfer.dev/kwok-resync"
DEFAULT_STALL_S = 10.0  # KWOK's pod Stages wait at most 1 s (kwok-stages.yaml)


def _ready_condition(status: dict[str, Any]) -> bool:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


def report_disagrees(pod: dict[str, Any]) -> bool:
    """The kinfer-pod-sync Stage's selector: the runner's annotations and the status differ."""
    annotations = pod["metadata"].get("annotations") or {}
    status = pod.get("status") or {}
    container = (status.get("containerStatuses") or [{}])[0]
    waiting = ((container.get("state") or {}).get("waiting") or {}).get("reason") or ""
    return (
        (annotations.get(ANNOTATION_SERVER_READY, "false") == "true") != _ready_condition(status)
        or annotations.get(ANNOTATION_SERVER_RESTARTS, "0") != str(container.get("restartCount", 0))
        or annotations.get(ANNOTATION_SERVER_WAITING, "") != waiting
    )


def awaiting_kwok(pod: dict[str, Any]) -> str | None:
    """What KWOK still owes this pod (None: nothing, it is settled or not KWOK's)."""
    meta, spec = pod["metadata"], pod.get("spec") or {}
    status = pod.get("status") or {}
    if not spec.get("nodeName"):
        return None  # the scheduler's, not KWOK's
    if meta.get("deletionTimestamp"):
        return None if meta.get("finalizers") else "its deletion"
    phase = status.get("phase")
    if phase == "Pending" and not status.get("podIP"):
        return "its start"
    if phase == "Running" and report_disagrees(pod):
        return "the pod runner's report in its status"
    return None


@dataclass
class Watchdog:
    stall_s: float = DEFAULT_STALL_S
    # pod key -> (resourceVersion, when first seen waiting with it)
    waiting: dict[str, tuple[str, float]] = field(default_factory=dict)

    def due(self, pods: dict[str, dict[str, Any]], now: float) -> list[tuple[str, str]]:
        """(key, what it waits on) of each pod to bump now; forgets pods that are settled."""
        due = []
        for key, pod in pods.items():
            owed = awaiting_kwok(pod)
            if owed is None:
                self.waiting.pop(key, None)
                continue
            version = pod["metadata"].get("resourceVersion", "")
            seen = self.waiting.get(key)
            if seen is None or seen[0] != version:
                self.waiting[key] = (version, now)
            elif now - seen[1] >= self.stall_s:
                due.append((key, owed))
                self.waiting[key] = (version, now)  # once a stall_s, until it changes
        for key in [k for k in self.waiting if k not in pods]:
            del self.waiting[key]
        return due
