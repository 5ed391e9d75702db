"""Run the server: HTTP (8000), gRPC (8001) and metrics (8002) on one event loop until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from kinfer_ort_server.core import Core
from kinfer_ort_server.errors import ServerError
from kinfer_ort_server.grpc_api import InferenceServicer
from kinfer_ort_server.grpc_frontend import (
    BINARY,
    GrpcConnections,
    GrpcFrontend,
    start_grpc_frontend,
)
from kinfer_ort_server.http_api import HttpApi
from kinfer_ort_server.http_server import (
    HttpLimits,
    HttpRequest,
    HttpResponse,
    start_http_server,
)
from kinfer_ort_server.metrics import Metrics
from kinfer_ort_server.repository import Repository, RuntimeOptions

log = logging.getLogger("kinfer_ort_server")


@dataclass(frozen=True)
class ServerOptions:
    model_repository: Path
    model_control_mode: str = "none"
    load_models: tuple[str, ...] = ()
    http_address: str = "0.0.0.0"
    http_port: int = 8000
    grpc_address: str = "0.0.0.0"
    grpc_port: int = 8001
    metrics_address: str = "0.0.0.0"
    metrics_port: int = 8002
    allow_http: bool = True
    allow_grpc: bool = True
    allow_metrics: bool = True
    # kinfer-grpc-frontend's path; None: gRPC on grpc.aio in this process.
    grpc_frontend_binary: str | None = None
    grpc_frontend_threads: int = 1  # its GOMAXPROCS; 0: Go's default (one per core)
    # After answering over the frontend's bridge, poll this long before sleeping (busy_poll.py).
    grpc_frontend_busy_poll_us: int = 0
    max_request_bytes: int = 64 * 1024 * 1024
    http_header_timeout_s: float = 10.0
    http_idle_timeout_s: float = 60.0
    http_max_connections: int = 1024
    grpc_keepalive_time_ms: int = 7_200_000
    grpc_keepalive_timeout_ms: int = 20_000
    grpc_idle_timeout_s: float = 300.0
    exit_timeout_s: float = 30.0
    exit_on_error: bool = True
    strict_readiness: bool = True
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)


def _metrics_handler(metrics: Metrics):
    content_type = CONTENT_TYPE_LATEST.encode()

    async def handler(request: HttpRequest) -> HttpResponse:
        if request.path != "/metrics" or request.method != "GET":
            return HttpResponse(404, b"only GET /metrics here\n")
        return HttpResponse(200, generate_latest(metrics.registry), content_type)

    return handler


def _refuse(request: HttpRequest) -> HttpResponse:
    return HttpResponse(413)


async def serve(options: ServerOptions, stop: asyncio.Event | None = None) -> int:
    """Serve until `stop` is set or SIGTERM/SIGINT; returns the exit code."""
    metrics = Metrics()
    repository = Repository(options.model_repository, options.runtime, metrics)
    core = Core(
        repository=repository,
        metrics=metrics,
        max_request_bytes=options.max_request_bytes,
        repository_api=options.model_control_mode == "explicit",
    )
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    # Listen first (not ready yet), then load, as Triton does: probes see 503 until loaded.
    listeners: list[asyncio.AbstractServer] = []
    limits = HttpLimits(
        options.max_request_bytes,
        options.http_header_timeout_s,
        options.http_idle_timeout_s,
        options.http_max_connections,
    )
    if options.allow_http:
        api = HttpApi(core)
        listeners.append(
            await start_http_server(
                api.handle, options.http_address, options.http_port, limits, api.too_large
            )
        )
    if options.allow_metrics:
        listeners.append(
            await start_http_server(
                _metrics_handler(metrics),
                options.metrics_address,
                options.metrics_port,
                replace(limits, max_body_bytes=1 << 16),
                _refuse,
            )
        )
    grpc_server = None
    frontend: GrpcFrontend | None = None
    # Transport limit above ours, so an oversize request reaches the handler and is counted.
    grpc_limit = options.max_request_bytes + 1024 * 1024
    connections = GrpcConnections(
        options.max_request_bytes,
        options.grpc_keepalive_time_ms,
        options.grpc_keepalive_timeout_ms,
        options.grpc_idle_timeout_s,
    )
    if options.allow_grpc and options.grpc_frontend_binary:
        try:
            frontend = await start_grpc_frontend(
                options.grpc_frontend_binary,
                InferenceServicer(core),
                options.grpc_address,
                options.grpc_port,
                grpc_limit,
                options.exit_timeout_s,
                threads=options.grpc_frontend_threads,
                busy_poll_s=options.grpc_frontend_busy_poll_us / 1e6,
                connections=connections,
            )
        except RuntimeError as error:
            log.error("%s", error)
            return 1
        log.info("gRPC served by %s on %s", options.grpc_frontend_binary, frontend.address)
        frontend_exit = asyncio.create_task(_watch_frontend(frontend, stop))
    elif options.allow_grpc:
        grpc_server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", grpc_limit),
                ("grpc.max_send_message_length", grpc_limit),
                ("grpc.so_reuseport", 0),
                *connections.grpcio_options(),
            ]
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(core), grpc_server)
        address = f"{options.grpc_address}:{options.grpc_port}"
        if grpc_server.add_insecure_port(address) == 0:
            log.error("cannot listen for gRPC on %s", address)
            return 1
        await grpc_server.start()
    log.info("listening: %s", _listening(options))

    exit_code = 0
    to_load = list(options.load_models)
    if options.model_control_mode == "none" or "*" in to_load:
        to_load = repository.names_on_disk()
    failed = []
    for name in to_load:
        try:
            await repository.load(name)
        except ServerError as error:
            log.error("%s", error.message)
            failed.append(name)
            if options.exit_on_error:
                # Triton's --exit-on-error (default true): a start-up model that fails stops it.
                exit_code = 1
                stop.set()
                break
    if not exit_code:
        # Strict readiness (Triton's default): not ready while a start-up model failed.
        core.ready = not (failed and options.strict_readiness)
        log.info("ready=%s: models %s, failed %s", core.ready, sorted(repository.models), failed)

    await stop.wait()
    core.ready = False
    log.info("stopping: waiting up to %s s for in-flight requests", options.exit_timeout_s)
    for listener in listeners:
        listener.close()  # no new connections; open ones finish their requests below
    if grpc_server is not None:
        await grpc_server.stop(options.exit_timeout_s)
    if frontend is not None:
        if frontend_exit.done() and frontend_exit.result():
            exit_code = exit_code or 1  # it stopped the server: not a clean exit
        frontend_exit.cancel()
        await frontend.stop(options.exit_timeout_s)
    await _drain(repository, options.exit_timeout_s)
    return exit_code


def _listening(options: ServerOptions) -> str:
    """The listeners the options turn on, e.g. 'http 0.0.0.0:8000, metrics 0.0.0.0:8002'."""
    listeners = (
        ("http", options.allow_http, options.http_address, options.http_port),
        ("grpc", options.allow_grpc, options.grpc_address, options.grpc_port),
        ("metrics", options.allow_metrics, options.metrics_address, options.metrics_port),
    )
    return ", ".join(f"{name} {host}:{port}" for name, on, host, port in listeners if on) or "none"


async def _watch_frontend(frontend: GrpcFrontend, stop: asyncio.Event) -> bool:
    """A frontend that exits on its own leaves gRPC unserved: stop, so the pod restarts.

    True when it did; an exit after the stop began (it got the SIGTERM too) is no failure."""
    code = await frontend.process.wait()
    if stop.is_set():
        return False
    log.error("%s exited with code %s: stopping the server", BINARY, code)
    stop.set()
    return True


async def _drain(repository: Repository, timeout_s: float) -> None:
    """Wait (bounded) until no HTTP request is in flight on any loaded version."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline and any(
        version.metrics.inflight
        for model in repository.models.values()
        for version in model.versions.values()
    ):
        await asyncio.sleep(0.01)
