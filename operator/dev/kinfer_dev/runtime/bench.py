"""`kinfer bench runtime`: raw onnxruntime vs kinfer-ort-server (HTTP, gRPC) vs the local Triton.

Same model (the fp32 test MLP), same CPU, one run: batch 1 at each concurrency, p50/p99
latency and throughput, and the ratios to raw `session.run` and to Triton. The load
generator is a bounded asyncio client on tritonclient's aio clients (perf_analyzer
does not install from PyPI here), in this process, on loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_CONCURRENCY = (1, 8, 32)
PERF_CLIENT = "kinfer-perf"
MODEL = "mlp"
NOOP_CALLS = 1000
# raw-paced: the CPU idles this long before each session.run, about a gRPC call's round trip at
# concurrency 1 here. A server's run never follows another back to back at concurrency 1; after
# an idle gap the same run takes longer (caches refilled), which raw's tight loop never shows.
RAW_PAUSE_S = 300e-6


@dataclass
class Cell:
    """One measurement: a target at a concurrency."""

    target: str
    concurrency: int
    requests: int
    failures: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    throughput_rps: float
    p50_added_ms: float | None = None  # p50 minus raw session.run's p50 at the same concurrency
    throughput_vs_raw: float | None = None
    throughput_vs_triton: float | None = None  # against Triton on the same protocol
    p50_vs_triton: float | None = None
    # p50 of a no-op call (ServerLive) through the same client and server at concurrency 1:
    # the floor of the transport, so p50 - noop_p50 is what the inference path costs.
    noop_p50_ms: float | None = None
    # Mean server-side latency from the server's own metrics (kinfer: its request-duration
    # histogram; Triton: nv_inference_request_duration_us / nv_inference_request_success),
    # warm-up included: what the server spends, without the client and the network stack.
    server_mean_ms: float | None = None
    # CPU the server's processes (kinfer-ort-server and its gRPC frontend; Triton and its
    # Python-backend stubs) used per request, warm-up included: on a shared machine a
    # steadier figure than throughput, which swings with what else runs.
    server_cpu_us: float | None = None


# Target -> (server, protocol). kinfer-grpcio is kinfer-ort-server with gRPC on grpc.aio
# in its own process (--grpc-frontend=python) instead of kinfer-grpc-frontend.
TARGETS = {
    "raw": ("raw", ""),
    "raw-paced": ("raw", "paced"),
    "kinfer-http": ("kinfer", "http"),
    "kinfer-grpc": ("kinfer", "grpc"),
    "kinfer-grpcio": ("kinfer-grpcio", "grpc"),
    "triton-http": ("triton", "http"),
    "triton-grpc": ("triton", "grpc"),
}
DEFAULT_TARGETS = ("raw", "kinfer-http", "kinfer-grpc", "triton-http", "triton-grpc")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "runtime",
        help="latency/throughput: raw onnxruntime, kinfer-ort-server (HTTP, gRPC), local Triton",
        description=__doc__,
    )
    parser.add_argument(
        "--concurrency",
        default=",".join(map(str, DEFAULT_CONCURRENCY)),
        help="comma-separated client concurrencies (default 1,8,32)",
    )
    parser.add_argument(
        "--duration-s", type=float, default=4.0, help="measured seconds per cell (default 4)"
    )
    parser.add_argument(
        "--warmup-s", type=float, default=1.0, help="unmeasured seconds per cell (default 1)"
    )
    parser.add_argument(
        "--max-requests", type=int, default=1_000_000, help="hard cap on requests per cell"
    )
    parser.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help=f"comma-separated subset of {','.join(TARGETS)} (default {','.join(DEFAULT_TARGETS)}; "
        "kinfer-grpcio: gRPC on grpc.aio instead of kinfer-grpc-frontend; raw-paced: "
        "session.run after 0.3 ms idle each, as a server's run at concurrency 1)",
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra kinfer-ort-server flag, repeatable (e.g. --server-arg=--event-loop=asyncio)",
    )
    parser.add_argument(
        "--client",
        choices=("tritonclient", "go"),
        default="tritonclient",
        help="load client: tritonclient's asyncio clients in this process (default), or "
        "kinfer-perf, a native client sending one prepared request like perf_analyzer "
        "(built by `make grpc-frontend`)",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="sweeps over all cells; medians reported (default 3)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of the table"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        concurrencies = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    except ValueError:
        print(
            f"kinfer bench runtime: --concurrency={args.concurrency!r} must be integers",
            file=sys.stderr,
        )
        return 2
    if not concurrencies or min(concurrencies) < 1:
        print(
            f"kinfer bench runtime: --concurrency={args.concurrency!r} must be >= 1",
            file=sys.stderr,
        )
        return 2
    valid = tuple(TARGETS)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in valid]
    if unknown:
        print(
            f"kinfer bench runtime: --targets {unknown} unknown; valid: {list(valid)}",
            file=sys.stderr,
        )
        return 2
    if args.client == "go" and find_perf_client() is None:
        print(
            f"kinfer bench runtime: --client=go needs {PERF_CLIENT} (build it with "
            "`make grpc-frontend`)",
            file=sys.stderr,
        )
        return 2
    if not 1 <= args.repeat <= 20:
        print(f"kinfer bench runtime: --repeat={args.repeat} must be in 1..20", file=sys.stderr)
        return 2
    if args.duration_s <= 0 or args.duration_s > 120:
        print(
            f"kinfer bench runtime: --duration-s={args.duration_s} must be in (0, 120]",
            file=sys.stderr,
        )
        return 2
    report = benchmark(
        targets,
        concurrencies,
        args.duration_s,
        args.warmup_s,
        args.max_requests,
        progress=not args.json,
        repeat=args.repeat,
        server_args=tuple(args.server_arg),
        client=args.client,
    )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_table(report))
    return 0 if all(cell["failures"] == 0 for cell in report["cells"]) else 1


def _log(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def benchmark(
    targets: list[str],
    concurrencies: list[int],
    duration_s: float,
    warmup_s: float,
    max_requests: int,
    progress: bool = True,
    repeat: int = 3,
    server_args: tuple[str, ...] = (),
    client: str = "tritonclient",
) -> dict:
    """Every target at every concurrency, `repeat` sweeps: {"machine", "model", "cells", ...}.

    Each cell holds the medians over the sweeps (requests and failures summed)."""
    from kinfer_dev.runtime.testmodels import MLPShape, build_tier_models, sample_input

    rounds: list[list[Cell]] = []
    # Other work on the machine skews every figure: the load average says how much there was.
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="kinfer-bench-") as tmp:
        work = Path(tmp)
        models = build_tier_models(work / "models", tiers=("fp32",))
        batch = sample_input(1)
        servers: list[tuple[str, Any]] = []
        try:
            _start_servers(servers, targets, work, models, server_args, progress)
            # Whole sweeps, repeated: a load change on a shared machine then hits every
            # target alike instead of whichever ran at that moment; medians are reported.
            for round_index in range(repeat):
                cells: list[Cell] = []
                for raw_target, pause_s in (("raw", 0.0), ("raw-paced", RAW_PAUSE_S)):
                    if raw_target not in targets:
                        continue
                    for concurrency in concurrencies:
                        _log(
                            progress,
                            f"[{round_index + 1}/{repeat}] {raw_target} onnxruntime, "
                            f"concurrency {concurrency}",
                        )
                        cells.append(
                            _bench_raw(
                                models["fp32"],
                                batch,
                                concurrency,
                                duration_s,
                                warmup_s,
                                max_requests,
                                pause_s=pause_s,
                            )
                        )
                for name, handle in servers:
                    for target in targets:
                        server, protocol = TARGETS[target]
                        if server != name:
                            continue
                        for concurrency in concurrencies:
                            _log(
                                progress,
                                f"[{round_index + 1}/{repeat}] {target}, concurrency {concurrency}",
                            )
                            measure = _bench_server if client == "tritonclient" else _bench_native
                            cells.append(
                                measure(
                                    target,
                                    handle,
                                    protocol,
                                    batch,
                                    concurrency,
                                    duration_s,
                                    warmup_s,
                                    max_requests,
                                )
                            )
                rounds.append(cells)
        finally:
            for _, handle in servers:
                handle.stop()
    cells = _median_cells(rounds)
    _add_ratios(cells)
    return {
        "machine": {
            "cpu": _cpu_name(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "onnxruntime": _version("onnxruntime"),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "model": {"name": "kinfer test MLP fp32", "shape": asdict(MLPShape()), "batch": 1},
        "duration_s": duration_s,
        "repeat": repeat,
        "server_args": list(server_args),
        "client": client,
        "cells": [asdict(cell) for cell in cells],
    }


def _start_servers(
    servers: list[tuple[str, Any]],
    targets: list[str],
    work: Path,
    models: dict[str, Path],
    server_args: tuple[str, ...],
    progress: bool,
) -> None:
    """Start the servers the targets need, appending (name, handle) to `servers` as each
    comes up (the caller stops whatever is there, also after a failed start)."""
    from kinfer_dev.runtime.local_triton import available as triton_available
    from kinfer_dev.runtime.local_triton import start_local_triton
    from kinfer_dev.runtime.ort_server import start_ort_server
    from kinfer_dev.runtime.repository import write_model_repository

    if any(t.startswith("kinfer") for t in targets):
        repo = work / "ort-repo"
        write_model_repository(repo, MODEL, models)
        if "kinfer-http" in targets or "kinfer-grpc" in targets:
            _log(progress, "starting kinfer-ort-server ...")
            handle = start_ort_server(
                repo, load_models=[MODEL], work_dir=work / "ort", extra_args=server_args
            )
            servers.append(("kinfer", handle))
        if "kinfer-grpcio" in targets:
            _log(progress, "starting kinfer-ort-server with gRPC on grpc.aio ...")
            handle = start_ort_server(
                repo,
                load_models=[MODEL],
                work_dir=work / "ort-grpcio",
                extra_args=(*server_args, "--grpc-frontend=python"),
            )
            servers.append(("kinfer-grpcio", handle))
    if not any(t.startswith("triton") for t in targets):
        return
    if not triton_available():
        _log(progress, "the local Triton is not installed (nvidia-pytriton): skipping it")
        return
    repo = work / "triton-repo"
    write_model_repository(repo, MODEL, models, flavour="python")
    _log(progress, "starting the local Triton ...")
    servers.append(
        ("triton", start_local_triton(repo, load_models=[MODEL], work_dir=work / "triton"))
    )


def _summarise(
    target: str, concurrency: int, latencies_s: list[float], failures: int, elapsed_s: float
) -> Cell:
    values = np.asarray(latencies_s) * 1000.0 if latencies_s else np.asarray([np.nan])
    return Cell(
        target=target,
        concurrency=concurrency,
        requests=len(latencies_s),
        failures=failures,
        duration_s=round(elapsed_s, 3),
        p50_ms=float(np.percentile(values, 50)),
        p99_ms=float(np.percentile(values, 99)),
        throughput_rps=len(latencies_s) / elapsed_s if elapsed_s > 0 else 0.0,
    )


def _bench_raw(
    model_path: Path,
    batch: np.ndarray,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    max_requests: int,
    pause_s: float = 0.0,
) -> Cell:
    """session.run in `concurrency` threads; with `pause_s`, each sleeps that long before a run."""
    import onnxruntime as ort

    # The same session settings kinfer-ort-server uses by default.
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    feeds = {"input": batch}
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    measure_from = time.perf_counter() + warmup_s
    stop_at = measure_from + duration_s
    per_thread_cap = max(1, max_requests // concurrency)

    def worker(out: list[float]) -> None:
        while True:
            if pause_s:
                time.sleep(pause_s)
            start = time.perf_counter()
            if start >= stop_at or len(out) >= per_thread_cap:
                return
            session.run(None, feeds)
            end = time.perf_counter()
            if start >= measure_from:
                out.append(end - start)

    threads = [threading.Thread(target=worker, args=(latencies[i],)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = min(duration_s, time.perf_counter() - measure_from)
    target = "raw-paced" if pause_s else "raw"
    return _summarise(target, concurrency, [x for out in latencies for x in out], 0, elapsed)


def _bench_server(
    target: str,
    handle,
    protocol: str,
    batch: np.ndarray,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    max_requests: int,
) -> Cell:
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    return runner(
        _load(target, handle, protocol, batch, concurrency, duration_s, warmup_s, max_requests)
    )


async def _load(
    target, handle, protocol, batch, concurrency, duration_s, warmup_s, max_requests
) -> Cell:
    if protocol == "http":
        import tritonclient.http.aio as client_module

        client = client_module.InferenceServerClient(
            handle.http_url, conn_limit=max(100, concurrency)
        )
    else:
        import tritonclient.grpc.aio as client_module

        client = client_module.InferenceServerClient(handle.grpc_url)
    tensor = client_module.InferInput("input", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    outputs = [client_module.InferRequestedOutput("output")]
    latencies: list[float] = []
    failures = 0
    completed = 0  # warm-up included, for the server's CPU per request
    noop_p50_ms = None
    if concurrency == 1:
        noop: list[float] = []
        for _ in range(NOOP_CALLS):
            start = time.perf_counter()
            await client.is_server_live()
            noop.append(time.perf_counter() - start)
        noop_p50_ms = float(np.percentile(noop[NOOP_CALLS // 5 :], 50) * 1000.0)
    meter = _ServerMeter(handle)
    loop_start = time.perf_counter()
    measure_from = loop_start + warmup_s
    stop_at = measure_from + duration_s

    async def worker() -> None:
        nonlocal failures, completed
        while True:
            start = time.perf_counter()
            if start >= stop_at or len(latencies) >= max_requests:
                return
            try:
                result = await client.infer(MODEL, [tensor], outputs=outputs)
                result.as_numpy("output")
            except Exception:  # counted: a benchmark reports failures, it does not stop on them
                failures += 1
                continue
            end = time.perf_counter()
            completed += 1
            if start >= measure_from:
                latencies.append(end - start)

    try:
        await asyncio.wait_for(
            asyncio.gather(*(worker() for _ in range(concurrency))), warmup_s + duration_s + 120
        )
    finally:
        await client.close()
    elapsed = min(duration_s, time.perf_counter() - measure_from)
    cell = _summarise(target, concurrency, latencies, failures, elapsed)
    cell.noop_p50_ms = noop_p50_ms
    meter.stop()
    meter.fill(cell, completed)
    return cell


def find_perf_client() -> str | None:
    """kinfer-perf, where `make grpc-frontend` puts it (beside this Python) or on PATH."""
    from kinfer_dev.runtime.process import find_executable

    return find_executable(PERF_CLIENT)


def native_request(protocol: str, batch: np.ndarray) -> tuple[bytes, int | None]:
    """The request kinfer-perf repeats, as tritonclient would send it: (body, JSON size).

    gRPC: a serialized ModelInferRequest (raw contents, the output asked for); HTTP: the
    body tritonclient builds (JSON header + binary tensor), JSON size for its header."""
    if protocol == "http":
        import tritonclient.http as httpclient

        tensor = httpclient.InferInput("input", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch, binary_data=True)
        outputs = [httpclient.InferRequestedOutput("output", binary_data=True)]
        body, json_size = httpclient.InferenceServerClient.generate_request_body(
            [tensor], outputs=outputs
        )
        return body, json_size
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="input", datatype="FP32", shape=list(batch.shape))
    request.outputs.add(name="output")
    request.raw_input_contents.append(np.ascontiguousarray(batch, np.float32).tobytes())
    return request.SerializeToString(), None


def _bench_native(
    target: str,
    handle,
    protocol: str,
    batch: np.ndarray,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    max_requests: int,
) -> Cell:
    """One cell measured by kinfer-perf (a subprocess, bounded), with the server's CPU."""
    body, json_size = native_request(protocol, batch)
    with tempfile.NamedTemporaryFile(prefix="kinfer-perf-", suffix=".bin") as request_file:
        request_file.write(body)
        request_file.flush()
        command = [
            find_perf_client() or PERF_CLIENT,
            f"--protocol={protocol}",
            f"--url={handle.grpc_url if protocol == 'grpc' else handle.http_url}",
            f"--model={MODEL}",
            f"--request={request_file.name}",
            f"--json-size={-1 if json_size is None else json_size}",
            f"--concurrency={concurrency}",
            f"--warmup={warmup_s}s",
            f"--duration={duration_s}s",
            f"--max-requests={max_requests}",
        ]
        meter = _ServerMeter(handle)
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=warmup_s + duration_s + 120
        )
        meter.stop()
    if done.returncode != 0:
        raise RuntimeError(f"{PERF_CLIENT} failed ({done.returncode}): {done.stderr.strip()}")
    figures = json.loads(done.stdout)
    cell = Cell(
        target=target,
        concurrency=concurrency,
        requests=figures["requests"],
        failures=figures["failures"],
        duration_s=round(figures["duration_s"], 3),
        p50_ms=figures["p50_ms"] if figures["requests"] else float("nan"),
        p99_ms=figures["p99_ms"] if figures["requests"] else float("nan"),
        throughput_rps=figures["throughput_rps"],
    )
    meter.fill(cell, figures["completed"])
    return cell


