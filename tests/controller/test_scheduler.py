"""The one loop that ticks every InferenceService: membership, what is due, one batched read
of metrics for every decision due, resync, no overlap."""

from __future__ import annotations

import asyncio
import threading

from kinfer.autoscale.metrics import Wanted
from kinfer.autoscale.observation import Observation
from kinfer.controller.control_loop import Plan
from kinfer.controller.scheduler import Scheduler

NOTHING = Plan(None, False)
TIER = Plan(None, True)


def body(
    name: str, deleting: bool = False, uid: str | None = None, version: int | None = None
) -> dict:
    meta: dict = {"namespace": "team-a", "name": name}
    if uid is not None:
        meta["uid"] = uid
    if version is not None:
        meta["resourceVersion"] = str(version)
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta}


def decision(name: str) -> Plan:
    return Plan(Wanted("team-a", name, "onnxruntime", 60), False)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def scheduler(
    clock: Clock, tick=lambda key, memory, resync: None, plans=None, read=None
) -> Scheduler:
    plans = plans if plans is not None else {}
    return Scheduler(
        tick=tick,
        plan=lambda key, memory: plans.get(key[1], TIER),
        read=read,
        wake_s=0.5,
        resync_s=30.0,
        clock=clock,
    )


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


def test_a_name_made_again_follows_its_newest_incarnation_whatever_order_events_come_in() -> None:
    # kopf handles each uid in its own worker: the deleted object's last events may come
    # after the new one's first.
    loop = scheduler(Clock())
    key = ("team-a", "a")
    assert loop.observe("ADDED", body("a", uid="old", version=10))
    loop.entries[key].memory.last_decision_s = 5.0
    assert loop.observe("ADDED", body("a", uid="new", version=20))
    entry = loop.entries[key]
    assert (entry.uid, entry.version) == ("new", 20)
    assert entry.memory.last_decision_s == 0.0, "the new object starts with none of the old's"
    entry.memory.last_decision_s = 7.0
    assert not loop.observe("MODIFIED", body("a", uid="old", version=15))
    assert not loop.observe("DELETED", body("a", uid="old", version=16))
    assert loop.entries[key] is entry and entry.memory.last_decision_s == 7.0
    assert loop.observe("MODIFIED", body("a", uid="new", version=21))
    assert entry.memory.last_decision_s == 7.0 and entry.version == 21
    assert loop.observe("DELETED", body("a", uid="new", version=22))
    assert loop.entries == {}


def test_a_relist_that_tells_no_deletion_still_starts_the_new_object_afresh() -> None:
    loop = scheduler(Clock())
    loop.observe(None, body("a", uid="old", version=10))
    loop.entries[("team-a", "a")].memory.status_stale = True
    # The watch broke; the name was deleted and made again; the relist shows only the new.
    assert loop.observe(None, body("a", uid="new", version=30))
    entry = loop.entries[("team-a", "a")]
    assert entry.uid == "new" and not entry.memory.status_stale


def test_only_objects_with_work_due_are_ticked() -> None:
    plans = {"idle": NOTHING, "unknown": None, "tiers": TIER, "deciding": decision("deciding")}
    loop = scheduler(Clock(), plans=plans)
    for name in plans:
        loop.observe("ADDED", body(name))
    work = {item.key[1]: item for item in loop.due()}
    assert sorted(work) == ["deciding", "tiers"]
    assert work["deciding"].wanted == decision("deciding").wanted
    assert work["tiers"].wanted is None


def test_resync_comes_once_per_interval_and_first_after_one() -> None:
    clock = Clock()
    loop = scheduler(clock, plans={"a": NOTHING})
    loop.observe("ADDED", body("a"))
    resyncs = []
    for _ in range(150):  # 75 s of 0.5 s wakes
        resyncs += [item.resync for item in loop.due()]
        clock.now += 0.5
    # at 30 s and at 60 s after the object was seen, and no other work (nothing else due)
    assert resyncs == [True, True]


