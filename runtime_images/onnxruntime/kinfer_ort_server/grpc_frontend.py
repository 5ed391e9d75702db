"""gRPC through kinfer-grpc-frontend: a Go process speaks HTTP/2 and gRPC, this server the rest.

`grpc.aio` costs 210-275 us of CPU per call before the servicer runs (docs/data-plane.md),
several times the inference of a small model. The frontend (`runtime_images/onnxruntime/
grpc_frontend/`) terminates gRPC and passes each call, still serialized, over a socketpair;
here it is parsed and answered by the same `InferenceServicer` that serves `grpc.aio`, so
both frontends answer alike. The frame format is described in the frontend's bridge.go.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2 as pb

from kinfer_ort_server.busy_poll import BusyPoll
from kinfer_ort_server.grpc_api import InferenceServicer

log = logging.getLogger("kinfer_ort_server.grpc")

BINARY = "kinfer-grpc-frontend"
_HEADER = struct.Struct("<IIB")
_OK = 0
_INTERNAL = grpc.StatusCode.INTERNAL.value[0]
_INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]
_RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
_STREAM_INFER = 11
# Calls started without a task: inference and the quick reads. Repository loads and
# unloads (seconds, on a loader thread) get a task of their own.
_EAGER = frozenset({1, 2, 3, 4, 5, 6, 7, _STREAM_INFER})
# Tag -> (servicer method, request message), as bridge.go's `methods` numbers them.
_UNARY: dict[int, tuple[str, type]] = {
    1: ("ServerLive", pb.ServerLiveRequest),
    2: ("ServerReady", pb.ServerReadyRequest),
    3: ("ModelReady", pb.ModelReadyRequest),
    4: ("ServerMetadata", pb.ServerMetadataRequest),
    5: ("ModelMetadata", pb.ModelMetadataRequest),
    6: ("ModelInfer", pb.ModelInferRequest),
    7: ("ModelConfig", pb.ModelConfigRequest),
    8: ("RepositoryIndex", pb.RepositoryIndexRequest),
    9: ("RepositoryModelLoad", pb.RepositoryModelLoadRequest),
    10: ("RepositoryModelUnload", pb.RepositoryModelUnloadRequest),
}


def find_binary(explicit: str | None = None) -> str | None:
    """The frontend's path: `explicit`, else on PATH, else beside this Python (a venv's bin)."""
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which(BINARY)
    if found:
        return found
    beside = Path(sys.executable).parent / BINARY
    return str(beside) if os.access(beside, os.X_OK) else None


class _CallContext:
    """The part of `grpc.aio.ServicerContext` the servicer uses: an error to answer with."""

    __slots__ = ("code", "details")

    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details


class BridgeProtocol(asyncio.Protocol):
    """Reads call frames, answers each with a reply frame; replies are written in batches."""

    def __init__(
        self, servicer: InferenceServicer, max_message_bytes: int, busy_poll_s: float = 0.0
    ) -> None:
        self.servicer = servicer
        # The frontend's gRPC message limit: no call frame is longer, no reply may be.
        self.max_message_bytes = max_message_bytes
        self.listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._buffer = bytearray()
        self._replies: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task] = set()  # held: the loop keeps only weak references
        self._receiving = False
        # After each write of answers the loop polls for the next call instead of sleeping.
        self.busy_poll = BusyPoll(self._loop, busy_poll_s)

    def connection_made(self, transport) -> None:
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.listening.done():
            self.listening.set_exception(ConnectionError(f"{BINARY} closed the bridge"))

    def data_received(self, data: bytes) -> None:
        self._receiving = True
        try:
            self._receive(data)
        finally:
            self._receiving = False
        self._flush()  # what finished here goes out now, in one write

    def _receive(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        offset = 0
        available = len(buffer)
        while available - offset >= _HEADER.size:
            size, call_id, tag = _HEADER.unpack_from(buffer, offset)
            if size > self.max_message_bytes:
                log.error("%s sent a %d byte frame: closing the bridge", BINARY, size)
                self._transport.close()
                return
            end = offset + _HEADER.size + size
            if end > available:
                break
            payload = bytes(buffer[offset + _HEADER.size : end])
            offset = end
            if call_id == 0:
                if not self.listening.done():
                    self.listening.set_result(payload.decode())
                continue
            answer = self._answer(call_id, tag, payload)
            if tag in _EAGER:
                # Start it here rather than in a task (Python 3.12's eager tasks): most
                # calls finish before this returns; one that waits (a batch, the thread
                # pool) goes on in a task from where it stopped.
                try:
                    waiting_on = answer.send(None)
                except StopIteration:
                    continue
                answer = _resume(answer, waiting_on)
            task = self._loop.create_task(answer)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if offset:
            del buffer[:offset]

    async def _answer(self, call_id: int, tag: int, payload: bytes) -> None:
        try:
            code, body = await self._dispatch(tag, payload)
        except Exception as error:  # the server must answer and stay up whatever happens
            log.exception("gRPC call (bridge tag %d) failed", tag)
            code, body = _INTERNAL, f"internal error: {type(error).__name__}: {error}".encode()
        if len(body) > self.max_message_bytes:
            # As grpc.aio's max_send_message_length: this call fails, the bridge goes on.
            code, body = (
                _RESOURCE_EXHAUSTED,
                f"the response of {len(body)} bytes is over the gRPC message limit of "
                f"{self.max_message_bytes} bytes (--max-request-bytes + 1 MiB)".encode(),
            )
        self._reply(call_id, code, body)

    async def _dispatch(self, tag: int, payload: bytes) -> tuple[int, bytes]:
        servicer = self.servicer
        if tag == _STREAM_INFER:
            request = _parse(pb.ModelInferRequest, payload)
            if isinstance(request, str):
                return _OK, pb.ModelStreamInferResponse(error_message=request).SerializeToString()
            response = await servicer.stream_response(request)
            return _OK, response.SerializeToString()
        entry = _UNARY.get(tag)
        if entry is None:
            return _INTERNAL, f"unknown bridge tag {tag}".encode()
        name, message = entry
        request = _parse(message, payload)
        if isinstance(request, str):
            return _INVALID_ARGUMENT, request.encode()
        context = _CallContext()
        response = await getattr(servicer, name)(request, context)
        if context.code is not None and context.code is not grpc.StatusCode.OK:
            return context.code.value[0], context.details.encode()
        return _OK, response.SerializeToString()

    def _reply(self, call_id: int, code: int, body: bytes) -> None:
        if not self._replies and not self._receiving:
            # One write per loop iteration for every reply ready by then (data_received
            # writes what its calls answered at once when it is done).
            self._loop.call_soon(self._flush)
        self._replies.append(_HEADER.pack(len(body), call_id, code))
        self._replies.append(body)

    def _flush(self) -> None:
        if not self._replies:
            return
        replies, self._replies = self._replies, []
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(replies))
            self.busy_poll.kick()


async def _resume(coroutine, waiting_on) -> None:
    """Run a coroutine that suspended on `waiting_on` (what it yielded) to its end."""
    while True:
        try:
            if waiting_on is None:  # a bare yield (asyncio.sleep(0)): give the loop a turn
                await asyncio.sleep(0)
            else:
                await asyncio.wait([waiting_on])  # the coroutine reads the outcome itself
        except asyncio.CancelledError:
            coroutine.close()
            raise
        try:
            waiting_on = coroutine.send(None)
        except StopIteration:
            return


def _parse(message: type, payload: bytes):
    """The request message, or the error text for a payload that is not one."""
    try:
        return message.FromString(payload)
    except DecodeError as error:
        return f"malformed {message.__name__}: {error}"


@dataclass
class GrpcFrontend:
    """The running frontend process and its bridge."""

    process: asyncio.subprocess.Process
    protocol: BridgeProtocol
    transport: asyncio.BaseTransport
    address: str

    async def stop(self, timeout_s: float) -> None:
        """SIGTERM: the frontend finishes in-flight calls (bounded), then exits."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout_s + 5)
            except TimeoutError:
                log.warning("%s did not stop within %.0f s: killing it", BINARY, timeout_s + 5)
                self.process.kill()
                await self.process.wait()
        self.transport.close()


