"""`kubectl logs` on the local cluster: the kubelet's log endpoint, served by the pod runner.

`kubectl logs` asks the API server, which dials the pod's node at its InternalIP and
`status.daemonEndpoints.kubeletEndpoint.Port` and reads
`GET /containerLogs/{namespace}/{pod}/{container}?follow=&tailLines=&limitBytes=`. The
local cluster's nodes have loopback addresses (config.node_ips) and the pod runner,
which writes every container's output to a file, answers there: one TLS listener per
node address, a serving certificate from the cluster CA, and only the API server's
kubelet-client certificate accepted (users reach logs through the API server and its
RBAC on `pods/log`, never directly).

The files hold no per-line timestamps, so `timestamps`, `sinceSeconds` and `sinceTime`
are refused with a message that says so, rather than answered wrongly. `previous` reads
the log of the server's run before its last restart, which the runner keeps aside.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger("kinfer.pod-runner.logs")

# The API server's identity towards kubelets (pki.KUBELET_CLIENT): nothing else may read.
KUBELET_CLIENT_NAME = "kube-apiserver-kubelet-client"
FOLLOW_POLL_S = 0.25
_READ_CHUNK = 64 * 1024
_UNSUPPORTED = {
    "timestamps": "the local cluster's logs hold no per-line timestamps",
    "sinceSeconds": "the local cluster's logs hold no per-line timestamps",
    "sinceTime": "the local cluster's logs hold no per-line timestamps",
}
# Boolean parameters: asked only when true (kubectl sends timestamps=false).
_FLAGS = ("timestamps",)


class LogRequestError(Exception):
    """A request the endpoint answers with an HTTP error (status, message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class LogQuery:
    follow: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None
    previous: bool = False  # the container's run before its last restart


@dataclass(frozen=True)
class LogSource:
    """A container's log file and whether the container still runs (a follow ends when not)."""

    path: Path
    running: Callable[[], bool]


# (namespace, pod, container, previous) -> its log, or LogRequestError (unknown pod, ...).
Locate = Callable[[str, str, str, bool], LogSource]


def _true(value: str) -> bool:
    return value.lower() in ("true", "1")


def _count(name: str, value: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise LogRequestError(400, f"{name}={value!r} is not an integer") from None
    if number < minimum:
        raise LogRequestError(400, f"{name}={number} must be >= {minimum}")
    return number


def parse_request(target: str) -> tuple[str, str, str, LogQuery]:
    """`/containerLogs/{ns}/{pod}/{container}?...` -> (ns, pod, container, query)."""
    parts = urlsplit(target)
    segments = [unquote(s) for s in parts.path.split("/")]
    if len(segments) != 5 or segments[1] != "containerLogs" or not all(segments[2:]):
        raise LogRequestError(
            404, f"{parts.path}: the local pod runner serves only /containerLogs/NS/POD/CONTAINER"
        )
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    for name, why in _UNSUPPORTED.items():
        asked = name in query and (_true(query[name]) if name in _FLAGS else True)
        if asked:
            raise LogRequestError(400, f"{name} is not supported: {why}")
    tail = query.get("tailLines")
    limit = query.get("limitBytes")
    return (
        segments[2],
        segments[3],
        segments[4],
        LogQuery(
            follow=_true(query.get("follow", "false")),
            # kubectl sends tailLines=-1 for "everything".
            tail_lines=None if tail in (None, "-1") else _count("tailLines", tail, 0),
            limit_bytes=None if limit is None else _count("limitBytes", limit, 1),
            previous=_true(query.get("previous", "false")),
        ),
    )


def tail_start(data: bytes, lines: int | None) -> int:
    """Offset in `data` where its last `lines` lines begin (a last line without newline counts)."""
    if lines is None:
        return 0
    if lines == 0:
        return len(data)
    end = len(data)
    if data.endswith(b"\n"):
        end -= 1
    for _ in range(lines):
        newline = data.rfind(b"\n", 0, end)
        if newline < 0:
            return 0
        end = newline
    return end + 1


class _Handler(BaseHTTPRequestHandler):
    server: KubeletLogServer
    server_version = "kinfer-pod-runner"

    def setup(self) -> None:
        # The TLS handshake (deferred from accept) happens here, bounded.
        self.request.settimeout(30)
        self.request.do_handshake()
        super().setup()

    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        try:
            self._authorise()
            namespace, pod, container, query = parse_request(self.path)
            source = self.server.locate(namespace, pod, container, query.previous)
            if not source.path.exists():
                raise LogRequestError(
                    400,
                    f'container "{container}" in pod "{pod}" is waiting to start: '
                    "the pod runner has not started it yet",
                )
        except LogRequestError as error:
            self._error(error.status, error.message)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.end_headers()
        # The API server (kubectl) may go away mid-stream: nothing to answer then.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self._stream(source, query)

    def _authorise(self) -> None:
        certificate = self.connection.getpeercert()  # type: ignore[attr-defined]
        names = [v for rdn in (certificate or {}).get("subject", ()) for k, v in rdn]
        if KUBELET_CLIENT_NAME not in names:
            raise LogRequestError(403, f"only {KUBELET_CLIENT_NAME} reads logs here")

    def _error(self, status: int, message: str) -> None:
        body = message.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, source: LogSource, query: LogQuery) -> None:
        budget = query.limit_bytes
        with open(source.path, "rb") as log_file:
            data = log_file.read()
            chunk = data[tail_start(data, query.tail_lines) :]
            while True:
                if budget is not None:
                    chunk = chunk[:budget]
                    budget -= len(chunk)
                if chunk:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                if not query.follow or budget == 0:
                    return
                # Bounded by the container: a follow ends when it stops (or the runner does).
                while True:
                    chunk = log_file.read(_READ_CHUNK)
                    if chunk:
                        break
                    if not source.running() or self.server.stopping.is_set():
                        return
                    time.sleep(FOLLOW_POLL_S)


class KubeletLogServer(ThreadingHTTPServer):
    """One node address's containerLogs endpoint (TLS, the API server's client cert only)."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        locate: Locate,
        *,
        cert_file: Path,
        key_file: Path,
        client_ca_file: Path,
    ) -> None:
        super().__init__(address, _Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert_file, key_file)
        context.load_verify_locations(client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
        # The handshake runs on the request's thread, so a stalled client holds up no other.
        self.socket = context.wrap_socket(
            self.socket, server_side=True, do_handshake_on_connect=False
        )
        self.locate = locate
        self.stopping = threading.Event()

    def handle_error(self, request, client_address) -> None:
        # A refused handshake (no or a foreign client certificate) is not the runner's error.
        log.debug("log request from %s failed", client_address, exc_info=True)

    def start(self) -> threading.Thread:
        thread = threading.Thread(
            target=self.serve_forever, name=f"logs-{self.server_address[0]}", daemon=True
        )
        thread.start()
        return thread

    def stop(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()