async def test_decisions_due_together_share_one_read() -> None:
    reads: list[list[Wanted]] = []
    seen: dict[str, Observation | None] = {}

    def read(wanted: list[Wanted]) -> dict:
        reads.append(wanted)
        return {("team-a", "a"): Observation(qps=1.0), ("team-a", "b"): Observation(qps=2.0)}

    handed: dict[str, Plan | None] = {}

    def tick(key, memory, resync) -> None:
        seen[key[1]] = memory.observation
        handed[key[1]] = memory.planned

    plans = {name: decision(name) for name in ("a", "b", "c")}
    loop = scheduler(Clock(), tick, plans=plans, read=read)
    for name in plans:
        loop.observe("ADDED", body(name))
    await asyncio.gather(*loop.start_due())
    assert len(reads) == 1 and sorted(w.name for w in reads[0]) == ["a", "b", "c"]
    # Each tick finds its own answer; one the read did not cover reads alone (None).
    assert seen == {"a": Observation(qps=1.0), "b": Observation(qps=2.0), "c": None}
    # And the plan it was started for: a late tick decides only if a decision was planned.
    assert handed == plans


async def test_a_slow_read_holds_back_only_the_decisions() -> None:
    release = threading.Event()
    ticked: list[str] = []

    def read(wanted: list[Wanted]) -> dict:
        release.wait(10)
        return {}

    plans = {"deciding": decision("deciding"), "tiers": TIER}
    loop = scheduler(Clock(), lambda key, *_: ticked.append(key[1]), plans=plans, read=read)
    for name in plans:
        loop.observe("ADDED", body(name))
    first = loop.start_due()
    await asyncio.sleep(0.2)
    second = loop.start_due()  # the decision still waits for its read: the tiers tick again
    await asyncio.gather(*second)
    assert ticked == ["tiers", "tiers"]
    release.set()
    await asyncio.gather(*first)
    assert sorted(ticked) == ["deciding", "tiers", "tiers"]


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
    ticks = threading.Semaphore(0)
    loop = scheduler(Clock(), lambda *_: ticks.release())
    loop.observe("ADDED", body("a"))
    stopped = asyncio.Event()
    task = asyncio.create_task(loop.run(stopped))
    assert await asyncio.to_thread(ticks.acquire, True, 10)
    stopped.set()
    await asyncio.wait_for(task, timeout=5)


def test_ticks_waiting_on_the_api_server_run_side_by_side_beyond_the_default_pool() -> None:
    # Twelve ticks that each wait for all the others (as ticks wait on their writes): with
    # asyncio's default pool (CPUs + 4 threads on a small machine) the barrier would break.
    from kinfer.controller.scheduler import TICK_WORKERS

    count = 12
    assert count <= TICK_WORKERS
    barrier = threading.Barrier(count, timeout=30)
    broken: list[BaseException] = []

    def tick(key, memory, resync) -> None:
        try:
            barrier.wait()
        except threading.BrokenBarrierError as error:
            broken.append(error)

    loop = scheduler(Clock(), tick=tick)
    for i in range(count):
        loop.observe("ADDED", body(f"s{i}"))

    async def main() -> None:
        await asyncio.gather(*loop.start_due())

    asyncio.run(main())
    assert broken == []


def test_an_object_with_nothing_due_is_not_planned_again_until_its_time_or_a_change() -> None:
    clock = Clock()
    asked: list[str] = []

    def plan(key, memory):
        asked.append(key[1])
        return Plan(None, False, quiet_s=10.0)

    loop = Scheduler(tick=lambda *a: None, plan=plan, read=None, wake_s=0.5, resync_s=300.0)
    loop.clock = clock
    loop.observe("ADDED", body("a"))
    assert loop.due() == [] and asked == ["a"]
    clock.now += 9.5
    assert loop.due() == [] and asked == ["a"], "quiet for 10 s"
    clock.now += 0.5
    assert loop.due() == [] and asked == ["a", "a"], "its time came: planned again"
    loop.changed(("team-a", "a"))  # its cache holds a new version (another thread)
    assert loop.due() == [] and asked == ["a", "a", "a"], "changed: planned at the next wake"
    loop.observe("MODIFIED", body("a"))
    assert loop.due() == [] and asked == ["a"] * 4
    loop.refresh_soon(("team-a", "a"))
    [work] = loop.due()
    assert not work.resync and asked == ["a"] * 5, "a status report is due whatever the plan"
