"""The operator caps glibc's malloc arenas: many threads otherwise each get one."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

# Each new thread that allocates gets an arena of its own until glibc's cap; malloc_stats()
# prints one "Arena N:" block per arena to stderr.
PROGRAM = textwrap.dedent(
    """
    import ctypes, sys, threading
    from kinfer.controller.handlers import limit_malloc_arenas
    if sys.argv[1] == "capped":
        assert limit_malloc_arenas(2)
    def work():
        blocks = [bytearray(4096) for _ in range(256)]
        done.wait()
    done = threading.Event()
    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    ctypes.CDLL(None).malloc_stats()
    done.set()
    for thread in threads:
        thread.join()
    """
)


def arenas(mode: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return sum(1 for line in result.stderr.splitlines() if line.startswith("Arena "))


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the C library is not glibc")
def test_threads_share_two_arenas_once_capped() -> None:
    assert arenas("default") > 2
    assert arenas("capped") <= 2
