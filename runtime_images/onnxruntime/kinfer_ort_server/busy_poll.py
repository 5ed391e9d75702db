"""Busy polling: after an answer the event loop polls for a moment instead of sleeping.

At gRPC concurrency 1 the next call reaches this server about 0.25 ms after its answer
left (through kinfer-grpc-frontend and the client). An event loop that went to sleep in
epoll by then is woken by the kernel, and on a VM waking an idle vCPU is an inter-processor
interrupt: 0.05-0.1 ms of the call's latency, measured (docs/data-plane.md, "Busy
polling"). A loop that keeps a callback ready polls with a zero timeout instead, so the
call is read as soon as it lands and nothing else waits: every other socket, timer and
task is served on each pass, as in any loop iteration.
"""

from __future__ import annotations

import asyncio
import os
import time


class BusyPoll:
    """Keeps `loop` polling without sleeping until `window_s` after the latest `kick()`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, window_s: float) -> None:
        if window_s < 0:
            raise ValueError(f"busy-poll window {window_s} s must be >= 0")
        self._loop = loop
        self.window_s = window_s
        self._until = 0.0
        self._polling = False

    @property
    def polling(self) -> bool:
        return self._polling

    def kick(self) -> None:
        """Poll until window_s from now (no-op with a zero window)."""
        if self.window_s <= 0:
            return
        self._until = time.perf_counter() + self.window_s
        if not self._polling:
            self._polling = True
            self._loop.call_soon(self._pass)

    def _pass(self) -> None:
        # A ready callback makes the loop's next poll non-blocking; re-arming it once per
        # pass keeps the loop iterating until the window ends, then it sleeps as usual.
        if time.perf_counter() < self._until:
            os.sched_yield()
            self._loop.call_soon(self._pass)
        else:
            self._polling = False
