"""Hostile HTTP requests against a running model server, with its memory and probe latency.

The issue-23 cases (a 63 MiB body of empty lists, large requests with `Connection: close`,
aborted uploads) as functions that the data-plane tests and `python -m
kinfer_dev.runtime.hostile` share. Memory is read from `/proc/<pid>/status` of the real
server process: `VmRSS` now and `VmHWM`, the peak since `reset_peak` (which writes 5 to
`/proc/<pid>/clear_refs`, the kernel's reset of the peak).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MiB = 1 << 20


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(f"{key} not in /proc/{pid}/status")


def rss_bytes(pid: int) -> int:
    """The process' resident memory now."""
    return _status_kib(pid, "VmRSS") * 1024


def peak_bytes(pid: int) -> int:
    """The process' peak resident memory since it started or since `reset_peak`."""
    return _status_kib(pid, "VmHWM") * 1024


def reset_peak(pid: int) -> None:
    """Reset VmHWM to the current RSS (needs the same user or root)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def empty_lists_body(size: int, model_input: str = "input") -> bytes:
    """An infer body of `size` bytes whose data is empty lists (issue 23, defect 1)."""
    head = b'{"inputs":[{"name":"%s","datatype":"FP32","shape":[1,64],"data":[' % (
        model_input.encode()
    )
    tail = b"[]]}]}"
    count = (size - len(head) - len(tail)) // 3
    return head + b"[]," * count + tail


def zeros_body(size: int, model_input: str = "input") -> bytes:
    """An infer body of about `size` bytes: JSON zeros, far more than the shape [1, 64] holds."""
    head = b'{"inputs":[{"name":"%s","datatype":"FP32","shape":[1,64],"data":[' % (
        model_input.encode()
    )
    tail = b"0]}]}"
    count = (size - len(head) - len(tail)) // 2
    return head + b"0," * count + tail


def request_head(path: str, length: int, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """(status, body) of one HTTP/1.1 response with a Content-Length; (0, b"") when the
    connection closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return 0, b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(head.split(b" ", 2)[1]), body


def _read_status(sock: socket.socket) -> int:
    return read_response(sock)[0]


def exchange(
    host: str, port: int, path: str, body: bytes, headers: str = "", close: bool = True
) -> tuple[int, bytes]:
    """One POST on its own connection: (status, body); 0 when closed without an answer."""
    extra = headers + ("Connection: close\r\n" if close else "")
    with socket.create_connection((host, port), timeout=120) as sock:
        sock.sendall(request_head(path, len(body), extra))
        # The server may answer and close before the whole body is sent.
        with contextlib.suppress(ConnectionError):
            sock.sendall(body)
        try:
            return read_response(sock)
        except ConnectionError:
            return 0, b""


def post(host: str, port: int, path: str, body: bytes, close: bool = True) -> int:
    """One POST on its own connection; returns the status (0: closed without an answer)."""
    return exchange(host, port, path, body, close=close)[0]


def aborted_upload(host: str, port: int, path: str, size: int) -> None:
    """Declare `size` bytes, send all but the last one, and close the connection."""
    chunk = b" " * MiB
    with socket.create_connection((host, port), timeout=120) as sock:
        sock.sendall(request_head(path, size))
        sent = 0
        while sent < size - 1:
            piece = chunk[: min(len(chunk), size - 1 - sent)]
            sock.sendall(piece)
            sent += len(piece)


def probe_status(host: str, port: int, path: str, timeout_s: float) -> tuple[int, float]:
    """GET `path` on a fresh connection: (status, seconds); status 0 when it timed out."""
    started = time.perf_counter()
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            status = _read_status(sock)
    except OSError:
        status = 0
    return status, time.perf_counter() - started


