"""The handlers share what `kinfer run` made through kopf's memo, never a module global."""

from __future__ import annotations

import copy
from typing import Any

import kopf

from kinfer.config import RenderOptions
from kinfer.controller import handlers


class RecordingKube:
    """Answers `get` from a table; records every call."""

    def __init__(self, objects: dict[tuple[str, str], dict[str, Any]] | None = None) -> None:
        self.objects = objects or {}
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict | None:
        self.calls.append(("get", (kind, namespace, name)))
        return self.objects.get((namespace, name))


def isvc(name: str, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": "team-a", "name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta}


def test_the_memo_carries_what_kinfer_run_made_and_one_scheduler() -> None:
    kube, options = RecordingKube(), RenderOptions()
    memo = handlers.operator_memo(kube, options, None)
    assert isinstance(memo, kopf.Memo)
    assert memo.kube is kube and memo.render_options is options and memo.metrics_reader is None
    assert memo.scheduler.resync_s == handlers.RESYNC_INTERVAL_S
    assert not hasattr(handlers, "STATE")


def test_each_objects_memo_copy_feeds_the_one_scheduler() -> None:
    memo = handlers.operator_memo(RecordingKube(), RenderOptions(), None)
    # kopf hands each object's handlers a shallow copy of the operator's memo.
    handlers.inference_service_seen(type="ADDED", body=isvc("a"), memo=copy.copy(memo))
    handlers.inference_service_seen(type=None, body=isvc("b"), memo=copy.copy(memo))
    assert sorted(memo.scheduler.entries) == [("team-a", "a"), ("team-a", "b")]
    handlers.inference_service_seen(type="DELETED", body=isvc("a"), memo=copy.copy(memo))
    assert sorted(memo.scheduler.entries) == [("team-a", "b")]


def test_the_schedulers_tick_reads_the_memos_kube() -> None:
    kube = RecordingKube({("team-a", "gone"): isvc("gone", deleting=True)})
    memo = handlers.operator_memo(kube, RenderOptions(), None)
    memo.scheduler.observe("ADDED", isvc("gone"))
    memo.scheduler.observe("ADDED", isvc("missing"))
    for key, entry, resync in memo.scheduler.due():
        memo.scheduler.tick(key, entry.memory, resync)
    # Both looked up through the memo's client; neither is reconciled nor written.
    assert kube.calls == [
        ("get", ("InferenceService", "team-a", "gone")),
        ("get", ("InferenceService", "team-a", "missing")),
    ]


async def test_startup_starts_the_scheduler_and_cleanup_stops_it() -> None:
    memo = handlers.operator_memo(RecordingKube(), RenderOptions(), None)
    await handlers.start_scheduler(memo=memo)
    task = memo.scheduler_task
    assert not task.done()
    await handlers.stop_scheduler(memo=memo)
    assert task.done() and task.exception() is None
