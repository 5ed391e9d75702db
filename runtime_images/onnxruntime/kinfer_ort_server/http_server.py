"""A small HTTP/1.1 server on asyncio + httptools: keep-alive, pipelining in order, body limits.

The data plane's HTTP hot path is a few hundred bytes in and out; a general web
framework spends more per request on its request/response objects and router than
the model spends computing (a test MLP runs in ~10 us). This layer does only what
the protocol needs and hands each request to one async handler.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus

import httptools

log = logging.getLogger("kinfer_ort_server.http")

# Requests queued on one connection before reading pauses (HTTP/1.1 pipelining).
MAX_PIPELINED = 64
# Bytes one connection may take in before it lets the event loop turn: the loop reads a
# readable socket up to 32 times in a row (libuv), which for a large upload kept other
# connections (health probes) waiting tens of ms on this machine.
READ_BURST_BYTES = 1 << 18
_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


@dataclass(slots=True)
class HttpRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes | bytearray


@dataclass(slots=True)
class HttpResponse:
    status: int = 200
    body: bytes = b""
    content_type: bytes | None = None
    headers: tuple[tuple[bytes, bytes], ...] = ()


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


def render_head(response: HttpResponse, keep_alive: bool) -> bytes:
    parts = [
        b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\n"
        % (response.status, _REASONS.get(response.status, b""), len(response.body))
    ]
    if response.content_type is not None:
        parts.append(b"Content-Type: %s\r\n" % response.content_type)
    for name, value in response.headers:
        parts.append(b"%s: %s\r\n" % (name, value))
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one listener allows a client (flags in cli.py, defaults in docs/data-plane.md)."""

    max_body_bytes: int
    header_timeout_s: float = 10.0  # first byte of a request to the end of its headers
    idle_timeout_s: float = 60.0  # an open connection with no request under way
    max_connections: int = 1024  # open at once on this listener; more are answered 503


@dataclass(slots=True)
class _Connections:
    open: int = 0


class HttpProtocol(asyncio.Protocol):
    """One connection: parses requests, runs the handler, writes responses in request order."""

    def __init__(
        self,
        handler: Handler,
        limits: HttpLimits,
        too_large: Callable[[HttpRequest], HttpResponse],
        connections: _Connections,
    ):
        self._handler = handler
        self._limits = limits
        self._max_body = limits.max_body_bytes
        self._too_large = too_large
        self._connections = connections
        self._counted = False
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._queue: deque[tuple[HttpRequest, bool, bool]] = deque()
        self._running = False
        self._paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._in_message = False
        self._burst = 0
        self._burst_paused = False
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: dict[str, str] = {}
        # One growing buffer, not a list of chunks joined at the end: a single copy of the
        # body, and one block the allocator hands back to the system when it is freed.
        self._body = bytearray()
        self._oversize = False

    # timeouts

    def _arm(self, seconds: float, status: int) -> None:
        self._disarm()
        if seconds > 0 and self._transport is not None:
            self._timer = asyncio.get_running_loop().call_later(seconds, self._expire, status)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, status: int) -> None:
        self._timer = None
        if status:
            self._fail(
                status, b"the request headers did not arrive within --http-header-timeout-secs"
            )
        elif self._transport is not None:
            self._transport.close()

    def _arm_idle(self) -> None:
        self._arm(self._limits.idle_timeout_s, 0)

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        if self._connections.open >= self._limits.max_connections:
            self._fail(503, b"too many open connections (--http-max-connections)")
            return
        self._connections.open += 1
        self._counted = True
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._counted:
            self._connections.open -= 1
            self._counted = False
        self._disarm()
        self._transport = None
        self._queue.clear()
        # Drop the partial body now, and the parser that refers back to this protocol (a
        # cycle only the full garbage collection would find).
        self._reset()
        self._parser = None

    def data_received(self, data: bytes) -> None:
        if self._parser is None:
            return
        self._burst += len(data)
        if self._burst >= READ_BURST_BYTES and not self._burst_paused:
            self._burst_paused = True
            self._transport.pause_reading()
            asyncio.get_running_loop().call_soon(self._end_burst)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, b"protocol upgrades are not supported")
        except httptools.HttpParserError as error:
            self._fail(400, b"malformed HTTP request: " + str(error).encode())

    def _end_burst(self) -> None:
        self._burst = 0
        self._burst_paused = False
        if self._transport is not None and not self._paused:
            self._transport.resume_reading()

    def _fail(self, status: int, message: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            body = b'{"error":"%s"}' % message.replace(b'"', b"'")
            response = HttpResponse(status, body, b"application/json")
            self._transport.write(render_head(response, keep_alive=False) + body)
            self._transport.close()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._reset()
        self._in_message = True
        self._arm(self._limits.header_timeout_s, 408)

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._disarm()
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            self._oversize = True
        elif (
            self._headers.get("expect", "").lower() == "100-continue"
            and self._transport is not None
        ):
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._oversize:
            return
        if len(self._body) + len(body) > self._max_body:
            self._oversize = True
            self._body = bytearray()
        else:
            self._body += body

    def on_message_complete(self) -> None:
        parser = self._parser
        if parser is None:
            return
        path = self._url.split(b"?", 1)[0].decode("latin-1")
        request = HttpRequest(parser.get_method().decode(), path, self._headers, self._body)
        self._queue.append((request, parser.should_keep_alive(), self._oversize))
        self._reset()  # the request owns its body now
        self._in_message = False
        if len(self._queue) > MAX_PIPELINED and self._transport is not None and not self._paused:
            # A client pipelining faster than we answer: stop reading until we catch up.
            self._paused = True
            self._transport.pause_reading()
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._serve_queue())

    async def _serve_queue(self) -> None:
        # Pipelined requests are answered one after the other, in order (HTTP/1.1 rule).
        try:
            while self._queue and self._transport is not None:
                request, keep_alive, oversize = self._queue.popleft()
                if self._paused and len(self._queue) <= MAX_PIPELINED // 2:
                    self._paused = False
                    if not self._burst_paused:
                        self._transport.resume_reading()
                if oversize:
                    response = self._too_large(request)
                    keep_alive = False  # the rest of that body was not read: start clean
                else:
                    try:
                        response = await self._handler(request)
                    except Exception:  # the handler reports its own errors; this is the last guard
                        log.exception("unhandled error on %s %s", request.method, request.path)
                        response = HttpResponse(
                            500, b'{"error":"internal server error"}', b"application/json"
                        )
                transport = self._transport
                if transport is None or transport.is_closing():
                    return
                transport.writelines((render_head(response, keep_alive), response.body))
                del request, response
                if not keep_alive:
                    transport.close()
                    return
            if self._transport is not None and not self._in_message:
                self._arm_idle()
        finally:
            self._running = False


async def start_http_server(
    handler: Handler,
    host: str,
    port: int,
    limits: HttpLimits,
    too_large: Callable[[HttpRequest], HttpResponse],
) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    connections = _Connections()
    return await loop.create_server(
        lambda: HttpProtocol(handler, limits, too_large, connections),
        host,
        port,
        reuse_address=True,
        backlog=1024,
    )
