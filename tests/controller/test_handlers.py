"""The handlers share what `kinfer run` made through kopf's memo, never a module global."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import kopf

from kinfer.config import RenderOptions
from kinfer.controller import handlers
from kinfer.controller.kube import OwnWrites


class RecordingKube:
    """Answers `get` from a table; records every call."""

    def __init__(self, objects: dict[tuple[str, str], dict[str, Any]] | None = None) -> None:
        self.objects = objects or {}
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.own_writes = OwnWrites()

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict | None:
        self.calls.append(("get", (kind, namespace, name)))
        return self.objects.get((namespace, name))

    def peek(self, api_version: str, kind: str, namespace: str, name: str) -> dict | None:
        self.calls.append(("peek", (kind, namespace, name)))
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

    def seen(event: str | None, body: dict[str, Any]) -> None:
        # kopf hands each object's handlers a shallow copy of the operator's memo, and awaits
        # an async handler on its event loop.
        asyncio.run(handlers.inference_service_seen(type=event, body=body, memo=copy.copy(memo)))

    seen("ADDED", isvc("a"))
    seen(None, isvc("b"))
    assert sorted(memo.scheduler.entries) == [("team-a", "a"), ("team-a", "b")]
    written = {"metadata": {"resourceVersion": "9"}, "status": {"conditions": []}}
    memo.kube.own_writes.record("team-a", "a", written)
    seen("DELETED", isvc("a"))
    assert sorted(memo.scheduler.entries) == [("team-a", "b")]
    assert memo.kube.own_writes.newer("team-a", "a", "3", None) == ("3", None), "forgotten"


def test_a_late_deletion_of_an_older_incarnation_forgets_nothing_of_the_new_one() -> None:
    memo = handlers.operator_memo(RecordingKube(), RenderOptions(), None)

    def seen(event: str, uid: str, version: str) -> None:
        body = isvc("a")
        body["metadata"].update(uid=uid, resourceVersion=version)
        asyncio.run(handlers.inference_service_seen(type=event, body=body, memo=copy.copy(memo)))

    seen("ADDED", "old", "10")
    seen("ADDED", "new", "20")
    written = {"metadata": {"resourceVersion": "21"}, "status": {"conditions": []}}
    memo.kube.own_writes.record("team-a", "a", written)
    seen("DELETED", "old", "11")
    assert memo.scheduler.entries[("team-a", "a")].uid == "new"
    assert memo.kube.own_writes.newer("team-a", "a", "20", None) == ("21", [])


def test_the_schedulers_plan_and_tick_read_the_memos_kube() -> None:
    kube = RecordingKube({("team-a", "gone"): isvc("gone", deleting=True)})
    memo = handlers.operator_memo(kube, RenderOptions(), None)
    memo.scheduler.observe("ADDED", isvc("gone"))
    memo.scheduler.observe("ADDED", isvc("missing"))
    # What is due is read through the memo's client without a copy (peek): a deleting or
    # unknown object has nothing due, and nothing is fetched, reconciled or written.
    assert memo.scheduler.due() == []
    assert kube.calls == [
        ("peek", ("InferenceService", "team-a", "gone")),
        ("peek", ("InferenceService", "team-a", "missing")),
    ]
    # A resync's tick reads the object itself; a deleting one is left alone.
    memo.scheduler.tick(("team-a", "gone"), memo.scheduler.entries[("team-a", "gone")].memory, True)
    assert kube.calls[-1] == ("get", ("InferenceService", "team-a", "gone"))


async def test_startup_starts_the_scheduler_and_cleanup_stops_it() -> None:
    memo = handlers.operator_memo(RecordingKube(), RenderOptions(), None)
    await handlers.start_scheduler(memo=memo)
    task = memo.scheduler_task
    assert not task.done()
    await handlers.stop_scheduler(memo=memo)
    assert task.done() and task.exception() is None
