"""The control loop writes status when something changed, not because a scrape aged."""

from __future__ import annotations

from typing import Any

from kinfer.api.model import parse
from kinfer.autoscale.observation import Observation
from kinfer.controller.control_loop import (
    STATUS_REFRESH_S,
    LoopMemory,
    as_stored,
    scaling_period,
)
from tests.conftest import load_sample


class NoPods:
    def list(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return []

    peek_list = list

    def gpu_view(self) -> tuple[list, list]:
        return [], []


class Idle:
    """An idle service's metrics: no requests; only the newest sample's age moves."""

    def __init__(self) -> None:
        self.age_s = 1.0

    def observe(self, namespace: str, name: str, runtime: str, window_s: int = 60) -> Observation:
        self.age_s += 7.0
        return Observation(qps=0.0, pods_reporting=1, newest_sample_age_s=self.age_s)


def test_an_idle_service_is_not_rewritten_when_only_the_sample_age_moves():
    body = load_sample("onnxruntime-cpu.yaml")
    body["metadata"].update(namespace="team-a", uid="u-1", generation=1)
    body["spec"]["scaling"] = {"targetQPSPerReplica": 50, "minReplicas": 1}
    body["spec"]["replicas"] = 1
    body["status"] = {"readyReplicas": 1}
    isvc, reader, memory = parse(body), Idle(), LoopMemory()
    first, _ = scaling_period(body, isvc, NoPods(), reader, memory, 1000.0)
    assert "autoscaling" in first.status_patch
    assert first.status_patch["autoscaling"]["lastMetrics"]["latencyP95Ms"] is None
    # As the API server stores a merge patch: its nulls remove their keys.
    body["status"].update(as_stored(first.status_patch))
    for now in (1000.0 + STATUS_REFRESH_S + 1, 1000.0 + 3 * STATUS_REFRESH_S):
        later, _ = scaling_period(body, isvc, NoPods(), reader, memory, now)
        assert later.status_patch == {}, later.status_patch
    # A figure that does move is written at the next refresh.
    reader.observe = lambda *a, **k: Observation(qps=3.0, pods_reporting=1, newest_sample_age_s=2)
    moved, _ = scaling_period(body, isvc, NoPods(), reader, memory, 1000.0 + 5 * STATUS_REFRESH_S)
    assert moved.status_patch["autoscaling"]["lastMetrics"]["qps"] == 3.0


def test_decisions_fall_due_together_on_the_period_grid():
    # Two services last decided at different moments of the same 5 s period are due in the
    # same wake after the period ends, so one metrics read serves both.
    from kinfer.controller.control_loop import plan

    body = load_sample("onnxruntime-cpu.yaml")
    body["metadata"].update(namespace="team-a", uid="u-1", generation=1)
    body["spec"]["scaling"] = {"targetQPSPerReplica": 50, "periodSeconds": 5}
    early, late = LoopMemory(last_decision_s=1000.4), LoopMemory(last_decision_s=1004.6)
    assert plan(body, early, 1004.9).wanted is None
    assert plan(body, late, 1004.9).wanted is None
    assert plan(body, early, 1005.1).wanted is not None
    assert plan(body, late, 1005.1).wanted is not None
    assert plan(body, LoopMemory(), 1003.0).wanted is not None  # never decided: due now


def test_a_plan_with_nothing_due_says_until_when():
    # The scheduler asks again only then (or when the object changes): the next period's start,
    # or the next tier check when it comes first; never, for a spec that cannot run.
    import math

    from kinfer.controller.control_loop import plan

    body = load_sample("tiers-gpu.yaml")
    body["metadata"].update(namespace="team-a", uid="u-1", generation=1)
    body["spec"]["scaling"] = {"targetQPSPerReplica": 50, "periodSeconds": 5}
    decided = LoopMemory(last_decision_s=1000.4, next_tier_s=1010.0)
    quiet = plan(body, decided, 1001.0)
    assert not quiet.any and quiet.quiet_s == 4.0
    decided.next_tier_s = 1002.5
    assert plan(body, decided, 1001.0).quiet_s == 1.5
    del body["spec"]["precision"]
    body["spec"]["model"]["storageUri"] = "s3://models/mlp/model.onnx"
    assert plan(body, decided, 1001.0).quiet_s == 4.0, "no tiers: no tier check"
    del body["spec"]["scaling"]  # no target: no autoscaling
    assert plan(body, decided, 1001.0).quiet_s == math.inf
    del body["spec"]["model"]["storageUri"]
    assert plan(body, LoopMemory(), 1001.0).quiet_s == math.inf, "invalid: nothing runs"


def test_a_tick_does_what_the_scheduler_planned_not_a_decision_nobody_read_for():
    # Planned with no decision due (a resync), the tick ran in the next period: it must not
    # decide (and read Prometheus for this one service alone); unplanned, it plans itself.
    from kinfer.controller.control_loop import Plan, run_period

    body = load_sample("onnxruntime-cpu.yaml")
    body["metadata"].update(namespace="team-a", uid="u-1", generation=1)
    body["spec"]["scaling"] = {"targetQPSPerReplica": 50, "minReplicas": 1}
    body["spec"]["replicas"] = 1
    body["status"] = {"readyReplicas": 1}
    reads: list[str] = []

    class Reader:
        def observe(self, namespace: str, name: str, runtime: str, window_s: int = 60):
            reads.append(name)
            return Observation(qps=0.0, pods_reporting=1)

    memory = LoopMemory(planned=Plan(None, False))
    assert run_period(body, NoPods(), Reader(), memory).decision is None
    assert reads == [] and memory.planned is None, "the plan is consumed"
    assert run_period(body, NoPods(), Reader(), memory).decision is not None
    assert reads == [body["metadata"]["name"]]


def test_a_busy_service_holding_is_rewritten_at_the_refresh_not_every_period():
    """Its QPS moves a little each period, and the Autoscaling condition's message quotes it;
    the decision (hold 3) does not change: one write per STATUS_REFRESH_S, then a scale at
    once."""
    body = load_sample("onnxruntime-cpu.yaml")
    body["metadata"].update(namespace="team-a", uid="u-1", generation=1)
    body["spec"]["scaling"] = {"targetQPSPerReplica": 50, "minReplicas": 1, "maxReplicas": 8}
    body["spec"]["replicas"] = 3
    body["status"] = {"readyReplicas": 3}
    isvc, memory = parse(body), LoopMemory()
    qps = iter([140.0, 141.3, 139.2, 142.8, 140.6, 400.0])

    class Busy:
        def observe(self, namespace: str, name: str, runtime: str, window_s: int = 60):
            return Observation(qps=next(qps), pods_reporting=3, newest_sample_age_s=1.0)

    writes, messages = [], []
    for now in (1000.0, 1005.0, 1010.0, 1015.0, 1000.0 + STATUS_REFRESH_S + 1, 1035.0):
        result, _ = scaling_period(body, isvc, NoPods(), Busy(), memory, now)
        writes.append(sorted(result.status_patch))
        messages.append(result.decision.message)
        body["status"].update(as_stored(result.status_patch))
    assert len(set(messages[:4])) == 4 and all("holding 3" in m for m in messages[:5]), messages
    assert writes[0] == ["autoscaling", "conditions"]
    assert writes[1:4] == [[], [], []], writes
    assert writes[4] == ["autoscaling", "conditions"], "the figures, at the refresh"
    assert result.replicas is not None and result.replicas > 3
    assert writes[5] == ["autoscaling", "conditions"], "a scale is written at once"


def test_the_loop_parses_a_spec_once_per_resource_version(monkeypatch):
    from kinfer.controller import control_loop

    calls = []
    real = control_loop.checked
    monkeypatch.setattr(control_loop, "checked", lambda body: calls.append(1) or real(body))
    body = load_sample("onnxruntime-cpu.yaml")
    body["metadata"].update(namespace="team-a", uid="u-1", generation=1, resourceVersion="7")
    memory = LoopMemory()
    first = memory.isvc(body)
    assert first is not None and memory.isvc(body) is first and len(calls) == 1
    body["spec"]["replicas"] = 3
    body["metadata"].update(generation=2, resourceVersion="8")
    assert memory.isvc(body).spec.replicas == 3 and len(calls) == 2
    del body["metadata"]["resourceVersion"]  # not from the API: parsed every time
    memory.isvc(body)
    memory.isvc(body)
    assert len(calls) == 4
