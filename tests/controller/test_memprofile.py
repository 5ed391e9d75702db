"""KINFER_TRACEMALLOC: SIGUSR2 writes the live allocation sites; KINFER_MEMSTATS: a census
without tracing; unset, nothing is traced."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from kinfer.controller import memprofile

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


CENSUS = """
import os, signal
from kinfer.controller import memprofile


class Informer:  # a store the census sizes deeply, by its kind
    kind = "Pod"

    def __init__(self):
        self.objects = {i: {"name": f"pod-{i:06d}" * 10} for i in range(20000)}


store = Informer()
path = memprofile.install_from_env()
os.kill(os.getpid(), signal.SIGUSR2)
print(path)
"""


def test_sigusr2_writes_a_census_without_tracing(tmp_path: Path) -> None:
    report = tmp_path / "census.txt"
    env = {k: v for k, v in os.environ.items() if k != "KINFER_TRACEMALLOC"}
    env["KINFER_MEMSTATS"] = str(report)
    done = subprocess.run(
        [sys.executable, "-c", CENSUS], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    text = report.read_text()
    assert "RSS" in text.splitlines()[0]
    pymalloc = text.split("## pymalloc")[1].split("##")[0]
    allocated = float(re.search(r"([\d.]+) MiB\s+in allocated blocks", pymalloc).group(1))
    assert allocated > 1.0, pymalloc
    assert "## glibc malloc" in text and "## gc-tracked objects by type" in text
    # 20,000 dicts of one 10-character name repeated 10 times: 100-character strings plus the
    # dicts themselves, several MiB, all held by the one store.
    [store] = [line for line in text.split("## stores")[1].splitlines() if "Informer Pod" in line]
    assert float(store.split()[0]) >= 5.0, store


def test_pymalloc_totals_parse_from_its_text() -> None:
    text = "\n".join(
        [
            "class   size   num pools   blocks in use  avail blocks",
            "# arenas allocated total           =                  397",
            "397 arenas * 1048576 bytes/arena   =          416,284,672",
            "# bytes in allocated blocks        =          380,000,000",
            "# bytes in available blocks        =           25,000,000",
        ]
    )
    totals = memprofile.pymalloc_summary(text)
    assert totals == {
        "397 arenas * 1048576 bytes/arena": 416_284_672,
        "in allocated blocks": 380_000_000,
        "in available blocks": 25_000_000,
    }