@dataclass
class ProbeLog:
    """Probes sent while something else runs: their statuses and latencies."""

    statuses: list[int] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)

    @property
    def worst_s(self) -> float:
        return max(self.latencies_s, default=0.0)

    @property
    def median_s(self) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[len(ordered) // 2] if ordered else 0.0


def probe_during(
    work: Callable[[], object],
    probes: list[tuple[str, int, str]],
    timeout_s: float = 2.0,
) -> tuple[object, ProbeLog]:
    """Run `work` while probing each (host, port, path) in turn; returns (its result, the log).

    At least one round of probes is sent after `work` started, however short it is."""
    log = ProbeLog()
    done = threading.Event()

    def loop() -> None:
        rounds = 0
        while not done.is_set() or rounds == 0:
            for host, port, path in probes:
                status, seconds = probe_status(host, port, path, timeout_s)
                log.statuses.append(status)
                log.latencies_s.append(seconds)
            rounds += 1

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        result = work()
    finally:
        done.set()
        thread.join(timeout=60)
    return result, log


@dataclass
class CaseResult:
    name: str
    statuses: list[int]
    peak_mib: float
    rss_before_mib: float
    rss_after_mib: float
    probe_worst_ms: float
    probe_median_ms: float
    probes: int


def wait_rss_settles(pid: int, bound: int, timeout_s: float = 30.0) -> int:
    """Wait until the RSS is at most `bound` (freeing is asynchronous to the client's close);
    returns the last RSS read, which the caller asserts on."""
    deadline = time.monotonic() + timeout_s
    rss = rss_bytes(pid)
    while rss > bound and time.monotonic() < deadline:
        time.sleep(0.1)
        rss = rss_bytes(pid)
    return rss


def run_case(
    name: str, pid: int, host: str, http_port: int, metrics_port: int, work: Callable[[], list]
) -> CaseResult:
    probes = [
        (host, http_port, "/v2/health/ready"),
        (host, http_port, "/v2/health/live"),
        (host, metrics_port, "/metrics"),
    ]
    before = rss_bytes(pid)
    reset_peak(pid)
    statuses, log = probe_during(work, probes)
    after = wait_rss_settles(pid, before + 32 * MiB, timeout_s=10)
    return CaseResult(
        name,
        sorted({s for s in statuses if s is not None}),  # type: ignore[union-attr]
        peak_bytes(pid) / MiB,
        before / MiB,
        after / MiB,
        log.worst_s * 1000,
        log.median_s * 1000,
        len(log.latencies_s),
    )


def issue_cases(host: str, http_port: int, model: str) -> dict[str, Callable[[], list]]:
    """The three measurements of issue 23, each a callable returning the statuses seen."""
    path = f"/v2/models/{model}/infer"
    empty_lists = empty_lists_body(63 * MiB)
    zeros = zeros_body(20 * MiB)
    return {
        # The machine's own probe latency, for comparison: 5 s with no request.
        "no request (5 s)": lambda: [time.sleep(5)],
        "63 MiB body of empty lists": lambda: [post(host, http_port, path, empty_lists)],
        "ten 20 MiB requests, Connection: close": lambda: [
            post(host, http_port, path, zeros) for _ in range(10)
        ],
        "twenty aborted 60 MB uploads": lambda: [
            aborted_upload(host, http_port, path, 60_000_000) for _ in range(20)
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kinfer_dev.runtime.hostile",
        description="issue 23's hostile requests against a fresh kinfer-ort-server on "
        "127.0.0.1: peak and settled RSS of the server, worst probe latency during each",
    )
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--json", action="store_true", help="one JSON object per case")
    args = parser.parse_args(argv)
    import tempfile

    from kinfer_dev.runtime.ort_server import start_ort_server
    from kinfer_dev.runtime.repository import write_model_repository
    from kinfer_dev.runtime.testmodels import build_tier_models

    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        models = build_tier_models(root / "models")
        write_model_repository(root / "repo", args.model, models, flavour="onnxruntime")
        server = start_ort_server(
            root / "repo",
            load_models=[args.model],
            work_dir=root / "server",
            extra_args=["--allow-grpc=false"],
        )
        try:
            pid = server.process.pid
            print(f"server RSS at start: {rss_bytes(pid) / MiB:.0f} MiB")
            for name, work_fn in issue_cases(server.host, server.http_port, args.model).items():
                result = run_case(
                    name, pid, server.host, server.http_port, server.metrics_port, work_fn
                )
                if args.json:
                    print(json.dumps(result.__dict__))
                else:
                    print(
                        f"{name}: statuses {result.statuses}, peak {result.peak_mib:.0f} MiB, "
                        f"RSS {result.rss_before_mib:.0f} -> {result.rss_after_mib:.0f} MiB, "
                        f"probes: {result.probes}, median {result.probe_median_ms:.1f} ms, "
                        f"worst {result.probe_worst_ms:.1f} ms"
                    )
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
