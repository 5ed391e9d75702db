"""The one loop that ticks every InferenceService: membership, resync, no overlap."""

from __future__ import annotations

import asyncio
import threading

from kinfer.controller.scheduler import Scheduler


def body(name: str, deleting: bool = False) -> dict:
    meta = {"namespace": "team-a", "name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def scheduler(clock: Clock, tick=lambda key, memory, resync: None) -> Scheduler:
    return Scheduler(tick=tick, tick_s=3.0, resync_s=30.0, clock=clock)


def test_objects_follow_the_watch_and_leave_when_deleted_or_deleting() -> None:
    loop = scheduler(Clock())
    loop.observe(None, body("a"))  # listed at start
    loop.observe("ADDED", body("b"))
    loop.observe("MODIFIED", body("a"))
    assert sorted(loop.entries) == [("team-a", "a"), ("team-a", "b")]
    loop.observe("MODIFIED", body("a", deleting=True))
    loop.observe("DELETED", body("b"))
    assert loop.entries == {}


def test_state_survives_updates_of_the_object() -> None:
    loop = scheduler(Clock())
    loop.observe("ADDED", body("a"))
    memory = loop.entries[("team-a", "a")].memory
    loop.observe("MODIFIED", body("a"))
    assert loop.entries[("team-a", "a")].memory is memory


def test_resync_comes_once_per_interval_and_first_after_one() -> None:
    clock = Clock()
    loop = scheduler(clock)
    loop.observe("ADDED", body("a"))
    resyncs = []
    for _ in range(25):  # 75 s of 3 s ticks
        resyncs += [resync for _, _, resync in loop.due()]
        clock.now += 3.0
    # at 30 s and at 60 s after the object was seen
    assert resyncs.count(True) == 2
    assert resyncs.index(True) == 10


async def test_a_slow_tick_holds_back_only_its_own_object() -> None:
    release = threading.Event()
    ticked: list[str] = []

    def tick(key, memory, resync) -> None:
        ticked.append(key[1])
        if key[1] == "slow":
            release.wait(10)

    loop = scheduler(Clock(), tick)
    loop.observe("ADDED", body("slow"))
    loop.observe("ADDED", body("fast"))
    first = loop.start_due()
    await asyncio.sleep(0.2)
    second = loop.start_due()  # "slow" is still in its first tick: only "fast" again
    await asyncio.gather(*second)
    release.set()
    await asyncio.gather(*first)
    assert sorted(ticked) == ["fast", "fast", "slow"]


async def test_a_failing_tick_is_logged_and_the_loop_goes_on(caplog) -> None:
    def tick(key, memory, resync) -> None:
        raise RuntimeError("boom")

    loop = scheduler(Clock(), tick)
    loop.observe("ADDED", body("a"))
    await asyncio.gather(*loop.start_due())
    await asyncio.gather(*loop.start_due())
    assert caplog.text.count("tick of team-a/a failed") == 2


async def test_run_stops_when_told() -> None:
    loop = Scheduler(tick=lambda *_: None, tick_s=0.05, resync_s=30.0)
    loop.observe("ADDED", body("a"))
    stopped = asyncio.Event()
    task = asyncio.create_task(loop.run(stopped))
    await asyncio.sleep(0.2)
    stopped.set()
    await asyncio.wait_for(task, timeout=5)
