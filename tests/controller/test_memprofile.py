"""KINFER_TRACEMALLOC: SIGUSR2 writes the live allocation sites; unset, nothing is traced."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import os, signal, sys
from kinfer.controller import memprofile
path = memprofile.install_from_env()
hoard = [bytearray(1024) for _ in range(20000)]  # about 20 MiB from this line
if path is not None:
    os.kill(os.getpid(), signal.SIGUSR2)
print(path)
"""


def run(env_value: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KINFER_TRACEMALLOC"}
    if env_value is not None:
        env["KINFER_TRACEMALLOC"] = env_value
    return subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )


def test_sigusr2_writes_the_largest_sites(tmp_path: Path) -> None:
    report = tmp_path / "mem.txt"
    done = run(str(report))
    assert done.returncode == 0, done.stderr
    text = report.read_text()
    assert "## top 40 lines" in text and "## top 12 tracebacks" in text
    [first] = [line for line in text.splitlines()[2:3]]
    size_mib = float(first.split()[0])
    assert size_mib >= 15 and "<string>:5" in first, text


def test_unset_traces_nothing() -> None:
    done = run(None)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "None"
