"""Where the operator's memory goes: a diagnostic, off unless asked for.

With `KINFER_TRACEMALLOC=<file>` in its environment, `kinfer run` traces its allocations
(Python's tracemalloc, 8 frames: slower, for a diagnostic run only) and, on each SIGUSR2,
writes the largest live allocation sites to that file:

    KINFER_TRACEMALLOC=/tmp/kinfer-mem.txt kinfer run ...
    kill -USR2 <pid>; cat /tmp/kinfer-mem.txt
"""

from __future__ import annotations

import os
import signal
import time
import tracemalloc
from pathlib import Path

ENV = "KINFER_TRACEMALLOC"
FRAMES = 8
TOP_LINES = 40
TOP_TRACEBACKS = 12


def install_from_env() -> Path | None:
    """Start tracing and handle SIGUSR2 when ENV names a file; the file, or None."""
    target = os.environ.get(ENV)
    if not target:
        return None
    path = Path(target)
    tracemalloc.start(FRAMES)
    signal.signal(signal.SIGUSR2, lambda _signum, _frame: write_report(path))
    return path


def write_report(path: Path) -> None:
    """The largest live allocation sites, by line and by traceback, into `path`."""
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    traced, peak = tracemalloc.get_traced_memory()
    lines = [
        f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} pid {os.getpid()}: "
        f"traced {traced / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB",
        f"## top {TOP_LINES} lines",
    ]
    for stat in snapshot.statistics("lineno")[:TOP_LINES]:
        frame = stat.traceback[0]
        lines.append(
            f"{stat.size / 2**20:8.1f} MiB {stat.count:9d}  {frame.filename}:{frame.lineno}"
        )
    lines.append(f"## top {TOP_TRACEBACKS} tracebacks")
    for stat in snapshot.statistics("traceback")[:TOP_TRACEBACKS]:
        lines.append(f"{stat.size / 2**20:8.1f} MiB {stat.count:9d}")
        lines += [f"    {frame.filename}:{frame.lineno}" for frame in stat.traceback]
    path.write_text("\n".join(lines) + "\n")
