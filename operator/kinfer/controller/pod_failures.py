"""Why an InferenceService's pods are not coming up, from their container statuses (pure).

Without it a model that cannot be fetched or a server that keeps crashing shows only as
`Progressing` on the InferenceService, and the cause is one `kubectl describe pod` away. The
kubelet already says it in the pod's status; this finds the first such statement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Container waiting reasons that do not clear by themselves: something must change.
STUCK_WAITING_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
MAX_MESSAGE_CHARS = 400
# Of a terminated container's message (the kubelet's tail of its log), the end is kept.
MAX_DETAIL_CHARS = 300

FETCH_FAILED = "ModelFetchFailed"
SERVER_FAILING = "ServerFailing"


@dataclass(frozen=True)
class PodFailure:
    reason: str  # FETCH_FAILED or SERVER_FAILING
    message: str


def _clip(text: str) -> str:
    text = " ".join(text.split())
    if len(text) <= MAX_MESSAGE_CHARS:
        return text
    return text[: MAX_MESSAGE_CHARS - 1].rsplit(" ", 1)[0] + "…"


def _exit(terminated: dict[str, Any]) -> str:
    """ "exited N: <the end of its output>": a log's last lines say why it ended."""
    detail = " ".join(str(terminated.get("message") or terminated.get("reason") or "").split())
    if len(detail) > MAX_DETAIL_CHARS:
        detail = "…" + detail[-(MAX_DETAIL_CHARS - 1) :].split(" ", 1)[-1]
    return f"exited {terminated.get('exitCode')}" + (f": {detail}" if detail else "")


def _failed(terminated: dict[str, Any] | None) -> dict[str, Any] | None:
    return terminated if terminated and terminated.get("exitCode", 0) != 0 else None


def _init_failure(pod: str, status: dict[str, Any]) -> str | None:
    """A failed fetch reads the same whichever moment of its retries the pod is read at.

    A kubelet restarts a failed init container with a back-off, so its failed exit is in
    `state.terminated`, then in `lastState.terminated` while it waits (CrashLoopBackOff) or
    runs again. The exit says why; the back-off is only the kubelet's retry.
    """
    state = status.get("state") or {}
    waiting = state.get("waiting") or {}
    if "terminated" in state:
        failed = _failed(state["terminated"])
    elif waiting.get("reason", "CrashLoopBackOff") == "CrashLoopBackOff":
        failed = _failed((status.get("lastState") or {}).get("terminated"))
    else:
        failed = None
    if failed:
        return f"pod {pod}: init container {status.get('name')} {_exit(failed)}"
    if waiting.get("reason") in STUCK_WAITING_REASONS:
        # The kubelet's words, e.g. CreateContainerConfigError: secret "creds" not found.
        said = f": {waiting['message']}" if waiting.get("message") else ""
        return f"pod {pod}: init container {status.get('name')} {waiting['reason']}{said}"
    return None


def _container_failure(pod: str, status: dict[str, Any]) -> str | None:
    waiting = (status.get("state") or {}).get("waiting") or {}
    last = (status.get("lastState") or {}).get("terminated")
    failed_last = bool(last) and last.get("exitCode", 0) != 0
    if waiting.get("reason") in STUCK_WAITING_REASONS:
        state = waiting["reason"]
    elif failed_last and not status.get("ready") and status.get("restartCount", 0) > 0:
        # Between two back-offs a crash-looping container runs again for a moment: the same
        # failure, not a pod that came right (it is still not Ready).
        state = "restarted"
    else:
        return None
    detail = waiting.get("message") or ""
    if failed_last:
        detail = (detail + "; " if detail else "") + f"last {_exit(last)}"
    return f"pod {pod}: container {status.get('name')} {state}" + (f": {detail}" if detail else "")


def pod_failure(pods: list[dict[str, Any]]) -> PodFailure | None:
    """The first pod (by name) whose model fetch failed or whose server cannot run."""
    for pod in sorted(pods, key=lambda p: (p.get("metadata") or {}).get("name", "")):
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        status = pod.get("status") or {}
        name = meta.get("name", "")
        for init in _statuses(status, "initContainerStatuses"):
            found = _init_failure(name, init)
            if found:
                return PodFailure(FETCH_FAILED, _clip(found))
        for container in _statuses(status, "containerStatuses"):
            found = _container_failure(name, container)
            if found:
                return PodFailure(SERVER_FAILING, _clip(found))
    return None


def _statuses(status: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return [item for item in status.get(key) or [] if isinstance(item, dict)]