class _ServerMeter:
    """The server's own figures over one cell, whatever the client: its mean latency (from
    its metrics) and the CPU its processes used per request."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self.totals = _server_totals(handle)
        self.cpu_s = _tree_cpu_s(handle.process.pid)
        self.totals_after: tuple[float, float] | None = None
        self.cpu_after_s: float | None = None

    def stop(self) -> None:
        self.cpu_after_s = _tree_cpu_s(self.handle.process.pid)
        self.totals_after = _server_totals(self.handle)

    def fill(self, cell: Cell, completed: int) -> None:
        """Set the cell's server figures; `completed`: requests answered, warm-up included."""
        if self.cpu_s is not None and self.cpu_after_s is not None and completed:
            cell.server_cpu_us = (self.cpu_after_s - self.cpu_s) / completed * 1e6
        before, after = self.totals, self.totals_after
        if before is not None and after is not None and after[1] > before[1]:
            cell.server_mean_ms = (after[0] - before[0]) / (after[1] - before[1]) * 1000.0


def _tree_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) of `pid` and every process under it, from /proc; None
    where /proc is not there."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        parents[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    if pid not in cpu:
        return None
    total = 0.0
    for proc, seconds in cpu.items():
        ancestor = proc
        while ancestor not in (pid, 0, 1) and ancestor in parents:
            ancestor = parents[ancestor]
        if ancestor == pid:
            total += seconds
    return total


