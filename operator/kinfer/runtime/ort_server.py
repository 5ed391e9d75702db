"""Start kinfer-ort-server as a local process (tests, the local cluster's pod runner, the demo)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from kinfer.runtime.process import ServerHandle, free_port, spawn


def start_ort_server(
    repo: str | Path,
    http_port: int | None = None,
    grpc_port: int | None = None,
    metrics_port: int | None = None,
    host: str = "127.0.0.1",
    load_models: tuple[str, ...] | list[str] = (),
    work_dir: str | Path | None = None,
    extra_args: tuple[str, ...] | list[str] = (),
    ready_timeout_s: float = 60.0,
) -> ServerHandle:
    """Start `kinfer-ort-server` on `host` in explicit mode and wait until /v2/health/ready.

    Same shape as `start_local_triton`; the log is `<work_dir>/kinfer-ort-server.log`.
    """
    owned_dir = work_dir is None
    work = Path(tempfile.mkdtemp(prefix="kinfer-ort-")) if owned_dir else Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    http_port = http_port or free_port(host)
    grpc_port = grpc_port or free_port(host)
    metrics_port = metrics_port or free_port(host)
    argv = [
        sys.executable,
        "-m",
        "kinfer_ort_server",
        f"--model-repository={Path(repo).resolve()}",
        "--model-control-mode=explicit",
        f"--http-address={host}",
        f"--grpc-address={host}",
        f"--metrics-address={host}",
        f"--http-port={http_port}",
        f"--grpc-port={grpc_port}",
        f"--metrics-port={metrics_port}",
        *[f"--load-model={name}" for name in load_models],
        *extra_args,
    ]
    log_path = work / "kinfer-ort-server.log"
    process = spawn("kinfer-ort-server", argv, dict(os.environ), log_path, cwd=work)
    handle = ServerHandle(
        "kinfer-ort-server", process, host, http_port, grpc_port, metrics_port, log_path
    )
    if owned_dir:
        handle.cleanup.append(lambda: shutil.rmtree(work, ignore_errors=True))
    handle.wait_ready(ready_timeout_s)
    return handle
