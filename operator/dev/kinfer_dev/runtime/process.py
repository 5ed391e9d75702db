"""A model-server child process (local Triton or kinfer-ort-server): ports, readiness, stop."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def find_executable(name: str) -> str | None:
    """`name` beside this Python (the virtualenv's bin/, where `make install` and
    `make grpc-frontend` put kinfer's programs), else on PATH; None if neither has it."""
    beside = Path(sys.executable).parent / name
    if os.access(beside, os.X_OK) and beside.is_file():
        return str(beside)
    return shutil.which(name)


@dataclass
class ServerHandle:
    """A running model server; `stop()` ends it (and is safe to call twice)."""

    name: str
    process: subprocess.Popen
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int
    log_path: Path
    cleanup: list = field(default_factory=list)

    @property
    def http_url(self) -> str:
        """host:port for tritonclient.http."""
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """host:port for tritonclient.grpc."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, max_chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-max_chars:]
        except OSError:
            return ""

    def wait_ready(self, timeout_s: float) -> None:
        """Wait until /v2/health/ready answers 200; raise with the log tail if it never does."""
        deadline = time.monotonic() + timeout_s
        url = f"http://{self.host}:{self.http_port}/v2/health/ready"
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(
                    f"{self.name} exited with code {self.process.returncode} before it was ready; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(url, timeout=2) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(
            f"{self.name} not ready on {url} within {timeout_s} s; log "
            f"{self.log_path}:\n{self.log_tail()}"
        )

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout_s`; returns the exit code."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        while self.cleanup:
            self.cleanup.pop()()
        return self.process.returncode

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def spawn(
    name: str, argv: list[str], env: dict[str, str], log_path: Path, cwd: Path | None = None
) -> subprocess.Popen:
    """Start `argv` in its own process group (stop() ends its children too); log to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def start_server(
    name: str,
    command: Callable[[Path], list[str]],
    env: dict[str, str],
    repo: str | Path,
    http_port: int | None,
    grpc_port: int | None,
    metrics_port: int | None,
    host: str,
    load_models: tuple[str, ...] | list[str],
    work_dir: str | Path | None,
    extra_args: tuple[str, ...] | list[str],
    ready_timeout_s: float,
) -> ServerHandle:
    """Start a model server in explicit mode on `host` and wait until /v2/health/ready.

    Both runtimes take tritonserver's flags for the repository, control mode, addresses,
    ports and models, so only `command(work_dir)` (the executable and its own flags)
    differs. Ports default to free ones; `work_dir` (default: a temporary directory removed
    on stop) holds the log `<name>.log`.
    """
    owned_dir = work_dir is None
    work = Path(tempfile.mkdtemp(prefix=f"kinfer-{name}-")) if owned_dir else Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    http_port = http_port or free_port(host)
    grpc_port = grpc_port or free_port(host)
    metrics_port = metrics_port or free_port(host)
    argv = [
        *command(work),
        f"--model-repository={Path(repo).resolve()}",
        "--model-control-mode=explicit",
        f"--http-address={host}",
        f"--grpc-address={host}",
        f"--metrics-address={host}",
        f"--http-port={http_port}",
        f"--grpc-port={grpc_port}",
        f"--metrics-port={metrics_port}",
        *[f"--load-model={model}" for model in load_models],
        *extra_args,
    ]
    log_path = work / f"{name}.log"
    process = spawn(name, argv, env, log_path, cwd=work)
    handle = ServerHandle(name, process, host, http_port, grpc_port, metrics_port, log_path)
    if owned_dir:
        handle.cleanup.append(lambda: shutil.rmtree(work, ignore_errors=True))
    handle.wait_ready(ready_timeout_s)
    return handle