def _server_totals(handle) -> tuple[float, float] | None:
    """(seconds, requests) the server reports so far over all models: its latency sum and count."""
    import urllib.request

    try:
        with urllib.request.urlopen(handle.metrics_url, timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return None
    sums = {"seconds": 0.0, "count": 0.0}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name == "kinfer_inference_request_duration_seconds_sum":
            sums["seconds"] += float(line.rsplit(" ", 1)[1])
        elif name == "kinfer_inference_request_duration_seconds_count":
            sums["count"] += float(line.rsplit(" ", 1)[1])
        elif name == "nv_inference_request_duration_us":
            sums["seconds"] += float(line.rsplit(" ", 1)[1]) / 1e6
        elif name == "nv_inference_request_success":
            sums["count"] += float(line.rsplit(" ", 1)[1])
    return sums["seconds"], sums["count"]


def _median_cells(rounds: list[list[Cell]]) -> list[Cell]:
    merged = []
    for cells in zip(*rounds, strict=True):
        first = cells[0]
        noop = [c.noop_p50_ms for c in cells if c.noop_p50_ms is not None]
        server = [c.server_mean_ms for c in cells if c.server_mean_ms is not None]
        server_cpu = [c.server_cpu_us for c in cells if c.server_cpu_us is not None]
        merged.append(
            Cell(
                target=first.target,
                concurrency=first.concurrency,
                requests=sum(c.requests for c in cells),
                failures=sum(c.failures for c in cells),
                duration_s=sum(c.duration_s for c in cells),
                p50_ms=float(np.median([c.p50_ms for c in cells])),
                p99_ms=float(np.median([c.p99_ms for c in cells])),
                throughput_rps=float(np.median([c.throughput_rps for c in cells])),
                noop_p50_ms=float(np.median(noop)) if noop else None,
                server_mean_ms=float(np.median(server)) if server else None,
                server_cpu_us=float(np.median(server_cpu)) if server_cpu else None,
            )
        )
    return merged


def _add_ratios(cells: list[Cell]) -> None:
    by_key = {(cell.target, cell.concurrency): cell for cell in cells}
    for cell in cells:
        raw = by_key.get(("raw", cell.concurrency))
        if raw is not None and cell.target != "raw":
            cell.p50_added_ms = cell.p50_ms - raw.p50_ms
            cell.throughput_vs_raw = (
                cell.throughput_rps / raw.throughput_rps if raw.throughput_rps else None
            )
        protocol = TARGETS.get(cell.target, ("", cell.target.rsplit("-", 1)[-1]))[1]
        triton = by_key.get((f"triton-{protocol}", cell.concurrency))
        if triton is not None and cell.target.startswith("kinfer"):
            cell.throughput_vs_triton = (
                cell.throughput_rps / triton.throughput_rps if triton.throughput_rps else None
            )
            cell.p50_vs_triton = cell.p50_ms / triton.p50_ms if triton.p50_ms else None


def format_table(report: dict) -> str:
    """The report as a fixed-width table (ratios '-' where they do not apply)."""

    def fmt(value, pattern: str) -> str:
        return "-" if value is None else pattern.format(value)

    machine = report["machine"]
    lines = [
        f"model: {report['model']['name']} {report['model']['shape']}, batch 1; "
        f"machine: {machine['cpu']}, {machine['cores']} cores; onnxruntime "
        f"{machine['onnxruntime']}; load average {machine.get('load_average_before', ['?'])[0]} "
        f"-> {machine.get('load_average_after', ['?'])[0]}; client "
        f"{report.get('client', 'tritonclient')}",
        f"{'target':<13} {'conc':>4} {'requests':>8} {'fail':>4} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'req/s':>9} "
        f"{'p50+raw ms':>10} {'noop p50':>8} {'srv mean':>8} {'srv cpu us':>10} "
        f"{'thr/raw':>7} {'thr/triton':>10} {'p50/triton':>10}",
    ]
    for cell in report["cells"]:
        lines.append(
            f"{cell['target']:<13} {cell['concurrency']:>4} {cell['requests']:>8} "
            f"{cell['failures']:>4} "
            f"{cell['p50_ms']:>8.3f} {cell['p99_ms']:>8.3f} {cell['throughput_rps']:>9.0f} "
            f"{fmt(cell['p50_added_ms'], '{:.3f}'):>10} "
            f"{fmt(cell.get('noop_p50_ms'), '{:.3f}'):>8} "
            f"{fmt(cell.get('server_mean_ms'), '{:.3f}'):>8} "
            f"{fmt(cell.get('server_cpu_us'), '{:.0f}'):>10} "
            f"{fmt(cell['throughput_vs_raw'], '{:.2f}'):>7} "
            f"{fmt(cell['throughput_vs_triton'], '{:.2f}'):>10} "
            f"{fmt(cell['p50_vs_triton'], '{:.2f}'):>10}"
        )
    return "\n".join(lines)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"
