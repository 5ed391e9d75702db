"""Start kinfer-ort-server as a local process (tests, the local cluster's pod runner, the demo)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from kinfer_dev.runtime.process import ServerHandle, start_server


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
    return start_server(
        "kinfer-ort-server",
        lambda work: [sys.executable, "-m", "kinfer_ort_server"],
        dict(os.environ),
        repo,
        http_port,
        grpc_port,
        metrics_port,
        host,
        load_models,
        work_dir,
        extra_args,
        ready_timeout_s,
    )
