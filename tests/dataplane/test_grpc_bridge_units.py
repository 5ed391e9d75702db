"""The server's end of the gRPC bridge (`kinfer_ort_server.grpc_frontend.BridgeProtocol`).

Driven over a real socketpair with a stand-in servicer, to reach what the real servers
rarely show: calls that finish at once and calls that wait, answered out of order; a
servicer that raises; frames split across reads.
"""

from __future__ import annotations

import asyncio
import socket
import struct

import grpc
from tritonclient.grpc import service_pb2 as pb

from kinfer_ort_server.grpc_frontend import BridgeProtocol

HEADER = struct.Struct("<IIB")
MODEL_INFER = 6
SERVER_LIVE = 1
STREAM_INFER = 11


class StandInServicer:
    """ModelInfer by model name: 'boom' raises, 'slow' waits for `release`, 'bad' fails
    with INVALID_ARGUMENT, anything else answers at once."""

    def __init__(self) -> None:
        self.release = asyncio.get_running_loop().create_future()

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ModelInfer(self, request, context):
        if request.model_name == "boom":
            raise ValueError("kaput")
        if request.model_name == "slow":
            await self.release
        if request.model_name == "huge":
            return pb.ModelInferResponse(raw_output_contents=[b"\0" * 5000])
        if request.model_name == "bad":
            context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
            context.set_details("input 'x': shape [1] is wrong")
            return pb.ModelInferResponse()
        return pb.ModelInferResponse(model_name=request.model_name, id=request.id)

    async def stream_response(self, request):
        return pb.ModelStreamInferResponse(error_message=f"stream {request.id}")


def _call(call_id: int, tag: int, message) -> bytes:
    payload = message.SerializeToString() if hasattr(message, "SerializeToString") else message
    return HEADER.pack(len(payload), call_id, tag) + payload


async def _read_replies(reader: asyncio.StreamReader, count: int) -> dict[int, tuple[int, bytes]]:
    replies = {}
    for _ in range(count):
        size, call_id, code = HEADER.unpack(await reader.readexactly(HEADER.size))
        replies[call_id] = (code, await reader.readexactly(size))
    return replies


def _run(scenario) -> None:
    async def main() -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        loop = asyncio.get_running_loop()
        servicer = StandInServicer()
        transport, protocol = await loop.connect_accepted_socket(
            lambda: BridgeProtocol(servicer, 4096), ours
        )
        reader, writer = await asyncio.open_unix_connection(sock=theirs)
        try:
            await asyncio.wait_for(scenario(servicer, protocol, reader, writer), 30)
        finally:
            writer.close()
            transport.close()

    asyncio.run(main())


def test_a_waiting_call_does_not_hold_up_the_ones_behind_it():
    async def scenario(servicer, protocol, reader, writer):
        writer.write(
            _call(1, MODEL_INFER, pb.ModelInferRequest(model_name="slow", id="a"))
            + _call(2, MODEL_INFER, pb.ModelInferRequest(model_name="fast", id="b"))
            + _call(3, SERVER_LIVE, pb.ServerLiveRequest())
        )
        first = await _read_replies(reader, 2)
        assert set(first) == {2, 3}  # answered while call 1 still waits
        assert pb.ModelInferResponse.FromString(first[2][1]).id == "b"
        assert pb.ServerLiveResponse.FromString(first[3][1]).live
        servicer.release.set_result(None)
        (code, body) = (await _read_replies(reader, 1))[1]
        assert code == 0 and pb.ModelInferResponse.FromString(body).id == "a"

    _run(scenario)


def test_errors_become_status_codes_and_the_bridge_goes_on():
    async def scenario(servicer, protocol, reader, writer):
        writer.write(
            _call(7, MODEL_INFER, pb.ModelInferRequest(model_name="boom"))
            + _call(8, MODEL_INFER, pb.ModelInferRequest(model_name="bad"))
            + _call(9, MODEL_INFER, b"\xff\xff\xff")
            + _call(10, 99, b"")
            + _call(11, STREAM_INFER, pb.ModelInferRequest(id="s"))
            + _call(12, MODEL_INFER, pb.ModelInferRequest(model_name="huge"))
            + _call(13, MODEL_INFER, pb.ModelInferRequest(model_name="fine", id="ok"))
        )
        replies = await _read_replies(reader, 7)
        assert replies[7][0] == grpc.StatusCode.INTERNAL.value[0]
        assert b"internal error: ValueError: kaput" in replies[7][1]
        assert replies[8] == (
            grpc.StatusCode.INVALID_ARGUMENT.value[0],
            b"input 'x': shape [1] is wrong",
        )
        assert replies[9][0] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert replies[9][1].startswith(b"malformed ModelInferRequest")
        assert replies[10][0] == grpc.StatusCode.INTERNAL.value[0]
        assert b"unknown bridge tag 99" in replies[10][1]
        assert pb.ModelStreamInferResponse.FromString(replies[11][1]).error_message == "stream s"
        # A response over the frontend's message limit fails its call, not the bridge.
        assert replies[12][0] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert b"over the gRPC message limit of 4096 bytes" in replies[12][1]
        assert pb.ModelInferResponse.FromString(replies[13][1]).id == "ok"

    _run(scenario)


def test_frames_split_across_reads_and_the_hello():
    async def scenario(servicer, protocol, reader, writer):
        hello = HEADER.pack(len(b"127.0.0.1:8001"), 0, 0) + b"127.0.0.1:8001"
        calls = hello + b"".join(
            _call(i, MODEL_INFER, pb.ModelInferRequest(model_name="m", id=str(i)))
            for i in range(1, 21)
        )
        for start in range(0, len(calls), 7):  # 7-byte pieces: headers and payloads split
            writer.write(calls[start : start + 7])
            await writer.drain()
            await asyncio.sleep(0)
        assert await protocol.listening == "127.0.0.1:8001"
        replies = await _read_replies(reader, 20)
        assert {
            call_id: pb.ModelInferResponse.FromString(body).id
            for call_id, (_, body) in replies.items()
        } == {i: str(i) for i in range(1, 21)}

    _run(scenario)
