"""Run the server: HTTP (8000), gRPC (8001) and metrics (8002) on one event loop until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

import grpc
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from kinfer_ort_server.core import Core
from kinfer_ort_server.errors import ServerError
from kinfer_ort_server.grpc_api import InferenceServicer
from kinfer_ort_server.http_api import build_app
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
    max_request_bytes: int = 64 * 1024 * 1024
    exit_timeout_s: float = 30.0
    runtime: RuntimeOptions = RuntimeOptions()


def _metrics_app(metrics: Metrics) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/metrics", handler)
    return app


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
    runners: list[web.AppRunner] = []
    if options.allow_http:
        runners.append(await _start_site(build_app(core), options.http_address, options.http_port))
    if options.allow_metrics:
        runners.append(
            await _start_site(_metrics_app(metrics), options.metrics_address, options.metrics_port)
        )
    grpc_server = None
    if options.allow_grpc:
        # Transport limit above ours, so an oversize request reaches the handler and is counted.
        limit = options.max_request_bytes + 1024 * 1024
        grpc_server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),
            ]
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(core), grpc_server)
        address = f"{options.grpc_address}:{options.grpc_port}"
        if grpc_server.add_insecure_port(address) == 0:
            log.error("cannot listen for gRPC on %s", address)
            return 1
        await grpc_server.start()
    log.info(
        "listening: http %s:%s grpc %s:%s metrics %s:%s",
        options.http_address, options.http_port, options.grpc_address, options.grpc_port,
        options.metrics_address, options.metrics_port,
    )  # fmt: skip

    exit_code = 0
    to_load = list(options.load_models)
    if options.model_control_mode == "none" or "*" in to_load:
        to_load = repository.names_on_disk()
    for name in to_load:
        try:
            await repository.load(name)
        except ServerError as error:
            # Triton exits when a startup model fails to load (--exit-on-error default): so do we.
            log.error("%s", error.message)
            exit_code = 1
            stop.set()
            break
    else:
        core.ready = True
        log.info("ready: models %s", sorted(repository.models))

    await stop.wait()
    core.ready = False
    log.info("stopping: waiting up to %s s for in-flight requests", options.exit_timeout_s)
    if grpc_server is not None:
        await grpc_server.stop(options.exit_timeout_s)
    for runner in runners:
        await runner.cleanup()
    return exit_code


async def _start_site(app: web.Application, host: str, port: int) -> web.AppRunner:
    # access_log=None: a log line per request would cost more than the inference itself.
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    return runner
