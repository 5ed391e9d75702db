"""`kubectl logs` on the local cluster: the pod runner's kubelet log endpoint."""

from __future__ import annotations

import http.client
import ssl
import threading
from pathlib import Path

import pytest

from kinfer_dev.localcluster import pki
from kinfer_dev.localcluster.kubelet_logs import (
    KubeletLogServer,
    LogQuery,
    LogRequestError,
    LogSource,
    parse_request,
    tail_start,
)

LOG = b"one\ntwo\nthree\n"


@pytest.mark.parametrize(
    ("data", "lines", "expected"),
    [
        (LOG, None, LOG),
        (LOG, 0, b""),
        (LOG, 1, b"three\n"),
        (LOG, 2, b"two\nthree\n"),
        (LOG, 3, LOG),
        (LOG, 10, LOG),
        (b"one\ntwo", 1, b"two"),  # a last line without newline is a line
        (b"", 5, b""),
    ],
)
def test_tail_start(data: bytes, lines: int | None, expected: bytes) -> None:
    assert data[tail_start(data, lines) :] == expected


def test_parse_request_reads_kubectls_parameters() -> None:
    namespace, pod, container, query = parse_request(
        "/containerLogs/team-a/mlp-0/kserve-container?follow=true&tailLines=5&limitBytes=100"
        "&timestamps=false&previous=false"
    )
    assert (namespace, pod, container) == ("team-a", "mlp-0", "kserve-container")
    assert query == LogQuery(follow=True, tail_lines=5, limit_bytes=100)
    assert parse_request("/containerLogs/a/b/c?tailLines=-1")[3] == LogQuery()
    assert parse_request("/containerLogs/a/b/c?previous=true")[3] == LogQuery(previous=True)


@pytest.mark.parametrize(
    ("target", "status", "words"),
    [
        ("/exec/a/b/c", 404, "only /containerLogs"),
        ("/containerLogs/a/b", 404, "only /containerLogs"),
        ("/containerLogs/a/b/c?timestamps=true", 400, "no per-line timestamps"),
        ("/containerLogs/a/b/c?sinceSeconds=10", 400, "sinceSeconds is not supported"),
        ("/containerLogs/a/b/c?tailLines=x", 400, "tailLines='x' is not an integer"),
        ("/containerLogs/a/b/c?limitBytes=0", 400, "limitBytes=0 must be >= 1"),
    ],
)
def test_parse_request_refuses_clearly(target: str, status: int, words: str) -> None:
    with pytest.raises(LogRequestError) as caught:
        parse_request(target)
    assert caught.value.status == status
    assert words in caught.value.message


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> pki.Pki:
    return pki.generate(
        tmp_path_factory.mktemp("pki"), apiserver_ips=("127.0.0.1",), kubelet_ips=("127.0.0.1",)
    )


class _Pods:
    """What the runner's locate_log answers, for one pod with one container."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.running = threading.Event()
        self.running.set()

    def locate(self, namespace: str, pod: str, container: str, previous: bool) -> LogSource:
        if previous:
            return LogSource(self.path.with_suffix(".previous.log"), lambda: False)
        if (namespace, pod) != ("ns", "pod"):
            raise LogRequestError(404, f"pod {namespace}/{pod} is not run by the local pod runner")
        if container != "server":
            raise LogRequestError(400, f"container {container} is not valid for pod {pod}")
        return LogSource(self.path, self.running.is_set)


@pytest.fixture
def served(certs: pki.Pki, tmp_path: Path):
    pods = _Pods(tmp_path / "server.log")
    server = KubeletLogServer(
        ("127.0.0.1", 0),
        pods.locate,
        cert_file=certs.kubelet_cert,
        key_file=certs.kubelet_key,
        client_ca_file=certs.ca_cert,
    )
    server.start()
    try:
        yield server, pods
    finally:
        server.stop()


def _get(server: KubeletLogServer, certs: pki.Pki, path: str, client: str | None):
    context = ssl.create_default_context(cafile=str(certs.ca_cert))
    if client:
        context.load_cert_chain(certs.client_cert(client), certs.client_key(client))
    host, port = server.server_address[:2]
    connection = http.client.HTTPSConnection(host, port, context=context, timeout=30)
    connection.request("GET", path)
    return connection, connection.getresponse()


def test_serves_the_tail_to_the_api_server_only(served, certs: pki.Pki) -> None:
    server, pods = served
    pods.path.write_bytes(LOG)
    connection, response = _get(
        server, certs, "/containerLogs/ns/pod/server?tailLines=2", "apiserver-kubelet-client"
    )
    assert (response.status, response.read()) == (200, b"two\nthree\n")
    connection.close()
    # Another identity of the same CA (a cluster admin) is refused: logs go through the API.
    connection, response = _get(server, certs, "/containerLogs/ns/pod/server", "admin")
    assert response.status == 403
    assert b"kube-apiserver-kubelet-client" in response.read()
    connection.close()
    # No client certificate: the TLS handshake itself fails.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        connection, response = _get(server, certs, "/containerLogs/ns/pod/server", None)
        response.read()


def test_previous_reads_the_run_before_the_restart(served, certs: pki.Pki) -> None:
    server, pods = served
    pods.path.write_bytes(b"second run\n")
    pods.path.with_suffix(".previous.log").write_bytes(b"first run\n")
    connection, response = _get(
        server, certs, "/containerLogs/ns/pod/server?previous=true", "apiserver-kubelet-client"
    )
    assert (response.status, response.read()) == (200, b"first run\n")
    connection.close()


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/containerLogs/ns/other/server", 404, b"ns/other is not run"),
        ("/containerLogs/ns/pod/sidecar", 400, b"container sidecar is not valid"),
        ("/containerLogs/ns/pod/server", 400, b'"server" in pod "pod" is waiting to start'),
        ("/containerLogs/ns/pod/server?timestamps=true", 400, b"no per-line timestamps"),
    ],
)
def test_errors_reach_kubectl_as_text(served, certs, path: str, status: int, words: bytes) -> None:
    server, _ = served  # no log file written: the container has not started
    connection, response = _get(server, certs, path, "apiserver-kubelet-client")
    assert response.status == status
    assert words in response.read()
    connection.close()


def test_follow_streams_until_the_container_stops(served, certs: pki.Pki) -> None:
    server, pods = served
    pods.path.write_bytes(b"started\n")
    connection, response = _get(
        server, certs, "/containerLogs/ns/pod/server?follow=true", "apiserver-kubelet-client"
    )
    assert response.status == 200
    assert response.read1() == b"started\n"
    with open(pods.path, "ab") as log_file:
        log_file.write(b"serving\n")
    received = b""
    while not received.endswith(b"serving\n"):  # bounded by the connection's 30 s timeout
        received += response.read1()
    assert received == b"serving\n"
    pods.running.clear()  # the container stops: the stream ends
    assert response.read() == b""
    connection.close()


def test_limit_bytes_cuts_the_stream(served, certs: pki.Pki) -> None:
    server, pods = served
    pods.path.write_bytes(LOG)
    connection, response = _get(
        server,
        certs,
        "/containerLogs/ns/pod/server?follow=true&limitBytes=6",
        "apiserver-kubelet-client",
    )
    # The limit ends even a follow, as the kubelet's does.
    assert response.read() == b"one\ntw"
    connection.close()
