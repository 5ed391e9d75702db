"""kinfer-ort-server's parts as functions: batcher, config completion, flags, the HTTP layer."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc

from kinfer_ort_server.batcher import Batcher
from kinfer_ort_server.cli import build_parser, options_from_args
from kinfer_ort_server.config import complete_config, read_config, select_versions
from kinfer_ort_server.errors import LoadFailed

from .conftest import READ_ONLY_MODEL


def _double(feeds):
    return [feeds["x"] * 2.0]


async def _submit_all(batcher: Batcher, arrays: list[np.ndarray]):
    return await asyncio.gather(*(batcher.submit({"x": a}, a.shape[0]) for a in arrays))


@pytest.mark.parametrize("inline_max_s", [0.0, 1.0], ids=["thread-pool", "inline"])
def test_batcher_batches_concurrent_requests_and_returns_each_its_rows(inline_max_s):
    sizes: list[int] = []
    with ThreadPoolExecutor(2) as executor:
        batcher = Batcher(
            _double,
            executor,
            max_batch_size=8,
            max_queue_delay_s=0.0,
            instances=1,
            on_batch=sizes.append,
            inline_max_s=inline_max_s,
        )
        arrays = [np.full((1 + i % 3, 4), float(i), np.float32) for i in range(20)]
        results = asyncio.run(_submit_all(batcher, arrays))
    for array, (outputs, queue_s) in zip(arrays, results, strict=True):
        np.testing.assert_array_equal(outputs[0], array * 2.0)
        assert queue_s >= 0
    assert sum(sizes) == sum(a.shape[0] for a in arrays)
    assert max(sizes) <= 8
    if inline_max_s == 0.0:
        assert len(sizes) < len(arrays), (
            "requests queued behind a running batch are batched together"
        )


def test_batcher_keeps_shapes_apart_and_fails_only_the_bad_batch():
    def run(feeds):
        if feeds["x"].shape[1] == 3:
            raise ValueError("three columns are not allowed")
        return [feeds["x"] + 1]

    with ThreadPoolExecutor(1) as executor:
        batcher = Batcher(run, executor, max_batch_size=4, max_queue_delay_s=0.0, instances=1)

        async def scenario():
            good = [batcher.submit({"x": np.zeros((1, 2), np.float32)}, 1) for _ in range(3)]
            bad = batcher.submit({"x": np.zeros((1, 3), np.float32)}, 1)
            return await asyncio.gather(*good, bad, return_exceptions=True)

        results = asyncio.run(scenario())
    assert all(isinstance(r, tuple) and r[0][0].shape == (1, 2) for r in results[:3])
    assert not isinstance(results[3], tuple)
    assert "three columns" in str(results[3])


def test_batcher_waits_up_to_the_queue_delay_only_under_load():
    sizes: list[int] = []
    with ThreadPoolExecutor(1) as executor:
        batcher = Batcher(
            _double,
            executor,
            max_batch_size=8,
            max_queue_delay_s=0.05,
            instances=1,
            on_batch=sizes.append,
        )

        async def scenario():
            await batcher.submit({"x": np.ones((1, 1), np.float32)}, 1)  # alone: runs at once
            return await _submit_all(batcher, [np.ones((1, 1), np.float32)] * 6)

        asyncio.run(asyncio.wait_for(scenario(), timeout=30))
    assert sizes[0] == 1
    assert sum(sizes) == 7


def test_complete_config_fills_io_from_onnx_and_checks_declared_io(tier_models, tmp_path):
    session = ort.InferenceSession(str(tier_models["fp32"]), providers=["CPUExecutionProvider"])
    config = read_config(
        tmp_path, "m", json.dumps({"version_policy": {"specific": {"versions": [1]}}})
    )
    complete_config(config, session, default_max_batch_size=4, default_queue_delay_us=100)
    assert (
        config.max_batch_size == 4 and config.dynamic_batching.max_queue_delay_microseconds == 100
    )
    assert [(t.name, mc.DataType.Name(t.data_type), list(t.dims)) for t in config.input] == [
        ("input", "TYPE_FP32", [64])
    ]
    assert [t.name for t in config.output] == ["output"]

    wrong = read_config(
        tmp_path,
        "m",
        json.dumps(
            {
                "max_batch_size": 2,
                "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [63]}],
            }
        ),
    )
    with pytest.raises(LoadFailed, match=r"dims \[63\]"):
        complete_config(wrong, session, 4, 0)
    with pytest.raises(LoadFailed, match="config name 'other'"):
        read_config(tmp_path, "m", json.dumps({"name": "other"}))
    with pytest.raises(LoadFailed, match="platform 'tensorrt_plan'"):
        read_config(tmp_path, "m", json.dumps({"platform": "tensorrt_plan"}))


def test_version_policies_select_like_triton():
    def policy(value: dict) -> mc.ModelConfig:
        return json_format.ParseDict({"name": "m", "version_policy": value}, mc.ModelConfig())

    available = [1, 2, 3]
    assert select_versions(mc.ModelConfig(name="m"), available) == [3]
    assert select_versions(policy({"latest": {"num_versions": 2}}), available) == [2, 3]
    assert select_versions(policy({"all": {}}), available) == [1, 2, 3]
    assert select_versions(policy({"specific": {"versions": [2]}}), available) == [2]
    with pytest.raises(LoadFailed, match=r"versions=\[4\]"):
        select_versions(policy({"specific": {"versions": [4]}}), available)
    with pytest.raises(LoadFailed, match="no version directory"):
        select_versions(policy({"all": {}}), [])


def test_flags_mirror_tritonserver_and_bad_values_name_the_flag(tmp_path):
    parser = build_parser()
    args = parser.parse_args(
        [
            f"--model-repository={tmp_path}",
            "--model-control-mode=explicit",
            "--load-model=a",
            "--load-model=b",
            "--http-address=127.0.0.1",
            "--http-port=18000",
            "--grpc-port=18001",
            "--metrics-port=18002",
        ]
    )
    options = options_from_args(args)
    assert options.load_models == ("a", "b") and options.metrics_address == "127.0.0.1"
    assert options.grpc_frontend_busy_poll_us == 500  # on by default (docs/data-plane.md)
    assert (options.http_port, options.grpc_port, options.metrics_port) == (18000, 18001, 18002)
    for argv, flag in (
        (["--load-model=a"], "--load-model needs --model-control-mode=explicit"),
        (["--intra-op-threads=-1"], "--intra-op-threads=-1"),
        (["--max-request-bytes=0"], "--max-request-bytes=0"),
        (["--grpc-frontend-threads=-1"], "--grpc-frontend-threads=-1"),
        (["--grpc-frontend-busy-poll-us=-1"], "--grpc-frontend-busy-poll-us=-1 must be >= 0"),
        (["--grpc-frontend-busy-poll-us=100001"], "must be <= 100000"),
    ):
        with pytest.raises(ValueError, match=flag):
            options_from_args(parser.parse_args([f"--model-repository={tmp_path}", *argv]))
    with pytest.raises(ValueError, match="--model-repository="):
        options_from_args(parser.parse_args([f"--model-repository={tmp_path / 'missing'}"]))


def test_http_pipelining_in_order_and_expect_100_continue(ort_server):
    # Through the real server: a pipelined pair of requests on one connection is answered
    # in order, and `Expect: 100-continue` (curl's habit for bodies > 1 KiB) is honoured.
    host, port = ort_server.host, ort_server.http_port
    body = json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}
    )
    request = (
        f"POST /v2/models/{READ_ONLY_MODEL}/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()
    ready = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(request + ready)
        received = _read_all(sock)
    assert received.count(b"HTTP/1.1 200 OK") == 2
    assert received.index(b'"model_name":"mlp"') < received.rindex(b"HTTP/1.1 200 OK")

    with socket.create_connection((host, port), timeout=30) as sock:
        head = request.split(b"\r\n\r\n")[0].replace(b"Host: x", b"Host: x\r\nExpect: 100-continue")
        sock.sendall(head + b"\r\n\r\n")
        assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body.encode())
        assert b"HTTP/1.1 200 OK" in sock.recv(65536)


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_concurrent_loads_of_one_model_are_serialised(ort_server):
    # Several switches at once end with one of them in force and nothing failed.
    import tritonclient.grpc as grpcclient

    from kinfer.runtime.switch import active_version, select_version

    from .conftest import SWITCH_MODEL

    errors: list[BaseException] = []

    def switch(version: int) -> None:
        try:
            select_version(ort_server.grpc_url, SWITCH_MODEL, version, timeout_s=60)
        except BaseException as error:  # collected: the assertion below reports it
            errors.append(error)

    threads = [threading.Thread(target=switch, args=(1 + i % 3,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert active_version(ort_server.grpc_url, SWITCH_MODEL) in (1, 2, 3)
    client = grpcclient.InferenceServerClient(ort_server.grpc_url)
    try:
        assert client.is_model_ready(SWITCH_MODEL)
    finally:
        client.close()
    select_version(ort_server.grpc_url, SWITCH_MODEL, 1, timeout_s=60)


def test_a_long_pipeline_is_answered_in_full(ort_server):
    # More requests than the server queues before it pauses reading (64): all are answered.
    live = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    last = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection((ort_server.host, ort_server.http_port), timeout=60) as sock:
        sock.sendall(live * 199 + last)
        received = _read_all(sock)
    assert received.count(b"HTTP/1.1 200 OK") == 200


def test_pending_metrics_match_prometheus_observe():
    # The hot path counts into plain buckets that a scrape folds into prometheus_client's
    # children (private layout): the exposition must equal prometheus' own observe().
    from prometheus_client import generate_latest

    from kinfer_ort_server.metrics import LATENCY_BUCKETS_S, Metrics

    fast, reference = Metrics(), Metrics()
    series = fast.for_version("m", "1", "fp32")
    labels = ("m", "1", "fp32")
    reference.requests.labels(*labels).inc(0)
    values = [0.0, 5e-5, *LATENCY_BUCKETS_S, 0.00031, 20.0, -1.0]
    for value in values:
        series.success(value)
        series.queue_duration.observe(value / 2)
        series.batch_size.observe(3)
        reference.requests.labels(*labels).inc()
        reference.request_duration.labels(*labels).observe(value)
        reference.queue_duration.labels(*labels).observe(value / 2)
        reference.batch_size.labels(*labels).observe(3)
    series.failure("bad_request")
    reference.requests.labels(*labels).inc()
    reference.failures.labels(*labels, "bad_request").inc()

    def samples(metrics: Metrics) -> list[str]:
        # _created timestamps differ between the two registries; everything else must not.
        return [
            line
            for line in generate_latest(metrics.registry).decode().splitlines()
            if "_created" not in line
            and not line.startswith(("kinfer_inference_inflight", "kinfer_inference_arrival"))
        ]

    assert samples(fast) == samples(reference)
    assert samples(fast) == samples(reference), "a second scrape adds nothing"


def test_arrival_rate_counts_the_whole_slots_of_the_last_second():
    from kinfer_ort_server.metrics import ARRIVAL_SLOTS, ArrivalRate

    rate = ArrivalRate()
    slot = 1 / ARRIVAL_SLOTS
    base = 1000.0
    assert rate.per_second(base) == 0.0
    # 30 requests spread over 0.3 s from base, 5 in the slot that is still filling at the read.
    for index in range(30):
        rate.arrived(base + index * 0.01)
    for _ in range(5):
        rate.arrived(base + 0.35)
    assert rate.per_second(base + 0.35) == 30.0, "the partial slot is not read"
    assert rate.per_second(base + 0.45) == 35.0
    # Slots older than a second drop out, slot by slot.
    assert rate.per_second(base + 1.05) == 35.0
    assert rate.per_second(base + 1.15) == 35.0 - 10.0
    assert rate.per_second(base + 1.35) == 5.0
    assert rate.per_second(base + 1.45) == 0.0
    # A slot reused a second later starts again from zero.
    rate.arrived(base + 1.02)
    assert rate.per_second(base + 1.02 + slot) == 1.0 + 20.0 + 5.0


def test_arrival_rate_is_shared_by_every_load_of_a_version():
    from kinfer_ort_server.metrics import Metrics

    metrics = Metrics()
    first, reload = metrics.for_version("m", "1", "fp32"), metrics.for_version("m", "1", "fp32")
    assert first.arrivals is reload.arrivals
    assert metrics.for_version("m", "2", "int8").arrivals is not first.arrivals


def test_run_estimate_ignores_one_slow_run_but_follows_a_slower_model(monkeypatch):
    # A thread-pool run is timed until its thread gets the GIL back (up to 5 ms late under
    # load): one such run must not push a 10 us model off the event loop for good.
    import kinfer_ort_server.batcher as batcher_module

    clock = [0.0]
    durations: list[float] = []

    def run(feeds):
        clock[0] += durations.pop(0)
        return [feeds["x"]]

    monkeypatch.setattr(batcher_module.time, "perf_counter", lambda: clock[0])
    batcher = Batcher(run, None, 4, 0.0, 1, inline_max_s=100e-6)
    feeds = {"x": np.zeros((1, 2), np.float32)}
    durations.extend([10e-6, 5e-3, 10e-6])
    batcher._timed_run(feeds)
    batcher._timed_run(feeds)
    assert batcher.run_now(feeds, 1) is not None, "one late run: still inline"
    durations.extend([1e-3] * 15)
    for _ in range(15):
        batcher._timed_run(feeds)
    assert batcher.run_now(feeds, 1) is None, "a model that got slower leaves the loop"
