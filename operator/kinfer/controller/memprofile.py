"""Where the operator's memory goes: diagnostics, off unless asked for.

With `KINFER_TRACEMALLOC=<file>` in its environment, `kinfer run` traces its allocations
(Python's tracemalloc, 8 frames: slower, for a diagnostic run only) and, on each SIGUSR2,
writes the largest live allocation sites to that file:

    KINFER_TRACEMALLOC=/tmp/kinfer-mem.txt kinfer run ...
    kill -USR2 <pid>; cat /tmp/kinfer-mem.txt

With `KINFER_MEMSTATS=<file>` instead, nothing is traced (no cost until the signal). SIGUSR2
writes a census: the process's RSS, how full Python's object allocator (pymalloc) keeps its
arenas, and the live objects the garbage collector tracks, by type (count and shallow size).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import re
import signal
import sys
import tempfile
import time
import tracemalloc
from collections import Counter, deque
from pathlib import Path
from types import FunctionType, ModuleType

ENV = "KINFER_TRACEMALLOC"
ENV_STATS = "KINFER_MEMSTATS"
FRAMES = 8
TOP_LINES = 40
TOP_TRACEBACKS = 12
TOP_TYPES = 25


def install_from_env() -> Path | None:
    """Handle SIGUSR2 when ENV (tracing) or ENV_STATS (a census) names a file; the file, or
    None."""
    if target := os.environ.get(ENV):
        path = Path(target)
        tracemalloc.start(FRAMES)
        signal.signal(signal.SIGUSR2, lambda _signum, _frame: write_report(path))
        return path
    if target := os.environ.get(ENV_STATS):
        path = Path(target)
        signal.signal(signal.SIGUSR2, lambda _signum, _frame: write_census(path))
        return path
    return None


def _stamp() -> str:
    return f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} pid {os.getpid()}"


def write_report(path: Path) -> None:
    """The largest live allocation sites, by line and by traceback, into `path`."""
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    traced, peak = tracemalloc.get_traced_memory()
    lines = [
        f"{_stamp()}: traced {traced / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB",
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


def rss_mib() -> float:
    """This process's resident set, from /proc (0 where there is none)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pymalloc_summary(stats: str) -> dict[str, int]:
    """The totals of sys._debugmallocstats()'s text, in bytes: 'allocated in used blocks',
    'available in free blocks', 'in N arenas' and so on, keyed by their words."""
    totals = {}
    for line in stats.splitlines():
        match = re.match(r"#\s*bytes (.+?)\s*=\s*([\d,]+)$", line.strip())
        if match is None:
            match = re.match(r"(?:#\s*)?(\d+ arenas \* \d+ bytes/arena)\s*=\s*([\d,]+)$", line)
        if match is not None:
            totals[match.group(1)] = int(match.group(2).replace(",", ""))
    return totals


def _debugmallocstats() -> str:
    """sys._debugmallocstats() writes to C's stderr: caught through a temporary file."""
    with tempfile.TemporaryFile(mode="w+") as out:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        return out.read()


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def glibc_malloc() -> dict[str, int]:
    """glibc's malloc totals in bytes (mallinfo2): what its heaps hold from the system, what
    is in use, what is free inside them, and what it mmapped for large blocks. Empty where
    the C library has no mallinfo2."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = _Mallinfo2
        info = libc.mallinfo2()
    except (OSError, AttributeError):
        return {}
    return {
        "heaps (arena)": info.arena,
        "in use (uordblks)": info.uordblks,
        "free in heaps (fordblks)": info.fordblks,
        "mmapped blocks (hblkhd)": info.hblkhd,
    }


def census(objects: list[object]) -> list[tuple[str, int, int]]:
    """(type name, count, total shallow size in bytes) of `objects`, largest total first."""
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for obj in objects:
        name = type(obj).__qualname__
        counts[name] += 1
        sizes[name] += sys.getsizeof(obj)
    return [(name, counts[name], size) for name, size in sizes.most_common()]


def deep_size(obj: object, seen: set[int]) -> int:
    """Bytes held by `obj` and what it reaches through containers, attributes and slots,
    counting nothing already in `seen` (which it extends)."""
    total, stack = 0, [obj]
    while stack:
        item = stack.pop()
        if id(item) in seen or isinstance(item, type | ModuleType | FunctionType):
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if isinstance(item, dict):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, list | tuple | set | frozenset | deque):
            stack += list(item)
        attributes = getattr(item, "__dict__", None)
        if isinstance(attributes, dict):
            stack.append(attributes)
        for slot in getattr(type(item), "__slots__", ()):
            if isinstance(slot, str) and hasattr(item, slot):
                stack.append(getattr(item, slot))
    return total


# What the census sizes deeply: instances of these types (by name), each type's total.
STORES = ("Informer", "LoopMemory", "ResourceMemories", "Scheduler", "CollectorRegistry")


def store_sizes(objects: list[object]) -> list[tuple[str, int, int]]:
    """(store, instances, deep bytes) of the STORES among `objects`; an Informer by its kind.
    A later store does not count what an earlier one holds."""
    seen: set[int] = {id(objects)}
    found: dict[str, list[object]] = {}
    for obj in objects:
        name = type(obj).__name__
        if name in STORES:
            label = f"Informer {getattr(obj, 'kind', '?')}" if name == "Informer" else name
            found.setdefault(label, []).append(obj)
    return [
        (label, len(items), sum(deep_size(item, seen) for item in items))
        for label, items in sorted(found.items())
    ]


def write_census(path: Path) -> None:
    """RSS, pymalloc's totals and the live objects by type, into `path`."""
    lines = [f"{_stamp()}: RSS {rss_mib():.1f} MiB", "## pymalloc"]
    lines += [
        f"{v / 2**20:10.1f} MiB  {k}" for k, v in pymalloc_summary(_debugmallocstats()).items()
    ]
    lines.append("## glibc malloc")
    lines += [f"{v / 2**20:10.1f} MiB  {k}" for k, v in glibc_malloc().items()]
    objects = gc.get_objects()
    lines.append(f"## gc-tracked objects by type: {len(objects)} (shallow sizes)")
    for name, count, size in census(objects)[:TOP_TYPES]:
        lines.append(f"{size / 2**20:8.1f} MiB {count:9d}  {name}")
    coroutines = Counter(
        getattr(obj, "__qualname__", "?")
        for obj in objects
        if type(obj).__name__ in ("coroutine", "async_generator", "generator")
    )
    lines.append(f"## coroutines and generators by name: {sum(coroutines.values())}")
    lines += [f"{count:9d}  {name}" for name, count in coroutines.most_common(TOP_TYPES)]
    lines.append("## stores (deep sizes)")
    for name, count, size in store_sizes(objects):
        lines.append(f"{size / 2**20:8.1f} MiB {count:9d}  {name}")
    path.write_text("\n".join(lines) + "\n")
