"""`kinfer_ort_server.busy_poll.BusyPoll` on a real asyncio loop whose selector records
each poll's timeout: polling means the loop never blocks, and it sleeps again afterwards."""

from __future__ import annotations

import asyncio
import selectors
import socket
import time

import pytest

from kinfer_ort_server.busy_poll import BusyPoll


class RecordingSelector(selectors.DefaultSelector):
    """The loop's selector, recording (when, timeout) of every poll."""

    def __init__(self) -> None:
        super().__init__()
        self.polls: list[tuple[float, float | None]] = []

    def select(self, timeout=None):
        self.polls.append((time.perf_counter(), timeout))
        return super().select(timeout)


def _run(main) -> RecordingSelector:
    selector = RecordingSelector()
    loop = asyncio.SelectorEventLoop(selector)
    try:
        loop.run_until_complete(main(loop))
    finally:
        loop.close()
    return selector


def _blocking(polls, since: float) -> list[float]:
    """When the loop polled with a timeout (slept) after `since`."""
    return [at for at, timeout in polls if at >= since and (timeout is None or timeout > 0)]


def test_a_kick_keeps_the_loop_polling_for_its_window_then_it_sleeps():
    window_s = 0.05
    kicked = {}

    async def main(loop):
        poll = BusyPoll(loop, window_s)
        await asyncio.sleep(0)
        kicked["at"] = time.perf_counter()
        poll.kick()
        assert poll.polling
        await asyncio.sleep(window_s * 4)  # a timer: the loop would sleep in select
        assert not poll.polling

    selector = _run(main)
    start = kicked["at"]
    busy = [at for at, timeout in selector.polls if at >= start and timeout == 0]
    # Polled all through the window (many zero-timeout passes, the last near its end) and
    # slept only after it: the first blocking poll comes once the window is over.
    assert len(busy) > 10
    assert max(busy) - start >= window_s * 0.9
    sleeps = _blocking(selector.polls, start)
    assert sleeps and sleeps[0] - start >= window_s * 0.9


def test_a_later_kick_extends_the_window():
    window_s = 0.04
    marks = {}

    async def main(loop):
        poll = BusyPoll(loop, window_s)
        marks["first"] = time.perf_counter()
        poll.kick()
        await asyncio.sleep(window_s / 2)
        marks["second"] = time.perf_counter()
        poll.kick()
        await asyncio.sleep(window_s * 4)

    selector = _run(main)
    # asyncio.sleep's own timer makes blocking polls once it is due; the window decides
    # when the loop sleeps: not before the second kick's window ends.
    busy = [at for at, timeout in selector.polls if at >= marks["first"] and timeout == 0]
    assert max(busy) - marks["second"] >= window_s * 0.9


def test_a_zero_window_never_polls_and_io_is_served_while_polling():
    async def main(loop):
        off = BusyPoll(loop, 0.0)
        off.kick()
        assert not off.polling
        # While another poll runs, a socket's data is still delivered (a pass is an
        # ordinary loop iteration, it does not starve other readers).
        on = BusyPoll(loop, 0.5)
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=ours)
        try:
            on.kick()
            theirs.sendall(b"ping")
            assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
            assert on.polling
        finally:
            writer.close()
            theirs.close()

    _run(main)


def test_a_negative_window_is_refused():
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="must be >= 0"):
            BusyPoll(loop, -1)
    finally:
        loop.close()
