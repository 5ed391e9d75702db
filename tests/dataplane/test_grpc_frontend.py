"""kinfer-grpc-frontend: what the Go process adds around the server's own gRPC answers.

Every gRPC test that uses `server` or `kinfer_server` already runs through it (and through
grpc.aio); these cover what only the frontend has: its life cycle with the server, the
calls it answers itself, and what the bridge does with what it cannot parse.
"""

from __future__ import annotations

import os
import signal
import socket
import time

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from kinfer_dev.runtime.ort_server import start_ort_server
from kinfer_dev.runtime.repository import write_model_repository
from kinfer_dev.runtime.testmodels import run_reference, sample_input

from .clients import infer
from .conftest import READ_ONLY_MODEL

pytestmark = pytest.mark.slow


def _frontend_pids(server_pid: int) -> list[int]:
    """PIDs of the server's kinfer-grpc-frontend children."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/comm") as comm:
                name = comm.read().strip()
        except OSError:
            continue
        if int(fields[1]) == server_pid and name.startswith("kinfer-grpc"):
            pids.append(int(entry))
    return pids


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def single_model_repo(tier_models, tmp_path):
    repo = tmp_path / "repo"
    write_model_repository(repo, "m", {"fp32": tier_models["fp32"]})
    return repo


@pytest.fixture
def own_server(single_model_repo, tmp_path):
    """A kinfer-ort-server of the test's own (it may be killed) with its one frontend's PID."""
    handle = start_ort_server(
        single_model_repo,
        load_models=["m"],
        work_dir=tmp_path / "work",
        extra_args=["--grpc-frontend=go"],
    )
    try:
        (frontend,) = _frontend_pids(handle.process.pid)
        yield handle, frontend
    finally:
        handle.stop()


def test_the_server_starts_the_frontend_and_stops_it_on_sigterm(single_model_repo, tmp_path):
    handle = start_ort_server(
        single_model_repo,
        load_models=["m"],
        work_dir=tmp_path / "work",
        extra_args=["--grpc-frontend=go", "--grpc-frontend-threads=2"],
    )
    try:
        frontends = _frontend_pids(handle.process.pid)
        assert len(frontends) == 1
        with open(f"/proc/{frontends[0]}/cmdline", "rb") as cmdline:
            assert b"--procs=2" in cmdline.read().split(b"\0")
        output, version = infer(handle, "m", sample_input(2), "grpc")
        assert output.shape == (2, 16) and version == "1"
        assert "gRPC served by" in handle.log_tail()
    finally:
        assert handle.stop() == 0
    assert _wait_gone(frontends[0], 30), "the frontend outlived the server"


def test_a_frontend_that_dies_stops_the_server_with_an_error(own_server):
    handle, frontend = own_server
    os.kill(frontend, signal.SIGKILL)
    # A server whose gRPC port is gone must not go on looking healthy: it exits 1.
    assert handle.process.wait(timeout=60) == 1
    assert "kinfer-grpc-frontend exited with code -9: stopping the server" in handle.log_tail()


def test_a_server_killed_outright_takes_the_frontend_with_it(own_server):
    handle, frontend = own_server
    handle.process.kill()
    handle.process.wait(timeout=30)
    # The bridge closes with the server: the frontend notices and exits by itself.
    assert _wait_gone(frontend, 30), "the frontend outlived a killed server"


def test_a_taken_grpc_port_stops_the_server_with_a_clear_error(single_model_repo, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="exited with code 1") as caught:
            start_ort_server(
                single_model_repo,
                load_models=["m"],
                grpc_port=port,
                work_dir=tmp_path / "work",
                extra_args=["--grpc-frontend=go"],
            )
    message = str(caught.value)
    assert f"cannot listen for gRPC on 127.0.0.1:{port}" in message
    assert "gRPC on 127.0.0.1" in message and "is not served" in message


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (
            ["--grpc-frontend=go", "--grpc-frontend-binary=/nonexistent/kinfer-grpc-frontend"],
            "no executable /nonexistent/kinfer-grpc-frontend",
        ),
        (["--grpc-frontend-binary=/nonexistent/x"], "--grpc-frontend=auto: no executable"),
    ],
    ids=["go-missing", "auto-explicit-missing"],
)
def test_a_missing_frontend_binary_is_a_usage_error(single_model_repo, tmp_path, args, words):
    with pytest.raises(RuntimeError, match="exited with code 2") as caught:
        start_ort_server(
            single_model_repo, load_models=["m"], work_dir=tmp_path / "work", extra_args=args
        )
    assert words in str(caught.value)


def test_methods_the_server_lacks_are_unimplemented(kinfer_server):
    with grpc.insecure_channel(kinfer_server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelStatistics(
                service_pb2.ModelStatisticsRequest(name=READ_ONLY_MODEL), timeout=30
            )
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        other_service = channel.unary_unary("/no.such.Service/Call")
        with pytest.raises(grpc.RpcError) as caught:
            other_service(b"", timeout=30)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # Both leave the server serving.
        assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=30).live


def test_a_payload_that_is_no_protobuf_is_invalid_argument(ort_server):
    with grpc.insecure_channel(ort_server.grpc_url) as channel:
        model_infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as caught:
            model_infer(b"\xff\xff\xff\xff", timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed ModelInferRequest" in caught.value.details()
    output, _ = infer(ort_server, READ_ONLY_MODEL, sample_input(1), "grpc")
    assert output.shape == (1, 16)


def test_many_calls_in_flight_on_one_channel_each_get_their_own_answer(ort_server, tier_models):
    # The bridge answers out of order; each reply must reach the call it belongs to.
    batches = [sample_input(1 + i % 4, seed=500 + i) for i in range(64)]
    with grpc.insecure_channel(ort_server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        futures = []
        for index, batch in enumerate(batches):
            request = service_pb2.ModelInferRequest(model_name=READ_ONLY_MODEL, id=str(index))
            request.inputs.add(name="input", datatype="FP32", shape=list(batch.shape))
            request.raw_input_contents.append(batch.tobytes())
            futures.append(stub.ModelInfer.future(request, timeout=60))
        for index, (batch, future) in enumerate(zip(batches, futures, strict=True)):
            response = future.result()
            assert response.id == str(index)
            output = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(-1, 16)
            np.testing.assert_allclose(
                output, run_reference(tier_models["fp32"], batch), rtol=1e-5, atol=1e-6
            )
