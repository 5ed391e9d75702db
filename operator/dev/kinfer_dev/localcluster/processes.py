"""Start, record, check and stop the cluster's processes by PID, with logs in the state dir."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


class StartupError(RuntimeError):
    """A component did not come up in time; the message carries its log tail."""


@dataclass(frozen=True)
class ProcessRecord:
    """What `down` and `status` need to find a process again: its PID and start time."""

    name: str
    pid: int
    argv: list[str]
    log: str
    # Start time in clock ticks since boot (/proc/<pid>/stat field 22): a PID
    # reused by an unrelated process has another one, so we never kill it.
    start_ticks: int


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; fields after it are plain.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def is_alive(record: ProcessRecord) -> bool:
    ticks = _start_ticks(record.pid)
    if ticks is None or ticks != record.start_ticks:
        return False
    try:
        state = Path(f"/proc/{record.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def log_tail(path: str | Path, lines: int = 25) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


class ProcessTable:
    """The processes of one cluster, persisted as JSON under the state dir."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / "processes.json"
        self.log_dir = state_dir / "logs"

    def load(self) -> list[ProcessRecord]:
        if not self.path.exists():
            return []
        return [ProcessRecord(**raw) for raw in json.loads(self.path.read_text())]

    def _save(self, records: list[ProcessRecord]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(r) for r in records], indent=2))
        tmp.replace(self.path)

    def get(self, name: str) -> ProcessRecord | None:
        return next((r for r in self.load() if r.name == name), None)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> ProcessRecord:
        """Start `argv` detached (own session: it outlives the CLI), stdout+stderr to its log."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        ticks = _start_ticks(process.pid)
        record = ProcessRecord(name, process.pid, list(argv), str(log_path), ticks or 0)
        records = [r for r in self.load() if r.name != name] + [record]
        self._save(records)
        return record

    def stop(self, name: str, timeout_s: float = 15.0) -> None:
        record = self.get(name)
        if record is not None:
            stop_process(record, timeout_s)
            self._save([r for r in self.load() if r.name != name])

    def stop_all(self, timeout_s: float = 15.0) -> None:
        """Stop in reverse start order, so clients go before the servers they talk to."""
        for record in reversed(self.load()):
            stop_process(record, timeout_s)
        if self.path.exists():
            self._save([])


def stop_process(record: ProcessRecord, timeout_s: float = 15.0) -> None:
    """SIGTERM the recorded process group, SIGKILL it after `timeout_s`; never a reused PID."""
    if not is_alive(record):
        return
    # Each component leads its own session (start_new_session), so its group
    # id is its PID: children it started (e.g. Triton's stubs) go with it.
    try:
        os.killpg(record.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_alive(record):
            _reap(record.pid)
            return
        _reap(record.pid)
        time.sleep(0.1)
    try:
        os.killpg(record.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    _reap(record.pid)


def _reap(pid: int) -> None:
    # Only a child of this process can be reaped; others are reaped by init.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_until(
    what: str,
    condition: Callable[[], bool],
    timeout_s: float,
    *,
    record: ProcessRecord | None = None,
    interval_s: float = 0.2,
) -> None:
    """Poll `condition` until true; fail with the component's log tail on timeout or death."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if condition():
                return
        except Exception:
            pass
        if record is not None and not is_alive(record):
            raise StartupError(
                f"{record.name} exited while waiting for {what}; last lines of {record.log}:\n"
                + log_tail(record.log)
            )
        if time.monotonic() > deadline:
            tail = f"; last lines of {record.log}:\n{log_tail(record.log)}" if record else ""
            raise StartupError(f"timed out after {timeout_s:.0f}s waiting for {what}{tail}")
        time.sleep(interval_s)


def https_ok(url: str, context: ssl.SSLContext, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, context=context, timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
