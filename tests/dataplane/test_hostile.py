"""Hostile requests against a real kinfer-ort-server: each gets its status, and the server's
memory (read from /proc/<pid>/status of the server process) stays bounded.

A server of its own, with the default --max-request-bytes (64 MiB, as deployed) and short
timeouts and connection limit, so that slowloris and idle connections end within the test.
"""

from __future__ import annotations

import json
import selectors
import socket
import time

import pytest

from kinfer_dev.runtime.hostile import (
    MiB,
    aborted_upload,
    empty_lists_body,
    exchange,
    peak_bytes,
    post,
    probe_during,
    read_response,
    reset_peak,
    rss_bytes,
    wait_rss_settles,
    zeros_body,
)
from kinfer_dev.runtime.ort_server import start_ort_server

from .clients import scrape
from .conftest import READ_ONLY_MODEL, STARTUP_MODELS

pytestmark = pytest.mark.slow

HEADER_TIMEOUT_S = 1
IDLE_TIMEOUT_S = 5
MAX_CONNECTIONS = 100
INFER = f"/v2/models/{READ_ONLY_MODEL}/infer"
# Allowed growth of the peak RSS over the RSS before a request, beyond the body itself and
# 4x its valid tensor bytes (the interpreter's and allocator's own, measured: under 20 MiB).
FIXED_OVERHEAD = 48 * MiB
# Allowed RSS left behind once a request's connection closed.
LEFT_BEHIND = 16 * MiB


@pytest.fixture(scope="module")
def guarded(ort_repository, tmp_path_factory):
    handle = start_ort_server(
        ort_repository,
        load_models=STARTUP_MODELS,
        work_dir=tmp_path_factory.mktemp("ort-hostile"),
        extra_args=[
            "--allow-grpc=false",
            f"--http-header-timeout-secs={HEADER_TIMEOUT_S}",
            f"--http-idle-timeout-secs={IDLE_TIMEOUT_S}",
            f"--http-max-connections={MAX_CONNECTIONS}",
        ],
        ready_timeout_s=120,
    )
    yield handle
    handle.stop()


