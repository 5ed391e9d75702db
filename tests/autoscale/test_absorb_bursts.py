"""spec.precision.absorbBursts (the tier stage's BurstAbsorbed): no scale-up while a measured lower tier holds the ask on
the Ready pods; off by default, and off it changes nothing."""

from __future__ import annotations

import random

import pytest

from kinfer.api.model import PrecisionSpec
from kinfer.autoscale.capacity_model import TierProfile
from kinfer.autoscale.observation import Observation
from kinfer.autoscale.policy import PolicyState, Replicas, decide
from kinfer.autoscale.reasons import Reason
from tests.policy_configs import policy, tune

NAMES = ("fp32", "fp16", "int8")
OFF = policy(
    min_replicas=1,
    max_replicas=40,
    target_qps_per_replica=65,
    target_latency_p95_ms=100,
    tiers=NAMES,
    # HPA's 4 pods, so a scale-up from 7 is +100 % (14) whatever the default.
    scale_up_max_step=4,
)
ON = tune(OFF, absorb_bursts=True)
MEASURED = {
    "fp32": TierProfile(capacity_qps_per_replica=70),
    "int8": TierProfile(capacity_qps_per_replica=220),
}


def observe(qps: float, p95: float, pods: int, age_s: float = 5.0) -> Observation:
    return Observation(qps=qps, latency_p95_ms=p95, pods_reporting=pods, newest_sample_age_s=age_s)


def on_int8(switched_s: float = 980.0, profiles: dict | None = None) -> PolicyState:
    """int8 serving since switched_s (now is 1000)."""
    return PolicyState(
        active_tier=2,
        last_tier_switch_s=switched_s,
        last_tier_switch_down=True,
        tier_profiles=dict(MEASURED if profiles is None else profiles),
    )


def test_off_by_default():
    assert PrecisionSpec().absorb_bursts is False


def test_holds_a_scale_up_the_serving_lower_tier_covers_with_headroom():
    # 900 QPS asks 14 pods at fp32 (65/replica); int8 on 7 Ready pods holds 7 x 220 x 0.9 = 1386
    # >= 14 x 70 = 980.
    decision, _ = decide(ON, observe(900, 60, 7), Replicas(7, 7), on_int8(), 1000.0)
    assert decision.desired_replicas == 7
    assert not decision.scaled
    assert decision.tier_index == 2
    assert decision.reason is Reason.BURST_ABSORBED
    (step,) = decision.steps(Reason.BURST_ABSORBED)
    assert step.figures == {"holds": pytest.approx(1386), "asked": 14, "ready": 7}
    # The same with the option off scales up as before (step limit: +7 from 7).
    decision, _ = decide(OFF, observe(900, 60, 7), Replicas(7, 7), on_int8(), 1000.0)
    assert decision.desired_replicas == 14
    assert decision.reason is Reason.QPS_TARGET
    assert decision.steps(Reason.QPS_TARGET)[0].figures["replicas"] == 14


def test_scales_up_when_the_tier_does_not_cover_the_ask_plus_headroom():
    # 1300 QPS asks 20 pods: 20 x 70 = 1400 > 1386.
    decision, _ = decide(ON, observe(1300, 60, 7), Replicas(7, 7), on_int8(), 1000.0)
    assert decision.desired_replicas == 14
    assert not decision.steps(Reason.BURST_ABSORBED)
    # Without the headroom it would have held: 7 x 220 = 1540 >= 1400.
    assert 7 * 220 >= 20 * 70


@pytest.mark.parametrize(
    "profiles",
    [{"fp32": MEASURED["fp32"]}, {"int8": MEASURED["int8"]}, {}],
    ids=["lower tier unmeasured", "first tier unmeasured", "none measured"],
)
def test_scales_up_when_a_tier_is_unmeasured(profiles):
    decision, _ = decide(
        ON, observe(900, 60, 7), Replicas(7, 7), on_int8(profiles=profiles), 1000.0
    )
    assert decision.desired_replicas == 14


def test_scales_up_once_the_tier_has_served_a_metrics_window():
    # 70 s on int8: the latency recommender sizes for the step back up (StepUpHeadroom), as without the option.
    decision, _ = decide(ON, observe(900, 60, 7), Replicas(7, 7), on_int8(930.0), 1000.0)
    assert decision.desired_replicas == 14


