"""One loop that ticks every InferenceService that has something due: its scaling decision,
its tier check, or its periodic resync.

A kopf daemon or timer per object would make kopf put a finalizer on every
InferenceService (to stop them before the object goes). kinfer has nothing to
clean up at deletion (every child is owned and garbage-collected), and such a
finalizer leaves objects stuck in Terminating once the operator is uninstalled.
So the objects are known from the watch (`observe`), and this one loop wakes every
`wake_s`, asks each object's `plan` what is due, reads the metrics of every decision
due in one batch (`read`: one Prometheus query per runtime and window, whatever the
number of services), then runs the ticks in the thread pool, never two of one object
at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kinfer.autoscale.metrics import Wanted
from kinfer.autoscale.observation import Observation
from kinfer.controller.control_loop import LoopMemory, Plan
from kinfer.controller.kube import version_number

log = logging.getLogger(__name__)

# Threads that run ticks and reads. A tick mostly waits on the API server (its writes) and
# a read on Prometheus: asyncio's default pool (CPUs + 4) would queue ticks behind them.
TICK_WORKERS = 32

Key = tuple[str, str]


@dataclass
class Entry:
    """What the loop keeps for one InferenceService between its ticks: for one incarnation
    of its name (uid), the newest seen (resourceVersion)."""

    uid: str | None = None
    version: int | None = None
    memory: LoopMemory = field(default_factory=LoopMemory)
    next_resync_s: float = 0.0
    running: bool = False
    # Changes of the object seen (by `changed`, from any thread).
    changes: int = 0
    # (changes, time on the scheduler's clock): the last plan found nothing due before that
    # time, as of that many changes. Not asked again before then unless the object changed.
    quiet: tuple[int, float] = (-1, 0.0)

    def current(self, uid: str | None, version: int | None) -> bool:
        """Whether an event of (uid, resourceVersion) is about this incarnation or a newer
        one, not a late event of one deleted before this one was made."""
        if uid is None or self.uid is None or uid == self.uid:
            return True
        return version is not None and (self.version is None or version > self.version)

    def follow(self, uid: str | None, version: int | None) -> None:
        """A current event: a new incarnation starts afresh (none of the old one's policy
        history, plan or status report); the same one only moves its version on."""
        if uid is not None and self.uid is not None and uid != self.uid:
            self.memory = LoopMemory()
            self.quiet = (-1, 0.0)
        self.uid = uid if uid is not None else self.uid
        if version is not None and (self.version is None or version > self.version):
            self.version = version
        self.changes += 1

    def quiet_at(self, now: float) -> bool:
        """Whether the last plan still stands at `now`: nothing due yet, no change since."""
        return self.quiet[0] == self.changes and now < self.quiet[1]


@dataclass(frozen=True)
class Work:
    key: Key
    entry: Entry
    resync: bool
    planned: Plan

    @property
    def wanted(self) -> Wanted | None:
        return self.planned.wanted


@dataclass
class Scheduler:
    """Ticks every known InferenceService that has work due.

    tick(key, memory, resync): the work itself. plan(key, memory): what is due (None: the
    object is not known now). read(wanted): the metrics of every decision due, by key.
    `resync` is true once every `resync_s` per object (first after `resync_s`): the tick then
    also reconciles, to heal drift.
    """

    tick: Callable[[Key, LoopMemory, bool], None]
    plan: Callable[[Key, LoopMemory], Plan | None]
    read: Callable[[list[Wanted]], dict[Key, Observation]] | None
    wake_s: float
    resync_s: float
    clock: Callable[[], float] = time.monotonic
    entries: dict[Key, Entry] = field(default_factory=dict)
    # Metric reads sent, and the services they covered (for the operator's own metrics).
    reads: int = 0
    workers: int = TICK_WORKERS
    _executor: ThreadPoolExecutor | None = field(default=None, repr=False)

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="kinfer-tick")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    def observe(self, event_type: str | None, body: dict[str, Any]) -> bool:
        """Follow the watch: an object appears, or goes (deleted, or being deleted). Returns
        False for a late event of an older incarnation of the name, which changes nothing.

        kopf handles each uid's events in its own worker, so when a name is deleted and made
        again, the old object's last events can come after the new one's first; and a
        relist after a broken watch tells no deletion at all. So an entry follows the newest
        incarnation seen, by resourceVersion."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        uid, version = meta.get("uid"), version_number(meta.get("resourceVersion"))
        entry = self.entries.get(key)
        if entry is not None and not entry.current(uid, version):
            return False
        if event_type == "DELETED" or meta.get("deletionTimestamp"):
            self.entries.pop(key, None)
        elif entry is None:
            self.entries[key] = Entry(uid, version, next_resync_s=self.clock() + self.resync_s)
        else:
            entry.follow(uid, version)
        return True

    def changed(self, key: Key) -> None:
        """`key`'s object changed (its cache has the new one): plan it at the next wake. Safe
        from any thread."""
        entry = self.entries.get(key)
        if entry is not None:
            entry.changes += 1

    def refresh_soon(self, key: Key) -> None:
        """Make `key`'s next tick report its status again (its Deployment's status changed),
        once however many changes come before it; the next wake starts it. Safe from any
        thread."""
        entry = self.entries.get(key)
        if entry is not None:
            entry.memory.status_stale = True

    def resync_soon(self, key: Key) -> None:
        """Make `key`'s next tick a resync (a child of it changed); the next wake starts it,
        or the one after its running tick. Safe from any thread."""
        entry = self.entries.get(key)
        if entry is not None:
            entry.next_resync_s = 0.0

    def due(self) -> list[Work]:
        """The objects with work due now (not those still in their previous tick). An object
        whose last plan had nothing due is not asked again before the time that plan gave,
        unless it changes (observe) or falls due a resync or a status report."""
        now = self.clock()
        work = []
        for key, entry in list(self.entries.items()):
            if entry.running:
                continue
            resync = now >= entry.next_resync_s
            stale = entry.memory.status_stale
            if not resync and not stale and entry.quiet_at(now):
                continue
            changes = entry.changes
            planned = self.plan(key, entry.memory)
            if not resync and not stale and (planned is None or not planned.any):
                if planned is not None:
                    entry.quiet = (changes, now + planned.quiet_s)
                continue
            entry.quiet = (-1, 0.0)
            if resync:
                entry.next_resync_s = now + self.resync_s
            work.append(Work(key, entry, resync, planned or Plan(None, False)))
        return work

    def start_due(self) -> list[asyncio.Task[None]]:
        """Start the due work on the running loop: the ticks with no decision at once, the
        decisions after one batched read of their metrics. Returns the tasks."""
        work = self.due()
        for item in work:
            item.entry.running = True
            # The tick does what was planned now, even if it runs in the next period.
            item.entry.memory.planned = item.planned
        tasks = [asyncio.create_task(self._run_tick(item)) for item in work if not item.wanted]
        deciding = [item for item in work if item.wanted]
        if deciding:
            tasks.append(asyncio.create_task(self._read_then_tick(deciding)))
        return tasks

    async def run(self, stopped: asyncio.Event) -> None:
        """Every `wake_s`, start what is due, until `stopped`. A slow read (Prometheus
        waiting out its timeout) holds back only the decisions waiting for it."""
        running: set[asyncio.Task[None]] = set()
        while not stopped.is_set():
            for task in self.start_due():
                running.add(task)
                task.add_done_callback(running.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), timeout=self.wake_s)
        if running:
            await asyncio.wait(running, timeout=60)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def _read_then_tick(self, deciding: list[Work]) -> None:
        if self.read is not None:
            try:
                self.reads += 1
                found = await self._in_thread(self.read, [item.wanted for item in deciding])
            except Exception:  # the read never raises by contract; a bug must not stop ticks
                log.exception("reading metrics for %d services failed", len(deciding))
                found = {}
            for item in deciding:
                item.entry.memory.observation = found.get(item.key)
        await asyncio.gather(*(self._run_tick(item) for item in deciding))

    async def _run_tick(self, item: Work) -> None:
        try:
            await self._in_thread(self.tick, item.key, item.entry.memory, item.resync)
        except Exception:
            log.exception("tick of %s/%s failed", *item.key)
        finally:
            item.entry.running = False