def _input(**fields) -> dict:
    entry = {"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}
    entry.update(fields)
    return entry


def _body(**fields) -> bytes:
    payload = {"inputs": [_input()]}
    payload.update(fields)
    return json.dumps(payload).encode()


_HEADER = json.dumps({"inputs": [_input(data=None, parameters={"binary_data_size": 256})]}).encode()
_TENSOR = b"\0" * 256


def _binary(header_length: str, tail: bytes = b"") -> tuple[bytes, str]:
    return _HEADER + _TENSOR + tail, f"Inference-Header-Content-Length: {header_length}\r\n"


# (id, path, body, extra headers, status, words the error must contain)
ROWS = [
    ("valid", INFER, _body(), "", 200, []),
    ("parameters-not-object", INFER, _body(parameters=[1]), "", 400, ["parameters"]),
    (
        "output-parameters-string",
        INFER,
        _body(outputs=[{"name": "output", "parameters": "x"}]),
        "",
        400,
        ["outputs[0].parameters"],
    ),
    ("id-not-string", INFER, _body(id=5), "", 400, ["id"]),
    ("fp32-strings", INFER, _body(inputs=[_input(data=["1"] * 64)]), "", 400, ["inputs[0].data"]),
    ("fp32-bools", INFER, _body(inputs=[_input(data=[True] * 64)]), "", 400, ["inputs[0].data"]),
    ("negative-shape", INFER, _body(inputs=[_input(shape=[-1, 64])]), "", 400, ["inputs[0].shape"]),
    ("huge-shape", INFER, _body(inputs=[_input(shape=[2**62, 64])]), "", 400, ["inputs[0].shape"]),
    (
        "overflowing-shape",
        INFER,
        _body(inputs=[_input(shape=[1, 64])]).replace(b"[1, 64]", b"[1, 99999999999999999999]"),
        "",
        400,
        ["inputs[0].shape"],
    ),
    ("mismatched-shape", INFER, _body(inputs=[_input(shape=[2, 64])]), "", 400, ["inputs[0].data"]),
    ("header-length-short", INFER, *_binary("10"), 400, ["malformed JSON"]),
    ("header-length-past-body", INFER, *_binary("99999"), 400, ["Inference-Header-Content-Length"]),
    ("header-length-negative", INFER, *_binary("-5"), 400, ["Inference-Header-Content-Length"]),
    ("binary-trailing-bytes", INFER, *_binary(str(len(_HEADER)), b"\0" * 8), 400, ["binary"]),
    ("deep-nesting", INFER, _body().replace(b"[0.0", b"[" * 2000 + b"0.0"), "", 400, []),
    ("deeper-nesting", INFER, b'{"inputs":' + b"[" * 1_000_000, "", 400, ["inputs"]),
    ("non-utf8", INFER, _body().replace(b'"input"', b'"in\xff\xfeput"'), "", 400, ["JSON"]),
    (
        "empty-lists-63MiB",
        INFER,
        empty_lists_body(63 * MiB),
        "",
        400,
        ["inputs", "refused before parsing"],
    ),
    ("zeros-20MiB", INFER, zeros_body(20 * MiB), "", 400, ["inputs"]),
    ("model-dot", "/v2/models/./infer", _body(), "", 404, ["'.'"]),
    ("model-dotdot", "/v2/models/../infer", _body(), "", 404, ["'..'"]),
    ("model-odd-chars", "/v2/models/a%2Fb/infer", _body(), "", 404, ["a%2Fb"]),
    ("over-limit", INFER, b" " * (64 * MiB + 1), "", 413, ["--max-request-bytes"]),
]


def _valid_tensor_bytes(status: int) -> int:
    return 64 * 4 if status == 200 else 0


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "words"),
    [row[1:] for row in ROWS],
    ids=[row[0] for row in ROWS],
)
def test_hostile_request_gets_its_status_and_memory_stays_bounded(
    guarded, path, body, headers, status, words
):
    pid = guarded.process.pid
    before = rss_bytes(pid)
    reset_peak(pid)
    code, answer = exchange(guarded.host, guarded.http_port, path, body, headers)
    assert code == status, answer[:500]
    if status != 200:
        message = json.loads(answer)["error"]
        for word in words:
            assert word in message, message
    bound = before + len(body) + 4 * _valid_tensor_bytes(status) + FIXED_OVERHEAD
    assert peak_bytes(pid) <= bound, f"peak {peak_bytes(pid) / MiB:.0f} MiB"
    assert wait_rss_settles(pid, before + LEFT_BEHIND) <= before + LEFT_BEHIND


def test_odd_model_names_create_no_metrics_series(guarded):
    for name in (".", "..", "a%2Fb"):
        post(guarded.host, guarded.http_port, f"/v2/models/{name}/infer", _body())
    text = scrape(guarded)
    for name in (".", "..", "a%2Fb"):
        assert f'model="{name}"' not in text


