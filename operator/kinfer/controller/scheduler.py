"""One loop that ticks every InferenceService: its control loop, and its periodic resync.

A kopf daemon or timer per object would make kopf put a finalizer on every
InferenceService (to stop them before the object goes). kinfer has nothing to
clean up at deletion (every child is owned and garbage-collected), and such a
finalizer leaves objects stuck in Terminating once the operator is uninstalled.
So the objects are known from the watch (`observe`), and this one loop ticks
each of them every `tick_s`, in the thread pool, never two ticks of one object
at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kinfer.controller.control_loop import LoopMemory

log = logging.getLogger(__name__)

Key = tuple[str, str]


@dataclass
class Entry:
    """What the loop keeps for one InferenceService between its ticks."""

    memory: LoopMemory = field(default_factory=LoopMemory)
    next_resync_s: float = 0.0
    running: bool = False


@dataclass
class Scheduler:
    """Ticks every known InferenceService; `tick(key, memory, resync)` does the work.

    `resync` is true once every `resync_s` per object (first after `resync_s`): the
    tick then also reconciles, to heal drift.
    """

    tick: Callable[[Key, LoopMemory, bool], None]
    tick_s: float
    resync_s: float
    clock: Callable[[], float] = time.monotonic
    entries: dict[Key, Entry] = field(default_factory=dict)

    def observe(self, event_type: str | None, body: dict[str, Any]) -> None:
        """Follow the watch: an object appears, or goes (deleted, or being deleted)."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        if event_type == "DELETED" or meta.get("deletionTimestamp"):
            self.entries.pop(key, None)
        elif key not in self.entries:
            self.entries[key] = Entry(next_resync_s=self.clock() + self.resync_s)

    def due(self) -> list[tuple[Key, Entry, bool]]:
        """The objects to tick now (not those still in their previous tick), with resync."""
        now = self.clock()
        work = []
        for key, entry in list(self.entries.items()):
            if entry.running:
                continue
            resync = now >= entry.next_resync_s
            if resync:
                entry.next_resync_s = now + self.resync_s
            work.append((key, entry, resync))
        return work

    def start_due(self) -> list[asyncio.Task[None]]:
        """Start a tick of every due object (on the running loop); return their tasks."""
        return [
            asyncio.create_task(self._run_tick(key, entry, resync))
            for key, entry, resync in self.due()
        ]

    async def run(self, stopped: asyncio.Event) -> None:
        """Every `tick_s`, tick each object not still in its previous tick, until `stopped`.

        A slow tick (a Prometheus query waiting out its timeout) holds back only its
        own object.
        """
        running: set[asyncio.Task[None]] = set()
        while not stopped.is_set():
            for task in self.start_due():
                running.add(task)
                task.add_done_callback(running.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), timeout=self.tick_s)
        if running:
            await asyncio.wait(running, timeout=self.tick_s * 10)

    async def _run_tick(self, key: Key, entry: Entry, resync: bool) -> None:
        entry.running = True
        try:
            await asyncio.to_thread(self.tick, key, entry.memory, resync)
        except Exception:
            log.exception("tick of %s/%s failed", *key)
        finally:
            entry.running = False
