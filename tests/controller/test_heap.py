"""The operator's refreeze of the garbage collector (kinfer.controller.heap)."""

from __future__ import annotations

import asyncio
import gc
import weakref

from kinfer.controller import heap


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def _cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_a_cycle_frozen_while_alive_is_collected_by_the_next_refreeze():
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a
        alive = weakref.ref(a)
        heap.refreeze()
        assert gc.get_freeze_count() > 0
        del a, b
        gc.collect()  # an ordinary collection skips frozen objects
        assert alive() is not None
        assert heap.refreeze() >= 2
        assert alive() is None
    finally:
        gc.unfreeze()


def test_keep_frozen_refreezes_until_stopped_then_unfreezes():
    async def scenario() -> tuple[int, weakref.ref[Node]]:
        stopped = asyncio.Event()
        task = asyncio.create_task(heap.keep_frozen(stopped, every_s=0.01))
        cycle = _cycle()
        for _ in range(500):  # a cycle made after a freeze goes at the next refreeze
            await asyncio.sleep(0.01)
            if cycle() is None:
                break
        frozen = gc.get_freeze_count()
        stopped.set()
        await asyncio.wait_for(task, timeout=10)
        return frozen, cycle

    try:
        frozen, cycle = asyncio.run(scenario())
        assert cycle() is None
        assert frozen > 0
        assert gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()
