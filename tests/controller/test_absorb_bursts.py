"""spec.precision.absorbBursts reaches the policy through the control loop (the path every
spec field takes), and its hold is the status record, the condition and no Event."""

from __future__ import annotations

from typing import Any

import pytest

from kinfer.api import constants as c
from kinfer.api.model import parse
from kinfer.autoscale.capacity_model import TierProfile
from kinfer.autoscale.observation import Observation
from kinfer.autoscale.policy import PolicyState
from kinfer.controller.control_loop import LoopMemory, scaling_period
from tests.conftest import load_sample

NOW_S = 10_000.0


class NoPods:
    def list(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return []

    peek_list = list


class Reader:
    def observe(self, namespace: str, name: str, runtime: str, window_s: int = 60) -> Observation:
        return Observation(qps=900, latency_p95_ms=60, pods_reporting=7, newest_sample_age_s=5)


def _body(absorb: bool | None) -> dict[str, Any]:
    body = load_sample("tiers-gpu.yaml")
    body["metadata"].update(namespace="team-a", uid="u-1", generation=1)
    body["spec"]["resources"] = {"gpus": 0}
    body["spec"]["replicas"] = 7
    body["spec"]["scaling"] = {
        "maxReplicas": 40,
        "targetLatencyP95Ms": 100,
        "targetQPSPerReplica": 65,
    }
    if absorb is not None:
        body["spec"]["precision"]["absorbBursts"] = absorb
    # int8 serves since 20 s, both tiers measured.
    state = PolicyState(
        active_tier=2,
        last_tier_switch_s=NOW_S - 20,
        last_tier_switch_down=True,
        tier_profiles={
            "fp32": TierProfile(capacity_qps_per_replica=70),
            "int8": TierProfile(capacity_qps_per_replica=220),
        },
        ready_seen=7,
    )
    body["status"] = {"readyReplicas": 7, "autoscaling": {"state": state.to_dict()}}
    return body


def _period(absorb: bool | None):
    body = _body(absorb)
    return scaling_period(body, parse(body), NoPods(), Reader(), LoopMemory(), NOW_S)


def test_absorb_bursts_holds_the_scale_up_and_says_why():
    result, tier = _period(True)
    assert result.replicas is None
    assert tier == 2
    record = result.status_patch["autoscaling"]
    assert record["reason"] == "BurstAbsorbed"
    absorbed = next(step for step in record["trail"] if step["reason"] == "BurstAbsorbed")
    assert absorbed == {
        "stage": "tier",
        "reason": "BurstAbsorbed",
        "figures": {"holds": 1386.0, "asked": 14, "ready": 7},
    }
    active = next(
        cond
        for cond in result.status_patch["conditions"]
        if cond["type"] == c.CONDITION_AUTOSCALING
    )
    assert (active["reason"], active["message"]) == ("BurstAbsorbed", record["message"])
    assert not result.events


@pytest.mark.parametrize("absorb", [None, False])
def test_without_absorb_bursts_the_same_period_scales_up(absorb):
    result, _ = _period(absorb)
    assert result.replicas == 14
    (event,) = result.events
    assert (event.reason, event.action) == ("QPSTarget", "Scale")
    assert event.message.startswith("scaled 7 -> 14: QPS 900 > 7 x 65 target")
