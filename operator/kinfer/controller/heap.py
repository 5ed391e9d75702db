"""Garbage collection for the operator's large, steady heap.

The operator keeps every watched object in memory: about 280,000 containers at a thousand
services. Each period it also makes tens of thousands of objects that live for a few ticks.
CPython runs a full collection when the objects promoted to its oldest generation since the
last one pass a quarter of that generation, and a full collection scans all of it. At 1,000
services that is a 0.25 s scan every 6 s or so: about a third of the operator's CPU.

`gc.freeze()` moves every live object into a permanent generation that collections skip, so
that they scan only what was made since. Objects in it are still freed when their last
reference goes: the caches' JSON holds no reference cycles. A cycle among frozen objects is
found at the next `refreeze`, which unfreezes, collects everything, and freezes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging

log = logging.getLogger(__name__)

# How often everything is collected and frozen again. This bounds how long a reference cycle
# among frozen objects can outlive its last use. One full collection costs about 0.3 s at 1,000
# services.
REFREEZE_S = 120.0


def refreeze() -> int:
    """Collect everything, frozen objects included, then freeze the survivors. Returns the
    number of unreachable objects found."""
    gc.unfreeze()
    found = gc.collect()
    gc.freeze()
    return found


async def keep_frozen(stopped: asyncio.Event, every_s: float = REFREEZE_S) -> None:
    """Refreeze every `every_s` until `stopped` is set, then unfreeze."""
    try:
        while not stopped.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), timeout=every_s)
            if not stopped.is_set():
                log.debug("collected %d unreachable objects", refreeze())
    finally:
        gc.unfreeze()
