"""`kinfer-ort-server`: flags mirror tritonserver's: both runtimes start alike."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

from kinfer_ort_server import __version__
from kinfer_ort_server.grpc_frontend import BINARY, find_binary
from kinfer_ort_server.repository import PROVIDERS, RuntimeOptions
from kinfer_ort_server.server import ServerOptions, serve

# The next call at concurrency 1 comes about 0.25 ms after an answer here: 200 us was too
# short, 300 us mostly enough, 500 us with a margin (docs/data-plane.md "Busy polling").
DEFAULT_BUSY_POLL_US = 500
MAX_BUSY_POLL_US = 100_000
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{value!r} is not a boolean; valid: true, false")


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 0..65535")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kinfer-ort-server",
        description="kinfer's ONNX Runtime server: Open Inference Protocol v2 over HTTP and "
        "gRPC, like tritonserver.",
    )
    parser.add_argument("--version", action="version", version=f"kinfer-ort-server {__version__}")
    parser.add_argument(
        "--model-repository",
        "--model-store",
        required=True,
        type=Path,
        help="Triton-layout model repository",
    )
    parser.add_argument(
        "--model-control-mode",
        choices=("none", "explicit"),
        default="none",
        help="none: load every model at start, no repository API; explicit: --load-model and "
        "the repository API",
    )
    parser.add_argument(
        "--load-model",
        action="append",
        default=[],
        metavar="NAME",
        help="model to load at start in explicit mode (repeatable; '*' loads all)",
    )
    parser.add_argument("--http-address", default="0.0.0.0")
    parser.add_argument("--http-port", type=_port, default=8000)
    parser.add_argument("--grpc-address", default="0.0.0.0")
    parser.add_argument("--grpc-port", type=_port, default=8001)
    parser.add_argument("--metrics-address", default=None, help="default: the --http-address")
    parser.add_argument("--metrics-port", type=_port, default=8002)
    parser.add_argument("--allow-http", type=_bool, default=True)
    parser.add_argument("--allow-grpc", type=_bool, default=True)
    parser.add_argument("--allow-metrics", type=_bool, default=True)
    parser.add_argument(
        "--grpc-frontend",
        choices=("auto", "go", "python"),
        default="auto",
        help="go: gRPC served by kinfer-grpc-frontend (a Go process; far less CPU per call); "
        "python: by grpc.aio in this process; auto: go when the binary is found",
    )
    parser.add_argument(
        "--grpc-frontend-threads",
        type=int,
        default=1,
        metavar="N",
        help="threads the Go frontend runs on (its GOMAXPROCS; 0: one per core)",
    )
    parser.add_argument(
        "--grpc-frontend-busy-poll-us",
        type=int,
        default=DEFAULT_BUSY_POLL_US,
        metavar="US",
        help="after answering calls from the Go frontend, keep polling this long before the "
        "event loop sleeps, so that the next call does not wait for this thread to wake "
        "(0: off; costs up to this much CPU after each answer)",
    )
    parser.add_argument(
        "--grpc-frontend-binary",
        default=None,
        metavar="PATH",
        help="kinfer-grpc-frontend to run (default: found on PATH or beside this Python)",
    )
    parser.add_argument(
        "--exit-on-error",
        type=_bool,
        default=True,
        help="exit when a start-up model fails to load (false: serve the others)",
    )
    parser.add_argument(
        "--strict-readiness",
        type=_bool,
        default=True,
        help="not ready while a start-up model failed to load (false: ready anyway)",
    )
    parser.add_argument(
        "--exit-timeout-secs",
        type=float,
        default=30.0,
        help="wait this long for in-flight requests on SIGTERM",
    )
    parser.add_argument(
        "--max-request-bytes",
        type=int,
        default=64 * 1024 * 1024,
        help="largest request body / tensor payload; larger ones get 413 / RESOURCE_EXHAUSTED",
    )
    http = parser.add_argument_group("HTTP connections (the HTTP and metrics ports)")
    http.add_argument(
        "--http-header-timeout-secs",
        type=float,
        default=10.0,
        help="a request's headers must arrive within this after its first byte, else 408 and "
        "the connection is closed (0: no limit)",
    )
    http.add_argument(
        "--http-idle-timeout-secs",
        type=float,
        default=60.0,
        help="close a connection with no request under way after this (0: never)",
    )
    http.add_argument(
        "--http-max-connections",
        type=int,
        default=1024,
        help="open connections per port; one more is answered 503 and closed",
    )
    grpc_group = parser.add_argument_group("gRPC connections (both frontends)")
    grpc_group.add_argument(
        "--grpc-keepalive-time",
        type=int,
        default=7_200_000,
        metavar="MS",
        help="ping a client after this many ms without activity (Triton's flag and default)",
    )
    grpc_group.add_argument(
        "--grpc-keepalive-timeout",
        type=int,
        default=20_000,
        metavar="MS",
        help="close the connection when the ping is not answered within this many ms",
    )
    grpc_group.add_argument(
        "--grpc-idle-timeout-secs",
        type=float,
        default=300.0,
        help="close (GOAWAY) a connection with no call for this long (0: never); clients reconnect",
    )
    batching = parser.add_argument_group(
        "batching (config.pbtxt's dynamic_batching and max_batch_size win)"
    )
    batching.add_argument(
        "--default-max-batch-size",
        type=int,
        default=4,
        help="max_batch_size given to a model whose config has none (Triton's "
        "default-max-batch-size)",
    )
    batching.add_argument(
        "--default-max-queue-delay-us",
        type=int,
        default=0,
        help="dynamic_batching max_queue_delay_microseconds given with --default-max-batch-size",
    )
    session = parser.add_argument_group("onnxruntime")
    session.add_argument(
        "--intra-op-threads",
        type=int,
        default=1,
        help="threads inside one operator (0: onnxruntime's default)",
    )
    session.add_argument(
        "--inter-op-threads",
        type=int,
        default=1,
        help="threads across operators (0: onnxruntime's default)",
    )
    session.add_argument(
        "--execution-threads",
        type=int,
        default=0,
        help="threads running batches across all models (0: 2); a model runs at most its "
        "instance_group count at once",
    )
    session.add_argument(
        "--execution-provider",
        action="append",
        choices=sorted(PROVIDERS),
        default=None,
        help="preference order, repeatable (default cpu); unavailable ones are skipped with a "
        "warning",
    )
    session.add_argument(
        "--require-execution-provider",
        action="append",
        choices=sorted(PROVIDERS),
        default=None,
        help="exit 2 at start unless this build has the provider (repeatable): a GPU pod on "
        "an image without CUDA refuses to serve instead of serving on the CPU",
    )
    session.add_argument(
        "--inline-execution-us",
        type=int,
        default=100,
        help="a model whose session.run takes under this (estimated from its recent runs) runs "
        "on the event loop, skipping the thread hand-off (0: always the thread pool)",
    )
    session.add_argument(
        "--graph-optimization", choices=("disable", "basic", "extended", "all"), default="all"
    )
    parser.add_argument(
        "--event-loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="auto: uvloop when installed",
    )
    parser.add_argument("--log-verbose", type=int, default=0, help="1: debug logs")
    return parser


def missing_providers(names: Sequence[str]) -> list[str]:
    """The required execution providers this onnxruntime build does not have."""
    available = set(ort.get_available_providers())
    return [name for name in names if PROVIDERS[name] not in available]


def options_from_args(args: argparse.Namespace) -> ServerOptions:
    for flag, value in (
        ("--default-max-batch-size", args.default_max_batch_size),
        ("--default-max-queue-delay-us", args.default_max_queue_delay_us),
        ("--intra-op-threads", args.intra_op_threads),
        ("--inter-op-threads", args.inter_op_threads),
        ("--execution-threads", args.execution_threads),
        ("--inline-execution-us", args.inline_execution_us),
        ("--grpc-frontend-threads", args.grpc_frontend_threads),
        ("--grpc-frontend-busy-poll-us", args.grpc_frontend_busy_poll_us),
    ):
        if value < 0:
            raise ValueError(f"{flag}={value} must be >= 0")
    if args.grpc_frontend_busy_poll_us > MAX_BUSY_POLL_US:
        raise ValueError(
            f"--grpc-frontend-busy-poll-us={args.grpc_frontend_busy_poll_us} must be <= "
            f"{MAX_BUSY_POLL_US} (longer only burns CPU: the next call of a client that waits "
            "longer than that pays the wake-up anyway)"
        )
    for flag, seconds in (
        ("--http-header-timeout-secs", args.http_header_timeout_secs),
        ("--http-idle-timeout-secs", args.http_idle_timeout_secs),
        ("--grpc-idle-timeout-secs", args.grpc_idle_timeout_secs),
    ):
        if not seconds >= 0:
            raise ValueError(f"{flag}={seconds} must be >= 0")
    for flag, ms in (
        ("--grpc-keepalive-time", args.grpc_keepalive_time),
        ("--grpc-keepalive-timeout", args.grpc_keepalive_timeout),
    ):
        if ms < 1:
            raise ValueError(f"{flag}={ms} must be >= 1 (ms)")
    if args.http_max_connections < 1:
        raise ValueError(f"--http-max-connections={args.http_max_connections} must be >= 1")
    if args.max_request_bytes < 1:
        raise ValueError(f"--max-request-bytes={args.max_request_bytes} must be >= 1")
    if args.load_model and args.model_control_mode != "explicit":
        raise ValueError(
            "--load-model needs --model-control-mode=explicit (mode none loads every model)"
        )
    missing = missing_providers(args.require_execution_provider or ())
    if missing:
        raise ValueError(
            f"--require-execution-provider={','.join(missing)}: this build of onnxruntime has "
            f"no {', '.join(PROVIDERS[name] for name in missing)} (it has "
            f"{', '.join(ort.get_available_providers())}); a GPU model server needs the CUDA "
            "image variant (kinfer-ort-server:<version>-cuda, `make images-cuda`)"
        )
    if not args.model_repository.is_dir():
        raise ValueError(f"--model-repository={args.model_repository} is not a directory")
    frontend_binary = None
    if args.allow_grpc and args.grpc_frontend != "python":
        frontend_binary = find_binary(args.grpc_frontend_binary)
        if frontend_binary is None and (
            args.grpc_frontend == "go" or args.grpc_frontend_binary is not None
        ):
            where = args.grpc_frontend_binary or f"{BINARY} on PATH or beside {sys.executable}"
            raise ValueError(
                f"--grpc-frontend={args.grpc_frontend}: no executable {where} (build it with "
                "`make grpc-frontend`, or use --grpc-frontend=python)"
            )
    runtime = RuntimeOptions(
        intra_op_threads=args.intra_op_threads,
        inter_op_threads=args.inter_op_threads,
        providers=tuple(args.execution_provider or ("cpu",)),
        default_max_batch_size=args.default_max_batch_size,
        default_max_queue_delay_us=args.default_max_queue_delay_us,
        graph_optimization=args.graph_optimization,
        execution_threads=args.execution_threads,
        inline_max_us=args.inline_execution_us,
    )
    return ServerOptions(
        model_repository=args.model_repository.resolve(),
        model_control_mode=args.model_control_mode,
        load_models=tuple(args.load_model),
        http_address=args.http_address,
        http_port=args.http_port,
        grpc_address=args.grpc_address,
        grpc_port=args.grpc_port,
        metrics_address=args.metrics_address or args.http_address,
        metrics_port=args.metrics_port,
        allow_http=args.allow_http,
        allow_grpc=args.allow_grpc,
        allow_metrics=args.allow_metrics,
        grpc_frontend_binary=frontend_binary,
        grpc_frontend_threads=args.grpc_frontend_threads,
        grpc_frontend_busy_poll_us=args.grpc_frontend_busy_poll_us,
        max_request_bytes=args.max_request_bytes,
        http_header_timeout_s=args.http_header_timeout_secs,
        http_idle_timeout_s=args.http_idle_timeout_secs,
        http_max_connections=args.http_max_connections,
        grpc_keepalive_time_ms=args.grpc_keepalive_time,
        grpc_keepalive_timeout_ms=args.grpc_keepalive_timeout,
        grpc_idle_timeout_s=args.grpc_idle_timeout_secs,
        exit_timeout_s=args.exit_timeout_secs,
        exit_on_error=args.exit_on_error,
        strict_readiness=args.strict_readiness,
        runtime=runtime,
    )


def return_freed_buffers() -> None:
    """Have glibc serve blocks of 1 MiB and more from mmap, so that a freed request body goes
    back to the system at once. glibc's default raises this threshold to the size of each
    large block freed (up to 32 MiB), after which bodies land in the heap and stay resident."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 20)
    except (OSError, AttributeError):  # not glibc: its own allocator's rules apply
        pass


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return_freed_buffers()
    logging.basicConfig(
        level=logging.DEBUG if args.log_verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        options = options_from_args(args)
    except ValueError as error:
        print(f"kinfer-ort-server: {error}", file=sys.stderr)
        return 2
    if args.event_loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if args.event_loop == "uvloop":
                print(
                    "kinfer-ort-server: --event-loop=uvloop but uvloop is not installed",
                    file=sys.stderr,
                )
                return 2
        else:
            return uvloop.run(serve(options))
    return asyncio.run(serve(options))
