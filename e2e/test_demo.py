"""`make demo`'s load spike end to end, then `kinfer plot` on what it left.

The demo runs as the user runs it (`kinfer cluster demo`), on a local cluster of its own in a
temporary state dir and pod range: it brings the cluster up, starts the operator, applies the
tiered autoscaled service and drives the spike. The tier must step down and come back, the
service must scale out, the timeline PNG must exist and the last line must be
`failed requests: 0`. Then `kinfer plot` draws the same service from Prometheus range queries
(the model servers' and the operator's metrics) and its Events.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kinfer_dev.localcluster.kubectl import Kubectl

NAMESPACE = "kinfer-demo"
NAME = "demo-mlp"
PNG = b"\x89PNG\r\n\x1a\n"
# Cluster up (binaries cached), model build, Ready, the spike (at most 360 s), status.slo.
DEMO_TIMEOUT_S = 1200
# The demo service's metrics window (15 s) empties, then a period (5 s) and the dwell (10 s).
IDLE_RETURN_S = 180


@dataclass
class DemoRun:
    state_dir: Path
    returncode: int
    lines: list[str]
    log: Path

    def line_after(self, prefix: str) -> str:
        found = [line[len(prefix) :] for line in self.lines if line.startswith(prefix)]
        assert found, f"no line starting {prefix!r}; see {self.log}"
        return found[-1].strip()

    def kubectl(self) -> Kubectl:
        state = json.loads((self.state_dir / "cluster.json").read_text())
        return Kubectl(str(Path(state["bin_dir"]) / "kubectl"), self.state_dir / "kubeconfig")

    @property
    def prometheus_url(self) -> str:
        return str(json.loads((self.state_dir / "cluster.json").read_text())["prometheus_url"])


def _free_pod_cidr() -> str:
    """A /16 of 127.0.0.0/8 nothing listens in, apart from the e2e cluster's (from 127.2)."""
    from kinfer_dev.localcluster.cluster import _listening_addresses

    busy = {a.packed[1] for a in _listening_addresses() if a.packed[0] == 127}
    for second in range(150, 250):
        if second not in busy:
            return f"127.{second}.0.0/16"
    raise RuntimeError("no free 127.x.0.0/16 for the demo's cluster")


def _kinfer(*args: str, env: dict[str, str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kinfer", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    if os.environ.get("KUBECONFIG"):
        pytest.skip("the demo brings up a local cluster of its own: run without KUBECONFIG")
    root = tmp_path_factory.mktemp("demo")
    state_dir = root / "state"
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["KINFER_CLUSTER_POD_CIDR"] = _free_pod_cidr()
    log = root / "demo.log"
    try:
        done = _kinfer(
            "cluster", "demo", "--state-dir", str(state_dir), env=env, timeout_s=DEMO_TIMEOUT_S
        )
        log.write_text(done.stdout + done.stderr)
        yield DemoRun(state_dir, done.returncode, done.stdout.splitlines(), log)
    finally:
        _kinfer("cluster", "down", "--state-dir", str(state_dir), env=env, timeout_s=180)


def events(run: DemoRun, action: str) -> list[dict[str, Any]]:
    listed = run.kubectl()(
        "get", "events", "-n", NAMESPACE, "--field-selector", f"involvedObject.name={NAME}",
        "-o", "json",
    )  # fmt: skip
    found = [e for e in json.loads(listed.stdout)["items"] if e.get("action") == action]
    return sorted(found, key=lambda e: (e.get("firstTimestamp") or "", e["metadata"]["name"]))


def test_the_demo_ends_with_the_timeline_the_slo_and_zero_failed_requests(
    demo_run: DemoRun,
) -> None:
    tail = "\n".join(demo_run.lines[-40:])
    assert demo_run.returncode == 0, tail
    assert demo_run.lines[-1] == "failed requests: 0", tail
    assert demo_run.lines[-2].startswith("DEMO OK in "), tail
    timeline = Path(demo_run.line_after("timeline: "))
    assert timeline.read_bytes()[:8] == PNG
    assert demo_run.line_after("SLO (status.slo, ")
    # The lines tools read.
    assert demo_run.line_after("operator started (pid ")
    assert demo_run.line_after("  Prometheus: ") == demo_run.prometheus_url
    # The progress lines showed the lower tier while the new pods started.
    progress = [line for line in demo_run.lines if "QPS" in line and "ready " in line]
    assert any(line.endswith(("tier int8", "tier fp16")) for line in progress), tail


def test_the_tier_stepped_down_and_came_back_after_a_scale_out(demo_run: DemoRun) -> None:
    switches = [(e["reason"], e["message"]) for e in events(demo_run, "SwitchTier")]
    reasons = [reason for reason, _ in switches]
    assert reasons[:1] == ["TierDegraded"], switches
    assert "TierRestored" in reasons[1:], switches
    scale_outs = [
        e["message"] for e in events(demo_run, "Scale") if e["message"].startswith("scaled 1 -> ")
    ]
    assert scale_outs, events(demo_run, "Scale")


def test_the_idle_service_ends_on_the_first_tier(demo_run: DemoRun) -> None:
    # The spike's last requests may step the tier down again while the last new pod starts (on a
    # machine too busy for the fp32 pods); once no request is left in the metrics window the
    # tier comes back, and stays.
    kubectl = demo_run.kubectl()
    deadline = time.monotonic() + IDLE_RETURN_S
    while (tier := _active_tier(kubectl)) != "fp32" and time.monotonic() < deadline:
        time.sleep(2.0)
    switches = [(e["reason"], e["message"]) for e in events(demo_run, "SwitchTier")]
    assert tier == "fp32", f"status.activeTier {tier} after {IDLE_RETURN_S} s idle: {switches}"
    assert switches[-1][0] == "TierRestored" and " -> fp32:" in switches[-1][1], switches


def _active_tier(kubectl: Kubectl) -> str | None:
    isvc = json.loads(
        kubectl("get", "inferenceservice", NAME, "-n", NAMESPACE, "-o", "json").stdout
    )
    return (isvc.get("status") or {}).get("activeTier")


def test_kinfer_plot_draws_the_demo_service_from_prometheus(
    demo_run: DemoRun, tmp_path: Path
) -> None:
    assert demo_run.returncode == 0, f"the demo failed: {demo_run.log}"
    output = tmp_path / "plot.png"
    done = _kinfer(
        "plot", NAME, "-n", NAMESPACE, "--since", "20m",
        "--prometheus-url", demo_run.prometheus_url,
        "--kubeconfig", str(demo_run.state_dir / "kubeconfig"), "-o", str(output),
        env={k: v for k, v in os.environ.items() if k != "KUBECONFIG"}, timeout_s=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == f"timeline: {output}"
    assert output.read_bytes()[:8] == PNG
    summary = done.stdout.splitlines()[-2]
    # The model servers' series (QPS, p95), the operator's (ready replicas, the tier) and the
    # Events (a scale-out, the step down and back) all reached the plot.
    assert "QPS up to" in summary and "p95 up to" in summary, summary
    ready = re.search(r"ready replicas (\d+)-(\d+)", summary)
    assert ready and int(ready.group(2)) > 1, summary
    # The step down and the return (a later step down, and the idle return, may follow).
    tiers = summary.split("; tiers ")[1].split(";")[0].split(" -> ")
    assert tiers[0] == "fp32" and "fp32" in tiers[2:], summary
    scale, tier = summary.split("Events marked: ")[1].split(", ")
    assert int(scale.split()[0]) >= 1 and int(tier.split()[0]) >= 2, summary
