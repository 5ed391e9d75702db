"""Tier actuation: bring every Ready pod of an InferenceService to the active tier.

Each pod is checked and, when it serves another version, switched through the
data plane's one switch call (`kinfer.runtime.switch.select_version`, gRPC).
Convergence is per pod and level-based: a pod that starts, restarts or missed
a switch is found serving the wrong version on the next pass and switched.
Blocking (tritonclient); the controller runs it in a thread.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kinfer.api import constants as c
from kinfer.runtime.switch import active_version, select_version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PodTier:
    pod: str
    version: int | None  # the version it serves after this pass (None: unknown)
    switched: bool = False
    error: str | None = None


def ready_pods(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Running pods whose Ready condition is True and that have an IP."""
    ready = []
    for pod in pods:
        status = pod.get("status") or {}
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        conditions = status.get("conditions") or []
        if status.get("podIP") and any(
            cond.get("type") == "Ready" and cond.get("status") == "True" for cond in conditions
        ):
            ready.append(pod)
    return ready


def _converge_one(pod: dict[str, Any], model: str, version: int, timeout_s: float) -> PodTier:
    name = pod["metadata"]["name"]
    address = f"{pod['status']['podIP']}:{c.GRPC_PORT}"
    try:
        serving = active_version(address, model, timeout_s=timeout_s)
        if serving == version:
            return PodTier(name, serving)
        select_version(address, model, version, timeout_s=timeout_s)
        log.info("pod %s: switched %s from version %s to %s", name, model, serving, version)
        return PodTier(name, version, switched=True)
    except Exception as error:
        log.warning("pod %s: cannot switch %s to version %s: %s", name, model, version, error)
        return PodTier(name, None, error=str(error).splitlines()[0][:200])


def converge(
    pods: list[dict[str, Any]], model: str, version: int, timeout_s: float = 30.0
) -> list[PodTier]:
    """Switch every Ready pod to `version` (concurrently); one result a pod."""
    targets = ready_pods(pods)
    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=min(len(targets), 8)) as pool:
        return list(pool.map(lambda pod: _converge_one(pod, model, version, timeout_s), targets))