def test_scales_up_at_the_first_tier_and_on_stale_metrics():
    at_fp32 = PolicyState(tier_profiles=dict(MEASURED))
    decision, _ = decide(ON, observe(600, 60, 7), Replicas(7, 7), at_fp32, 1000.0)
    assert decision.desired_replicas == 10  # p95 within target: no step down, nothing absorbs
    stale = observe(900, 60, 7, age_s=120.0)
    decision, _ = decide(ON, stale, Replicas(7, 7), on_int8(), 1000.0)
    assert decision.desired_replicas == 14


def test_holds_when_the_walk_steps_down_this_period_and_asks_no_floor():
    # Saturated fp32 on 5 settled pods: the overload rule asks 2 x 5 = 10 and the walk goes to
    # int8, which holds 5 x 220 x 0.9 = 990 >= 10 x 70 = 700 on the Ready pods.
    at_fp32 = PolicyState(tier_profiles=dict(MEASURED), ready_seen=5)
    decision, state = decide(ON, observe(500, 2400, 5), Replicas(5, 5), at_fp32, 1000.0)
    assert decision.desired_replicas == 5
    assert decision.tier_changed and decision.tier_index == 2
    assert decision.reason is Reason.BURST_ABSORBED
    (step,) = decision.steps(Reason.BURST_ABSORBED)
    assert step.figures == {"holds": pytest.approx(990), "asked": 10, "ready": 5}
    assert decision.steps(Reason.OVERLOAD_FLOOR)[0].figures["replicas"] == 10
    assert state.urgent_floor is None
    # Off: the 2x ask goes out and is kept as a floor while those pods start.
    decision, state = decide(OFF, observe(500, 2400, 5), Replicas(5, 5), at_fp32, 1000.0)
    assert decision.desired_replicas == 10 and decision.tier_index == 2
    assert state.urgent_floor == (1000.0, 10)


def test_a_pinned_lower_tier_absorbs_nothing():
    pinned = tune(ON, pinned="int8")
    decision, _ = decide(pinned, observe(900, 60, 7), Replicas(7, 7), on_int8(), 1000.0)
    assert decision.desired_replicas == 14


def test_min_replicas_still_applies_while_holding():
    config = tune(ON, min_replicas=9)
    decision, _ = decide(config, observe(900, 60, 7), Replicas(7, 7), on_int8(), 1000.0)
    assert decision.desired_replicas == 9


@pytest.mark.parametrize("seed", range(5))
def test_on_only_ever_holds_where_off_scales_up(seed):
    """Same inputs, same tier decision; the option changes a scale-up into a hold at the current
    count and nothing else (scale-downs, fail-static and the stale/partial rules are untouched)."""
    rng = random.Random(seed)
    for _ in range(300):
        current = rng.randint(1, 20)
        ready = rng.randint(max(current - 3, 0), current)
        observation = Observation(
            qps=rng.uniform(0, 2000),
            qps_recent=rng.choice([None, rng.uniform(0, 2000)]),
            latency_p95_ms=rng.choice([rng.uniform(10, 150), rng.uniform(150, 3000)]),
            pods_reporting=rng.randint(0, max(ready, 1)),
            newest_sample_age_s=rng.choice([5.0, 90.0]),
            error=rng.choice([None] * 9 + ["connection refused"]),
        )
        state = PolicyState(
            active_tier=rng.randint(0, 2),
            last_tier_switch_s=rng.choice([None, 1000.0 - rng.uniform(0, 120)]),
            tier_profiles=dict(MEASURED),
            recommendations=[(990.0, rng.randint(1, 20))],
        )
        replicas = Replicas(current, ready, rng.choice([None, 0, 3]))
        off, _ = decide(OFF, observation, replicas, state, 1000.0)
        on, _ = decide(ON, observation, replicas, state, 1000.0)
        assert (on.tier_index, on.tier) == (off.tier_index, off.tier)
        if on.desired_replicas == off.desired_replicas:
            assert on == off
        else:
            assert off.desired_replicas > current
            assert on.desired_replicas == max(current, OFF.scaling.min_replicas)
            assert on.reason is Reason.BURST_ABSORBED