@dataclass(frozen=True)
class GrpcConnections:
    """What a gRPC client is held to, on both frontends (flags in cli.py)."""

    max_tensor_bytes: int = 64 * 1024 * 1024  # raw tensors of one request
    keepalive_time_ms: int = 7_200_000  # ping a client silent this long (Triton's default)
    keepalive_timeout_ms: int = 20_000  # close when the ping is not answered within this
    idle_timeout_s: float = 300.0  # close a connection without calls this long; 0: never

    def frontend_args(self) -> list[str]:
        return [
            f"--max-request-bytes={self.max_tensor_bytes}",
            f"--keepalive-time={self.keepalive_time_ms}ms",
            f"--keepalive-timeout={self.keepalive_timeout_ms}ms",
            f"--idle-timeout={self.idle_timeout_s}s",
        ]

    def grpcio_options(self) -> list[tuple[str, int]]:
        options = [
            ("grpc.keepalive_time_ms", self.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", self.keepalive_timeout_ms),
        ]
        if self.idle_timeout_s > 0:
            options.append(("grpc.max_connection_idle_ms", int(self.idle_timeout_s * 1000)))
        return options


def _listen_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def start_grpc_frontend(
    binary: str,
    servicer: InferenceServicer,
    host: str,
    port: int,
    max_message_bytes: int,
    exit_timeout_s: float,
    start_timeout_s: float = 30.0,
    threads: int = 1,
    busy_poll_s: float = 0.0,
    connections: GrpcConnections | None = None,
) -> GrpcFrontend:
    """Start the frontend on host:port and wait until it listens; raises RuntimeError if not."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        process = await asyncio.create_subprocess_exec(
            binary,
            f"--listen={_listen_address(host, port)}",
            f"--bridge-fd={theirs.fileno()}",
            f"--max-message-bytes={max_message_bytes}",
            f"--exit-timeout={exit_timeout_s}s",
            f"--procs={threads}",
            *(connections or GrpcConnections()).frontend_args(),
            pass_fds=(theirs.fileno(),),
            stdin=asyncio.subprocess.DEVNULL,
            # Its own session: a signal to this server's process group (Ctrl-C, a
            # supervisor) reaches this server alone, which then stops the frontend in
            # order (`GrpcFrontend.stop`). If this server dies, the bridge closes and
            # the frontend exits by itself.
            start_new_session=True,
        )
    except OSError as error:
        ours.close()
        raise RuntimeError(f"cannot start {binary}: {error}") from error
    finally:
        theirs.close()
    transport, protocol = await loop.connect_accepted_socket(
        lambda: BridgeProtocol(servicer, max_message_bytes, busy_poll_s), ours
    )
    exited = loop.create_task(process.wait())
    try:
        done, _ = await asyncio.wait(
            {protocol.listening, exited},
            timeout=start_timeout_s,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if protocol.listening in done and protocol.listening.exception() is None:
            address = protocol.listening.result()
            return GrpcFrontend(process, protocol, transport, address)
        reason = (
            f"exited with code {process.returncode} (its log is above)"
            if exited.done()
            else f"did not listen within {start_timeout_s:.0f} s"
        )
    finally:
        exited.cancel()
    if process.returncode is None:
        process.kill()
        await process.wait()
    transport.close()
    raise RuntimeError(
        f"{BINARY} ({binary}) {reason}: gRPC on {_listen_address(host, port)} is not served"
    )
