"""`kinfer cluster up` over a previous cluster's state dir: refused while one of its processes
still runs, started afresh once every one is gone (killed, or the machine rebooted)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from kinfer_dev.localcluster.cluster import LocalCluster
from kinfer_dev.localcluster.config import ClusterConfig
from kinfer_dev.localcluster.processes import ProcessRecord, StartupError, _start_ticks


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def _record(name: str, process: subprocess.Popen[bytes]) -> ProcessRecord:
    ticks = _start_ticks(process.pid)
    assert ticks is not None
    return ProcessRecord(name=name, pid=process.pid, argv=["sleep"], log="", start_ticks=ticks)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait(timeout=30)


def _cluster_with(tmp_path: Path, records: list[ProcessRecord]) -> tuple[LocalCluster, io.StringIO]:
    state_dir = tmp_path / "cluster"
    state_dir.mkdir()
    (state_dir / "processes.json").write_text(json.dumps([asdict(r) for r in records]))
    out = io.StringIO()
    return LocalCluster(ClusterConfig(state_dir, tmp_path / "cache"), out=out), out


def test_a_previous_cluster_with_a_process_still_running_is_refused(tmp_path: Path) -> None:
    running, stopped = _sleeper(), _sleeper()
    try:
        records = [_record("etcd", stopped), _record("kube-apiserver", running)]
        _stop(stopped)
        cluster, _ = _cluster_with(tmp_path, records)
        with pytest.raises(StartupError, match=r"partly running \(kube-apiserver\)"):
            cluster._check_previous()
    finally:
        _stop(running)


def test_a_previous_cluster_whose_processes_are_all_gone_is_started_afresh(
    tmp_path: Path,
) -> None:
    gone = _sleeper()
    records = [_record("etcd", gone), _record("prometheus", gone)]
    _stop(gone)
    cluster, out = _cluster_with(tmp_path, records)
    cluster._check_previous()
    assert "has stopped" in out.getvalue()
    assert not cluster.is_running()
