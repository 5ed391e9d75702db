"""CI's soak: `kinfer bench soak` for 3 minutes (two 90 s cycles of spike and quiet) on a
local cluster of its own: no request fails through the scale-outs, scale-ins and tier
switches, and the operator's and the servers' memory stay within 10 % from the first cycle's
end to the last's. The 30-minute soak is the benchmark (docs/reliability.md).

Local cluster only: the soak runs the model servers as local processes to read their memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from e2e.conftest import _free_pod_cidr

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("KUBECONFIG")),
    reason="the soak starts a local cluster of its own (KUBECONFIG names another cluster)",
)

SOAK_TIMEOUT_S = 1200  # 3 minutes of load; the cluster, the models and Ready before it


def test_three_minutes_of_spikes_fail_no_request_and_leak_no_memory(tmp_path: Path) -> None:
    state_dir = tmp_path / "soak-state"
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    argv = [
        sys.executable, "-m", "kinfer", "bench", "soak", "--minutes", "3", "--cycle-s", "90",
        "--cold-start-s", "10", f"--state-dir={state_dir}", f"--pod-cidr={_free_pod_cidr()}",
        "--json",
    ]  # fmt: skip
    try:
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=SOAK_TIMEOUT_S, check=False
        )
    finally:
        subprocess.run(
            [sys.executable, "-m", "kinfer", "cluster", "down", f"--state-dir={state_dir}"],
            env=env, capture_output=True, timeout=300, check=False,
        )  # fmt: skip
    print(done.stdout[-6000:], done.stderr[-3000:])
    lines = done.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("{"), f"no result (exit {done.returncode})"
    result = json.loads(lines[-1])
    assert result["failed"] == 0, result["errors"]
    assert result["sent"] > 0
    assert result["tier_switches"] > 0 and result["scale_outs"] > 0, result
    names = [m["process"] for m in result["memory"]]
    assert "operator" in names and any(n.startswith("server ") for n in names), result
    assert result["passed"] and done.returncode == 0, result["memory"]
