"""A bounded open-loop load generator for Open Inference Protocol v2 endpoints.

Used by the e2e suite (autoscaling and tier switching under load) and the
demo. It sends at a fixed rate (requests per second, changeable while it
runs), spreads requests over the endpoints a callback returns (the Ready pods,
refreshed as they come and go), and records every outcome. It only ever talks
to loopback addresses, and stops at its deadline or request budget.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp


def require_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"load target {url!r}: only loopback addresses (127.0.0.0/8) are allowed")


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)  # the first few, for the test's message
    latencies_s: list[float] = field(default_factory=list)

    def record(self, latency_s: float, error: str | None) -> None:
        if error is None:
            self.ok += 1
            self.latencies_s.append(latency_s)
        else:
            self.failed += 1
            if len(self.errors) < 20:
                self.errors.append(error)

    def p95_ms(self) -> float | None:
        if not self.latencies_s:
            return None
        ordered = sorted(self.latencies_s)
        return 1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


class LoadGenerator:
    """Runs in its own thread with its own event loop; `start()`, `set_rate()`, `stop()`.

    `body` is a JSON request (a dict) or a ready request payload (bytes, e.g. with
    Triton's binary tensor extension, sent with `headers`).
    """

    def __init__(
        self,
        endpoints: Callable[[], list[str]],
        model: str,
        body: dict[str, Any] | bytes,
        *,
        rate_qps: float,
        max_duration_s: float,
        max_requests: int = 200_000,
        max_in_flight: int = 256,
        headers: dict[str, str] | None = None,
        timeout_s: float = 30.0,
        refresh_s: float = 1.0,
    ) -> None:
        self._endpoints = endpoints
        self._path = f"/v2/models/{model}/infer"
        # Encoded once: the generator's own CPU must not limit the rate it can offer.
        self._body = body if isinstance(body, bytes) else json.dumps(body).encode()
        self._headers = {"Content-Type": "application/json"}
        if isinstance(body, bytes):
            self._headers = dict(headers or {})
        self.rate_qps = rate_qps
        self._deadline = 0.0
        self._max_duration_s = max_duration_s
        self._max_requests = max_requests
        self._max_in_flight = max_in_flight
        self._timeout_s = timeout_s
        self._refresh_s = refresh_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.result = LoadResult()

    def set_rate(self, rate_qps: float) -> None:
        self.rate_qps = rate_qps

    def start(self) -> LoadGenerator:
        self._deadline = time.monotonic() + self._max_duration_s
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 60.0) -> LoadResult:
        """Stop sending, wait for requests in flight, return the result."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        return self.result

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self._timeout_s)
        connector = aiohttp.TCPConnector(limit=self._max_in_flight)
        in_flight: set[asyncio.Task] = set()
        slots = asyncio.Semaphore(self._max_in_flight)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            targets: list[str] = []
            refreshed = 0.0
            next_send = time.monotonic()
            turn = 0
            while not self._stop.is_set() and self.result.sent < self._max_requests:
                now = time.monotonic()
                if now >= self._deadline:
                    break
                if now - refreshed >= self._refresh_s:
                    fresh = await asyncio.to_thread(self._endpoints)
                    for url in fresh:
                        require_loopback(url)
                    targets, refreshed = fresh, now
                if self.rate_qps <= 0 or not targets:
                    await asyncio.sleep(0.05)
                    next_send = time.monotonic()
                    continue
                if now < next_send:
                    await asyncio.sleep(min(next_send - now, 0.05))
                    continue
                next_send += 1.0 / self.rate_qps
                # Never fall behind by more than a second: no burst after a stall.
                next_send = max(next_send, now - 1.0)
                url = targets[turn % len(targets)] + self._path
                turn += 1
                await slots.acquire()
                task = asyncio.create_task(self._one(session, url, slots))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                self.result.sent += 1
            if in_flight:
                await asyncio.wait(in_flight, timeout=self._timeout_s + 5)

    async def _one(
        self, session: aiohttp.ClientSession, url: str, slots: asyncio.Semaphore
    ) -> None:
        started = time.monotonic()
        try:
            async with session.post(url, data=self._body, headers=self._headers) as response:
                payload = await response.read()
                error = None if response.status == 200 else f"{response.status}: {payload[:200]!r}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            slots.release()
        self.result.record(time.monotonic() - started, error)
