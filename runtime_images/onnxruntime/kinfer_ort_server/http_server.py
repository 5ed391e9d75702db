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
_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


@dataclass(slots=True)
class HttpRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


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


class HttpProtocol(asyncio.Protocol):
    """One connection: parses requests, runs the handler, writes responses in request order."""

    def __init__(
        self,
        handler: Handler,
        max_body_bytes: int,
        too_large: Callable[[HttpRequest], HttpResponse],
    ):
        self._handler = handler
        self._max_body = max_body_bytes
        self._too_large = too_large
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._queue: deque[tuple[HttpRequest, bool, bool]] = deque()
        self._running = False
        self._paused = False
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: dict[str, str] = {}
        self._chunks: list[bytes] = []
        self._size = 0
        self._oversize = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._queue.clear()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, b"protocol upgrades are not supported")
        except httptools.HttpParserError as error:
            self._fail(400, b"malformed HTTP request: " + str(error).encode())

    def _fail(self, status: int, message: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            body = b'{"error":"%s"}' % message.replace(b'"', b"'")
            response = HttpResponse(status, body, b"application/json")
            self._transport.write(render_head(response, keep_alive=False) + body)
            self._transport.close()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._reset()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
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
        self._size += len(body)
        if self._size > self._max_body:
            self._oversize = True
            self._chunks = []
        else:
            self._chunks.append(body)

    def on_message_complete(self) -> None:
        path = self._url.split(b"?", 1)[0].decode("latin-1")
        body = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        request = HttpRequest(self._parser.get_method().decode(), path, self._headers, body)
        self._queue.append((request, self._parser.should_keep_alive(), self._oversize))
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
                if not keep_alive:
                    transport.close()
                    return
        finally:
            self._running = False


async def start_http_server(
    handler: Handler,
    host: str,
    port: int,
    max_body_bytes: int,
    too_large: Callable[[HttpRequest], HttpResponse],
) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: HttpProtocol(handler, max_body_bytes, too_large),
        host,
        port,
        reuse_address=True,
        backlog=1024,
    )
