"""The pod runner's status sync: which pods wait on KWOK, and when each is bumped."""

from __future__ import annotations

from typing import Any

import pytest

from kinfer_dev.localcluster.kwok_watchdog import Watchdog, awaiting_kwok, report_disagrees


def pod(
    phase: str = "Running",
    *,
    ready_annotation: str | None = "true",
    ready: str = "True",
    restarts: int = 0,
    restarts_annotation: str | None = None,
    waiting: str | None = None,
    waiting_annotation: str | None = None,
    node: str | None = "kwok-node-0",
    pod_ip: str | None = "127.77.0.5",
    deleting: bool = False,
    finalizers: list[str] | None = None,
    version: str = "1",
) -> dict[str, Any]:
    annotations = {}
    if ready_annotation is not None:
        annotations["kinfer.dev/server-ready"] = ready_annotation
    if restarts_annotation is not None:
        annotations["kinfer.dev/server-restarts"] = restarts_annotation
    if waiting_annotation is not None:
        annotations["kinfer.dev/server-waiting"] = waiting_annotation
    meta: dict[str, Any] = {"name": "p", "resourceVersion": version, "annotations": annotations}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-07T00:00:00Z"
    if finalizers:
        meta["finalizers"] = finalizers
    state = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [{"type": "Ready", "status": ready}],
        "containerStatuses": [{"restartCount": restarts, "state": state}],
    }
    if pod_ip:
        status["podIP"] = pod_ip
    return {"metadata": meta, "spec": {"nodeName": node} if node else {}, "status": status}


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (pod(), False),
        (pod(ready="False"), True),
        (pod(ready_annotation=None, ready="False"), False),  # nothing reported yet
        (pod(ready_annotation=None, ready="True"), True),
        (pod(restarts_annotation="2", restarts=1), True),
        (pod(restarts_annotation="1", restarts=1), False),
        (pod(waiting_annotation="CrashLoopBackOff"), True),
        (pod(waiting_annotation="CrashLoopBackOff", waiting="CrashLoopBackOff"), False),
    ],
)
def test_the_report_disagrees_as_the_sync_stage_selects(case: dict[str, Any], expected: bool):
    assert report_disagrees(case) is expected


@pytest.mark.parametrize(
    ("case", "owed"),
    [
        (pod(), None),
        (pod(ready="False"), "the pod runner's report in its status"),
        (pod("Pending", pod_ip=None), "its start"),
        (pod("Pending", pod_ip=None, node=None), None),  # unscheduled: not KWOK's
        (pod("Pending"), None),  # started: the runner fetches the model
        (pod(deleting=True), "its deletion"),
        (pod(deleting=True, finalizers=["x"]), None),  # a finalizer holds it
    ],
)
def test_what_kwok_still_owes(case: dict[str, Any], owed: str | None) -> None:
    assert awaiting_kwok(case) == owed


def test_a_pod_is_bumped_after_it_stalls_and_then_once_per_stall() -> None:
    watchdog = Watchdog(stall_s=10)
    stuck = {"ns/p": pod(ready="False")}
    assert watchdog.due(stuck, 0.0) == []
    assert watchdog.due(stuck, 9.9) == []
    assert watchdog.due(stuck, 10.0) == [("ns/p", "the pod runner's report in its status")]
    assert watchdog.due(stuck, 15.0) == []
    assert [key for key, _ in watchdog.due(stuck, 20.0)] == ["ns/p"]


def test_a_change_restarts_the_clock_and_a_settled_or_gone_pod_is_forgotten() -> None:
    watchdog = Watchdog(stall_s=10)
    watchdog.due({"ns/p": pod(ready="False", version="1")}, 0.0)
    # KWOK (or anyone) changed it: a new resourceVersion is a new wait.
    assert watchdog.due({"ns/p": pod(ready="False", version="2")}, 9.0) == []
    assert watchdog.due({"ns/p": pod(ready="False", version="2")}, 18.0) == []
    assert watchdog.due({"ns/p": pod(version="3")}, 30.0) == []
    assert "ns/p" not in watchdog.waiting
    watchdog.due({"ns/q": pod(ready="False")}, 40.0)
    assert watchdog.due({}, 41.0) == [] and watchdog.waiting == {}