def test_ready_of_an_unknown_model_says_why(guarded):
    with socket.create_connection((guarded.host, guarded.http_port), timeout=30) as sock:
        sock.sendall(b"GET /v2/models/no_such_model/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        status, body = read_response(sock)
    assert status == 400
    assert "no_such_model" in json.loads(body)["error"]


def test_the_startup_log_names_no_grpc_port_when_grpc_is_off(guarded):
    listening = [line for line in guarded.log_tail(100_000).splitlines() if "listening:" in line]
    assert listening, guarded.log_tail()
    assert "grpc" not in listening[0] and "http 127.0.0.1" in listening[0]


def _issue_cases(host: str, port: int):
    empty_lists = empty_lists_body(63 * MiB)
    zeros = zeros_body(20 * MiB)
    return [
        ("empty-lists", lambda: [post(host, port, INFER, empty_lists)], {400}),
        ("close-20MiB-x10", lambda: [post(host, port, INFER, zeros) for _ in range(10)], {400}),
        (
            "aborted-60MB-x20",
            lambda: [aborted_upload(host, port, INFER, 60_000_000) for _ in range(20)],
            {None},
        ),
    ]


def test_probes_answer_and_memory_returns_during_the_issues_requests(guarded, record_property):
    """Issue 23's three cases: readiness, liveness and /metrics answer within the probe
    timeout (2 s) throughout, and the RSS comes back to where it was."""
    pid = guarded.process.pid
    probes = [
        (guarded.host, guarded.http_port, "/v2/health/ready"),
        (guarded.host, guarded.http_port, "/v2/health/live"),
        (guarded.host, guarded.metrics_port, "/metrics"),
    ]
    for name, work, statuses in _issue_cases(guarded.host, guarded.http_port):
        before = rss_bytes(pid)
        reset_peak(pid)
        seen, log = probe_during(work, probes, timeout_s=2.0)
        assert set(seen) == statuses, name
        assert log.statuses and set(log.statuses) == {200}, (name, log.statuses)
        record_property(f"{name}-probe-worst-ms", round(log.worst_s * 1000, 1))
        record_property(f"{name}-peak-mib", round((peak_bytes(pid) - before) / MiB, 1))
        settled = wait_rss_settles(pid, before + LEFT_BEHIND)
        assert settled <= before + LEFT_BEHIND, (name, settled / MiB, before / MiB)


def test_slowloris_is_closed_by_the_header_timeout(guarded):
    with socket.create_connection((guarded.host, guarded.http_port), timeout=30) as sock:
        sock.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\n")
        sock.setblocking(False)
        answer = b""
        deadline = time.monotonic() + 60
        closed = False
        while time.monotonic() < deadline and not closed:
            try:
                sock.sendall(b"X-Slow: 1\r\n")  # one header line every 0.2 s, never the end
            except OSError:
                break
            time.sleep(0.2)  # the client under test is slow: this is its pace
            try:
                chunk = sock.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                break
            answer += chunk
            closed = not chunk
    assert closed or answer, "the server kept the slow connection open for 60 s"
    if answer:
        assert answer.startswith(b"HTTP/1.1 408"), answer


def test_idle_connections_are_limited_and_closed(guarded):
    """500 idle connections: those over --http-max-connections are answered 503 at once, the
    rest closed after --http-idle-timeout-secs; then the server answers as before."""
    pid = guarded.process.pid
    before = rss_bytes(pid)
    selector = selectors.DefaultSelector()
    sockets = []
    try:
        for _ in range(500):
            sock = socket.create_connection((guarded.host, guarded.http_port), timeout=30)
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
            sockets.append(sock)
        answers: dict[socket.socket, bytes] = {}
        deadline = time.monotonic() + IDLE_TIMEOUT_S + 60
        while len(answers) < len(sockets) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=1):
                sock = key.fileobj
                try:
                    chunk = sock.recv(4096)
                except ConnectionError:
                    chunk = b""
                answers[sock] = answers.get(sock, b"") + chunk
                if not chunk:
                    selector.unregister(sock)
                    answers.setdefault(sock, b"")
    finally:
        for sock in sockets:
            sock.close()
        selector.close()
    assert len(answers) == 500, f"{500 - len(answers)} connections never closed by the server"
    refused = [a for a in answers.values() if a.startswith(b"HTTP/1.1 503")]
    assert refused, "no connection over the limit was refused"
    assert all(a == b"" or a.startswith(b"HTTP/1.1 503") for a in answers.values())
    status, _ = exchange(guarded.host, guarded.http_port, INFER, _body())
    assert status == 200
    assert wait_rss_settles(pid, before + LEFT_BEHIND) <= before + LEFT_BEHIND
