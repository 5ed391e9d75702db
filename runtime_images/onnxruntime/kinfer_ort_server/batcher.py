"""Dynamic batching: concurrent requests of one model version run as one session.run.

Greedy with a bound: an instance that is free takes what is queued at once (up to
max_batch_size rows), so a lone request never waits. Only while the model is under
concurrent load (its last batch held more than one request) does a free instance
wait for a fuller batch, and never longer than max_queue_delay after the oldest
request arrived. Execution happens in a thread pool: onnxruntime releases the GIL,
so the event loop keeps parsing the next requests while a batch runs. A model whose
runs take less than `inline_max_s` on average (a tiny MLP: ~10 us) runs on the event
loop itself instead, since the two thread hand-offs would cost more than the run.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from kinfer_ort_server.errors import BadRequest, ServerError


@dataclass(slots=True)
class _Item:
    feeds: dict[str, np.ndarray]
    rows: int
    key: tuple
    future: asyncio.Future
    enqueued_s: float


class Batcher:
    """Queues requests of one model version and runs them in batches on `executor`."""

    def __init__(
        self,
        run: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
        executor: Executor,
        max_batch_size: int,
        max_queue_delay_s: float,
        instances: int,
        on_batch: Callable[[int], None] | None = None,
        inline_max_s: float = 0.0,
    ) -> None:
        self._run = run
        self._executor = executor
        # max_batch_size 0: the model has no batch dimension, so each request runs alone.
        self._max_rows = max(1, max_batch_size)
        self._batching = max_batch_size > 0
        self._max_queue_delay_s = max_queue_delay_s
        self._instances = max(1, instances)
        self._on_batch = on_batch
        self._pending: deque[_Item] = deque()
        self._pending_rows = 0
        self._busy = 0
        self._last_batch_requests = 1
        self._timer: asyncio.TimerHandle | None = None
        self._inline_max_s = inline_max_s
        # Unknown until measured: the first run goes to the thread pool.
        self._run_estimate_s: float | None = None

    async def submit(
        self, feeds: dict[str, np.ndarray], rows: int
    ) -> tuple[list[np.ndarray], float]:
        """Run `feeds` (`rows` along the batch dim) in a batch; returns (outputs, queue seconds)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        key = (
            tuple((name, array.shape[1:], array.dtype) for name, array in feeds.items())
            if self._batching
            else None
        )
        self._pending.append(_Item(feeds, rows, key, future, time.perf_counter()))
        self._pending_rows += rows
        self._dispatch()
        return await future

    def run_now(self, feeds: dict[str, np.ndarray], rows: int) -> list[np.ndarray] | None:
        """Run `feeds` right here if the batcher would anyway; None: use `submit`.

        The common case of a fast model: nothing queued, no batch running, runs short
        enough for the event loop. `submit` would run the same single-request batch inline
        too, only with a queue item and a future around it; this skips them. Raises what the
        run raises, classified as `submit` would.
        """
        estimate_s = self._run_estimate_s
        if self._pending or self._busy or estimate_s is None or estimate_s > self._inline_max_s:
            return None
        self._last_batch_requests = 1
        if self._on_batch is not None:
            self._on_batch(rows)
        try:
            return self._timed_run(feeds)
        except ServerError:
            raise
        except Exception as error:
            raise _classify(error) from error

    def _dispatch(self) -> None:
        while self._pending and self._busy < self._instances:
            if (
                self._max_queue_delay_s > 0
                and self._last_batch_requests > 1
                and self._pending_rows < self._max_rows
            ):
                wait_s = self._pending[0].enqueued_s + self._max_queue_delay_s - time.perf_counter()
                if wait_s > 0:
                    if self._timer is None:
                        self._timer = asyncio.get_running_loop().call_later(wait_s, self._on_timer)
                    return
            self._start(self._take_batch())

    def _on_timer(self) -> None:
        self._timer = None
        # Waiting found no company: treat the load as gone until a batch says otherwise.
        self._last_batch_requests = 1
        self._dispatch()

    def _take_batch(self) -> list[_Item]:
        first = self._pending.popleft()
        batch = [first]
        rows = first.rows
        if self._batching:
            # Only contiguous requests of the same shapes join: FIFO order is kept.
            while self._pending:
                item = self._pending[0]
                if item.key != first.key or rows + item.rows > self._max_rows:
                    break
                batch.append(self._pending.popleft())
                rows += item.rows
        self._pending_rows -= rows
        return batch

    def _start(self, batch: list[_Item]) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._last_batch_requests = len(batch)
        started_s = time.perf_counter()
        rows = sum(item.rows for item in batch)
        if self._on_batch is not None:
            self._on_batch(rows)
        feeds = batch[0].feeds if len(batch) == 1 else _concatenate([item.feeds for item in batch])
        estimate_s = self._run_estimate_s
        if self._busy == 0 and estimate_s is not None and estimate_s <= self._inline_max_s:
            # A model this fast costs less to run than the two thread hand-offs around it,
            # so it runs right here (blocking the loop for microseconds, not milliseconds).
            try:
                outputs = self._timed_run(feeds)
            except Exception as error:
                self._complete(batch, started_s, None, error)
            else:
                self._complete(batch, started_s, outputs, None)
            return
        self._busy += 1
        future = asyncio.wrap_future(self._executor.submit(self._timed_run, feeds))
        future.add_done_callback(lambda done: self._on_done(batch, started_s, done))

    def _timed_run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        start = time.perf_counter()
        outputs = self._run(feeds)
        # The run-time estimate decides between inline and thread execution. A run on the
        # thread pool is timed until its thread holds the GIL again, which under load can
        # take up to the interpreter's switch interval (5 ms) longer than the run: such
        # waits only ever add time, so the estimate falls at once to a faster run and
        # rises slowly: one 5 ms wait adds 50 us, while a model that really takes 1 ms
        # moves off the loop after about ten runs. An average would stay inflated and keep
        # a 10 us model on the thread pool, two thread hand-offs per batch, for as long as
        # the load lasts.
        elapsed_s = time.perf_counter() - start
        estimate_s = self._run_estimate_s
        if estimate_s is None or elapsed_s < estimate_s:
            self._run_estimate_s = elapsed_s
        else:
            self._run_estimate_s = estimate_s + 0.01 * (elapsed_s - estimate_s)
        return outputs

    def _on_done(self, batch: list[_Item], started_s: float, done: asyncio.Future) -> None:
        self._busy -= 1
        error = done.exception()
        self._complete(batch, started_s, None if error else done.result(), error)
        self._dispatch()

    def _complete(
        self, batch: list[_Item], started_s: float, outputs, error: BaseException | None
    ) -> None:
        if error is not None:
            wrapped = error if isinstance(error, ServerError) else _classify(error)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(wrapped)
            return
        offset = 0
        for item in batch:
            if not item.future.done():  # a cancelled request (client gone) is skipped
                sliced = (
                    outputs
                    if len(batch) == 1
                    else [out[offset : offset + item.rows] for out in outputs]
                )
                item.future.set_result((sliced, started_s - item.enqueued_s))
            offset += item.rows


def _concatenate(feeds_list: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([feeds[name] for feeds in feeds_list]) for name in feeds_list[0]}


def _classify(error: BaseException) -> ServerError:
    # onnxruntime raises InvalidArgument / Fail for inputs the config check let through
    # (e.g. values out of an embedding's range): the client's mistake, not the server's.
    name = type(error).__name__
    if name in ("InvalidArgument", "Fail", "InvalidGraph"):
        return BadRequest(f"onnxruntime rejected the input: {error}")
    return ServerError(f"inference failed: {name}: {error}")
