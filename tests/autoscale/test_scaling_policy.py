"""The autoscaling policy as a pure function: every rule, one behaviour a test."""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import fields, replace

import pytest

from kinfer.api.model import PrecisionSpec, ScalingSpec, TierSpec
from kinfer.autoscale.behavior import apply_behavior
from kinfer.autoscale.capacity_model import TierProfile
from kinfer.autoscale.observation import Observation, VersionObservation
from kinfer.autoscale.policy import PolicyConfig, PolicyState, Replicas, Tuning, decide
from kinfer.autoscale.reasons import Reason
from tests.policy_configs import policy, tune

QPS_ONLY = policy(min_replicas=1, max_replicas=20, target_qps_per_replica=50)
BOTH = policy(min_replicas=1, max_replicas=20, target_qps_per_replica=50, target_latency_p95_ms=100)


def figures(decision, reason: Reason) -> dict:
    """The figures of the decision's step with this reason (exactly one)."""
    (step,) = decision.steps(reason)
    return step.figures


def observe(qps: float | None = None, p95: float | None = None, pods: int = 4, **kw) -> Observation:
    return Observation(
        qps=qps, latency_p95_ms=p95, pods_reporting=pods, newest_sample_age_s=5.0, **kw
    )


def run(
    config: PolicyConfig,
    observation: Observation,
    current: int = 4,
    ready: int | None = None,
    state: PolicyState | None = None,
    now_s: float = 1000.0,
    max_additional: int | None = None,
):
    replicas = Replicas(current, current if ready is None else ready, max_additional)
    return decide(config, observation, replicas, state or PolicyState(), now_s)


def test_qps_recommendation_scales_up_to_ceil_of_qps_over_target():
    decision, _ = run(QPS_ONLY, observe(qps=310))
    assert decision.desired_replicas == 7
    assert decision.scaled
    assert decision.reason is Reason.QPS_TARGET
    assert figures(decision, Reason.QPS_TARGET) == {
        "planned": 310,
        "current": 4,
        "target": 50,
        "replicas": 7,
    }
    assert decision.message.startswith("scaled 4 -> 7: QPS 310 > 4 x 50 target")


def test_within_tolerance_holds():
    decision, _ = run(QPS_ONLY, observe(qps=215))  # 215 / 200 = 1.075, inside 10 %
    assert decision.desired_replicas == 4
    assert not decision.scaled
    assert decision.reason is Reason.QPS_TARGET
    assert figures(decision, Reason.QPS_TARGET)["replicas"] == 4
    assert decision.message.startswith("holding 4:")


def test_a_p95_just_over_the_target_inside_the_tolerance_says_so():
    # 105 ms against 100: not an overload (that starts at 110), but not "<=" either. 4 pods at
    # 50 QPS and 105 ms hold 48.6 each at 100 ms: 200 QPS needs 5.
    decision, _ = run(BOTH, observe(qps=200, p95=105))
    assert decision.reason is Reason.LATENCY_TARGET
    assert figures(decision, Reason.LATENCY_TARGET)["replicas"] == 5
    assert decision.message == "scaled 4 -> 5: p95 105 ms within 10% of 100 ms target"


def test_just_outside_tolerance_scales():
    decision, _ = run(QPS_ONLY, observe(qps=225))  # 1.125
    assert decision.desired_replicas == 5


def test_fail_static_on_prometheus_error():
    decision, state = run(QPS_ONLY, Observation(error="connection refused"), current=6)
    assert decision.desired_replicas == 6
    assert not decision.scaled
    assert not decision.metrics_available
    assert decision.reason is Reason.METRICS_UNAVAILABLE
    assert "metrics unavailable (connection refused)" in decision.message
    assert state.recommendations == []


def test_fail_static_on_no_data():
    decision, _ = run(QPS_ONLY, Observation(), current=3)
    assert decision.desired_replicas == 3
    assert not decision.metrics_available
    assert decision.reason is Reason.METRICS_UNAVAILABLE
    assert "no samples" in decision.message


def test_fail_static_still_enforces_min_and_max():
    config = tune(QPS_ONLY, min_replicas=2, max_replicas=5)
    assert run(config, Observation(error="down"), current=9)[0].desired_replicas == 5
    assert run(config, Observation(error="down"), current=1)[0].desired_replicas == 2


def test_metrics_without_a_signal_for_the_targets_hold():
    # Only p95 came back, but only a QPS target is set.
    decision, _ = run(QPS_ONLY, observe(p95=80), current=3)
    assert decision.desired_replicas == 3
    assert not decision.metrics_available
    assert decision.reason is Reason.NO_SIGNAL


def test_min_and_max_bound_the_recommendation():
    up, _ = run(QPS_ONLY, observe(qps=5000), current=16)
    assert up.desired_replicas == 20
    assert up.reason is Reason.TOO_MANY_REPLICAS
    assert figures(up, Reason.TOO_MANY_REPLICAS) == {"maxReplicas": 20}
    config = tune(QPS_ONLY, min_replicas=3, scale_down_stabilization_s=0)
    down, _ = run(config, observe(qps=1), current=4)
    assert down.desired_replicas == 3


def test_free_gpu_capacity_caps_a_scale_up():
    decision, _ = run(QPS_ONLY, observe(qps=500), current=4, max_additional=2)
    assert decision.desired_replicas == 6
    assert decision.reason is Reason.CAPACITY_CAPPED
    assert figures(decision, Reason.CAPACITY_CAPPED) == {"replicas": 6, "free": 2}


def test_no_free_gpu_holds_replicas():
    decision, _ = run(QPS_ONLY, observe(qps=500), current=4, max_additional=0)
    assert decision.desired_replicas == 4


def test_capacity_does_not_block_a_scale_down():
    config = tune(QPS_ONLY, scale_down_stabilization_s=0)
    decision, _ = run(config, observe(qps=100, pods=8), current=8, max_additional=0)
    assert decision.desired_replicas == 4


def test_no_scale_down_on_stale_metrics():
    config = tune(QPS_ONLY, scale_down_stabilization_s=0, max_metrics_age_s=60)
    stale = Observation(qps=50, pods_reporting=8, newest_sample_age_s=120)
    decision, _ = run(config, stale, current=8)
    assert decision.desired_replicas == 8
    assert decision.reason is Reason.STALE_METRICS
    assert figures(decision, Reason.STALE_METRICS) == {"ageS": 120}


def test_stale_metrics_may_still_scale_up():
    stale = Observation(qps=600, pods_reporting=4, newest_sample_age_s=120)
    decision, _ = run(QPS_ONLY, stale, current=4)
    assert decision.desired_replicas == 12


def test_no_scale_down_on_partial_metrics():
    config = tune(QPS_ONLY, scale_down_stabilization_s=0)
    decision, _ = run(config, observe(qps=50, pods=3), current=8)
    assert decision.desired_replicas == 8
    assert decision.reason is Reason.PARTIAL_METRICS
    assert figures(decision, Reason.PARTIAL_METRICS) == {"podsReporting": 3, "ready": 8}


def test_scale_down_waits_for_the_stabilization_window():
    config = tune(QPS_ONLY, scale_down_stabilization_s=300)
    # A load that came back after a scale-down (the one-off fall's memory): the whole window applies.
    state = PolicyState(load_returned_s=0.0)
    replicas = 8
    # Load drops from 400 to 100 QPS at t=0; the window remembers the 8-replica recommendation.
    decision, state = decide(config, observe(qps=400, pods=8), Replicas(8, 8), state, 0.0)
    assert decision.desired_replicas == 8
    t = 15.0
    while t < 300:
        decision, state = decide(
            config, observe(qps=100, pods=replicas), Replicas(replicas, replicas), state, t
        )
        assert decision.desired_replicas == 8, f"scaled down at t={t}, inside the window"
        assert decision.reason is Reason.SCALE_DOWN_STABILIZED
        assert figures(decision, Reason.SCALE_DOWN_STABILIZED) == {"windowS": 300}
        t += 15
    decision, state = decide(config, observe(qps=100, pods=8), Replicas(8, 8), state, 300.0)
    assert decision.desired_replicas == 4  # QPS says 2; at most -50 % a period
    assert decision.reason is Reason.SCALE_DOWN_LIMITED
    assert decision.message.startswith("scaled 8 -> 4: QPS 100 < 8 x 50 target")


def test_scale_down_step_limit_percent():
    config = tune(QPS_ONLY, scale_down_stabilization_s=0, scale_down_max_step_percent=25)
    decision, _ = run(config, observe(qps=50, pods=8), current=8)
    assert decision.desired_replicas == 6
    assert decision.reason is Reason.SCALE_DOWN_LIMITED
    assert figures(decision, Reason.SCALE_DOWN_LIMITED) == {"step": 2}


def test_scale_down_step_is_at_least_one_pod():
    config = tune(QPS_ONLY, scale_down_stabilization_s=0, scale_down_max_step_percent=10)
    decision, _ = run(config, observe(qps=50, pods=3), current=3)
    assert decision.desired_replicas == 2


def test_scale_up_step_limit_is_the_larger_of_pods_and_percent():
    config = tune(QPS_ONLY, max_replicas=100, scale_up_max_step=4, scale_up_max_step_percent=100)
    small, _ = run(config, observe(qps=2000, pods=2), current=2)
    assert small.desired_replicas == 6  # +4 pods beats +100 % (2)
    assert small.reason is Reason.SCALE_UP_LIMITED
    assert figures(small, Reason.SCALE_UP_LIMITED) == {"step": 4}
    big, _ = run(config, observe(qps=4000, pods=10), current=10)
    assert big.desired_replicas == 20  # +100 % beats +4 pods


def test_scale_up_stabilization_takes_the_lowest_recent_recommendation():
    config = tune(QPS_ONLY, scale_up_stabilization_s=60)
    state = PolicyState()
    decision, state = decide(config, observe(qps=200), Replicas(4, 4), state, 0.0)
    decision, state = decide(config, observe(qps=400), Replicas(4, 4), state, 15.0)
    assert decision.desired_replicas == 4  # 4 was recommended 15 s ago
    assert decision.reason is Reason.SCALE_UP_STABILIZED
    decision, state = decide(config, observe(qps=400), Replicas(4, 4), state, 75.0)
    assert decision.desired_replicas == 8


def test_latency_over_target_scales_up_even_when_qps_says_hold():
    config = tune(BOTH, scale_down_stabilization_s=0)
    state = PolicyState(ready_seen=4, ready_changed_s=0.0)
    decision, _ = run(config, observe(qps=200, p95=180), current=4, state=state)
    assert decision.desired_replicas == 8  # twice the pods the metrics came from
    assert decision.reason is Reason.OVERLOAD_FLOOR
    assert figures(decision, Reason.OVERLOAD_FLOOR) == {
        "p95Ms": 180,
        "targetMs": 100,
        "pods": 4,
        "replicas": 8,
    }


def test_overload_is_sized_by_the_arrival_gauge_when_it_measures_more():
    # 4 saturated pods report 200 QPS; the servers received 600 in their last second: 12 pods
    # at 50 QPS each, asked now rather than 8 now and 12 a scrape later (step limits aside).
    config = tune(BOTH, scale_down_stabilization_s=0, scale_up_max_step=10)
    state = PolicyState(ready_seen=4, ready_changed_s=0.0)
    decision, state = run(
        config, observe(qps=200, p95=900, qps_arriving=600), current=4, state=state
    )
    assert decision.desired_replicas == 12
    assert decision.reason is Reason.OVERLOAD_FLOOR
    overload = figures(decision, Reason.OVERLOAD_FLOOR)
    assert (overload["arriving"], overload["perReplica"], overload["replicas"]) == (600, 50, 12)
    assert decision.message == (
        "scaled 4 -> 12: p95 900 ms > 100 ms target on 4 pods, 600 QPS arriving"
    )
    # The measured ask is the floor while those pods start, like the blind one.
    assert state.urgent_floor == (1000.0, 12)


def test_overload_never_asks_less_than_the_blind_ask_whatever_the_gauge_says():
    # A QPS target above the pods' real capacity makes the gauge's ask too small (5 here).
    state = PolicyState(ready_seen=4, ready_changed_s=0.0)
    decision, _ = run(BOTH, observe(qps=200, p95=180, qps_arriving=220), current=4, state=state)
    assert decision.desired_replicas == 8
    assert "arriving" not in figures(decision, Reason.OVERLOAD_FLOOR)


def test_the_arrival_gauge_alone_never_scales():
    # Below the overload threshold the gauge is not read: one noisy second is not a trend.
    state = PolicyState(ready_seen=4, ready_changed_s=0.0)
    decision, _ = run(BOTH, observe(qps=200, p95=60, qps_arriving=600), current=4, state=state)
    assert decision.desired_replicas == 4
    # Without a QPS target there is nothing to size it by: the blind ask.
    latency_only = tune(BOTH, target_qps_per_replica=None)
    decision, _ = run(
        latency_only, observe(qps=200, p95=180, qps_arriving=600), current=4, state=state
    )
    assert decision.desired_replicas == 8


def test_overload_term_waits_while_pods_are_starting():
    state = PolicyState(ready_seen=4, ready_changed_s=0.0)
    decision, _ = run(BOTH, observe(qps=200, p95=180), current=8, ready=4, state=state)
    assert decision.desired_replicas == 8


def test_overload_term_waits_for_a_window_after_ready_changed():
    # Pods became Ready 20 s ago: the 60 s window's p95 still describes the smaller set.
    state = PolicyState(ready_seen=4, ready_changed_s=980.0)
    decision, _ = run(BOTH, observe(qps=200, p95=180), current=4, state=state)
    assert decision.desired_replicas == 4


def test_latency_sizes_replicas_from_the_measured_capacity():
    # 4 pods at 50 QPS each with p95 60 ms: M/M/1 says mu = 50 + 3000/60 = 100, and at 100 ms
    # one replica holds 100 - 30 = 70 QPS; 200 QPS need 3 of them, but QPS target says 4.
    config = tune(BOTH, target_qps_per_replica=None, scale_down_stabilization_s=0)
    decision, _ = run(config, observe(qps=200, p95=60), current=4)
    assert decision.desired_replicas == 3
    assert decision.reason is Reason.LATENCY_TARGET
    latency = figures(decision, Reason.LATENCY_TARGET)
    assert latency["replicas"] == 3
    assert latency["capacity"] == pytest.approx(70.0, abs=0.1)


def test_larger_of_qps_and_latency_wins():
    config = tune(BOTH, scale_down_stabilization_s=0)
    # Latency alone would go to 3 (see above); the QPS target keeps 4.
    decision, _ = run(config, observe(qps=200, p95=60), current=4)
    assert decision.desired_replicas == 4


def test_latency_only_steps_down_gently_when_far_below_target():
    config = policy(max_replicas=10, target_latency_p95_ms=100, scale_down_stabilization_s=0)
    decision, _ = run(config, observe(p95=20, pods=5), current=5)
    assert decision.desired_replicas == 4
    hold, _ = run(config, observe(p95=60, pods=5), current=5)
    assert hold.desired_replicas == 5


def _ramp(config, points, period_s=15.0, scrape_s=15.0, partial_at=()):
    """Reads every period_s of a rate that moves only at scrapes (every scrape_s), as
    Prometheus gives it; points: the rate at each scrape, read from 3 of the 4 Ready pods at
    the scrapes in partial_at. Returns the last decision."""
    state = PolicyState()
    t = 0.0
    while t <= (len(points) - 1) * scrape_s:
        scrape = int(t // scrape_s)
        observation = Observation(
            qps=points[scrape],
            pods_reporting=3 if scrape in partial_at else 4,
            newest_sample_age_s=t - scrape * scrape_s,
        )
        decision, state = decide(config, observation, Replicas(4, 4), state, 1000.0 + t)
        t += period_s
    return decision


def test_trend_projects_a_ramp_that_outlasts_the_window():
    config = tune(QPS_ONLY, trend_lookahead_s=45, metrics_window_s=60)
    # 6 QPS a scrape for 75 s: 219 on 4 x 50 is inside the band now, and so is the rise of 18
    # QPS in 45 s on its own (a diurnal ramp), but 237 in 45 s is not.
    decision = _ramp(config, [189.0, 195.0, 201.0, 207.0, 213.0, 219.0])
    assert decision.desired_replicas == 5
    assert decision.reason is Reason.TREND_AHEAD
    trend = figures(decision, Reason.TREND_AHEAD)
    assert trend["slope"] == pytest.approx(0.4)
    assert trend["planned"] == pytest.approx(237.0)
    assert trend["lookaheadS"] == 45


def test_trend_counts_a_scrape_once_however_often_it_is_read():
    # The same ramp read every 5 s: each scrape is read three times, and repeated reads of one
    # scrape are not three points of which two show no rise.
    config = tune(QPS_ONLY, trend_lookahead_s=45, metrics_window_s=60, period_s=5)
    decision = _ramp(config, [150.0, 160.0, 170.0, 180.0, 190.0, 200.0], period_s=5.0)
    assert decision.desired_replicas == 5
    assert figures(decision, Reason.TREND_AHEAD)["slope"] == pytest.approx(2 / 3)


def test_trend_leaves_out_a_dip_on_partial_metrics():
    # A new pod with too few samples for a rate is missing from the sum: a dip (201 -> 180)
    # read on 3 of 4 pods is no fall of the load, and the ramp is still projected.
    config = tune(QPS_ONLY, trend_lookahead_s=45, metrics_window_s=60)
    points = [189.0, 195.0, 201.0, 180.0, 213.0, 219.0]
    decision = _ramp(config, points, partial_at=(3,))
    assert decision.reason is Reason.TREND_AHEAD
    assert decision.desired_replicas == 5


def test_trend_on_pods_scraped_at_different_offsets():
    # Two pods scraped 5 s apart: the sum moves every 5 s, by one pod's share at a time (0.2,
    # then 5.8). Judged over a quarter window (15 s) the rises are even, and the ramp is seen.
    config = tune(QPS_ONLY, trend_lookahead_s=45, metrics_window_s=60, period_s=5)
    points = [170.0]
    for i in range(18):
        points.append(points[-1] + (0.2 if i % 2 else 5.8))
    decision = _ramp(config, points, period_s=5.0, scrape_s=5.0)
    assert decision.reason is Reason.TREND_AHEAD
    assert decision.desired_replicas == 6


def test_trend_is_not_a_step_filling_the_rate_window():
    # A step from 200 to 400: the 60 s rate climbs for one window, then holds. It is planned
    # for as measured (8 pods), never projected beyond it.
    config = tune(QPS_ONLY, trend_lookahead_s=45, metrics_window_s=60)
    for last in range(3, 8):
        points = [200.0, 200.0, 250.0, 300.0, 350.0, 400.0, 400.0, 400.0][: last + 1]
        decision = _ramp(config, points)
        assert not decision.steps(Reason.TREND_AHEAD)
        assert decision.desired_replicas == max(4, -(-int(points[-1]) // 50))


@pytest.mark.parametrize(
    "points",
    [
        [220.0, 214.0, 208.0, 202.0, 196.0, 190.0],  # a fall
        [205.0, 195.0, 201.0, 199.0, 204.0, 196.0, 203.0],  # noise around 200
        [200.0, 200.5, 201.0, 215.0, 215.5, 216.0, 216.5],  # one jump between flat stretches
    ],
)
def test_trend_ignores_a_fall_and_noise(points):
    config = tune(QPS_ONLY, trend_lookahead_s=45, metrics_window_s=60)
    decision = _ramp(config, points)
    assert decision.desired_replicas == 4
    assert not decision.steps(Reason.TREND_AHEAD)


def test_recent_window_qps_sees_a_step_first():
    decision, _ = run(QPS_ONLY, observe(qps=210, qps_recent=400), current=4)
    assert decision.desired_replicas == 8
    assert decision.reason is Reason.SHORT_RATE
    assert figures(decision, Reason.SHORT_RATE) == {"planned": 400}


def test_recent_window_never_drives_a_scale_down():
    config = tune(QPS_ONLY, scale_down_stabilization_s=0)
    decision, _ = run(config, observe(qps=200, qps_recent=20), current=4)
    assert decision.desired_replicas == 4


def _noisy_run(noise: float, seed: int) -> list[tuple[float, int]]:
    """A steady 190 QPS (p95 70 ms) around 4 x 50 with uniform noise on every read."""
    config = tune(BOTH, trend_lookahead_s=45)
    rng = random.Random(seed)
    state, current, changes = PolicyState(), 4, []
    for period in range(400):
        qps = 190 * rng.uniform(1 - noise, 1 + noise)
        p95 = 70 * rng.uniform(0.9, 1.1)
        now = period * 15.0
        decision, state = decide(
            config, observe(qps=qps, p95=p95, pods=current), Replicas(current, current), state, now
        )
        if decision.desired_replicas != current:
            changes.append((now, decision.desired_replicas))
        current = decision.desired_replicas
    return changes


@pytest.mark.parametrize("seed", range(5))
def test_no_flapping_under_noise(seed):
    assert _noisy_run(0.05, seed) == []


@pytest.mark.parametrize("seed", range(5))
def test_heavy_noise_never_scales_down_inside_the_window(seed):
    changes = _noisy_run(0.08, seed)
    for (before, _), (after, replicas) in itertools.pairwise(changes):
        if replicas < 5:
            assert after - before >= BOTH.scaling.scale_down_stabilization_s


def test_state_round_trips_json():
    config = tune(BOTH, tiers=("fp32", "int8"))
    state = PolicyState()
    for t in range(0, 120, 15):
        _, state = decide(
            config,
            observe(qps=200 + t, p95=70, versions={1: VersionObservation(200 + t, 70)}),
            Replicas(4, 4),
            state,
            float(t),
        )
    text = json.dumps(state.to_dict())
    assert PolicyState.from_dict(json.loads(text)) == state
    recurring = replace(state, last_scale_down_s=30.0, load_returned_s=90.0)
    assert PolicyState.from_dict(json.loads(json.dumps(recurring.to_dict()))) == recurring
    assert PolicyState.from_dict(None) == PolicyState()


@pytest.mark.parametrize(
    "garbage",
    [
        {"recommendations": "x"},
        {"recommendations": [[1, 2, 3]]},
        {"activeTier": "fp32"},
        {"urgentFloor": [1]},
        {"tierProfiles": []},
        {"lastTierSwitchS": "yesterday"},
        {"loadReturnedS": "yesterday"},
    ],
)
def test_malformed_state_starts_afresh(garbage):
    assert PolicyState.from_dict(garbage) == PolicyState()


def test_state_is_not_mutated():
    state = PolicyState()
    run(QPS_ONLY, observe(qps=300), state=state)
    assert state == PolicyState()


def test_apply_behavior_matches_hpa_stabilization():
    config = tune(PolicyConfig(), scale_down_stabilization_s=300, max_replicas=50).behavior()
    history = [(0.0, 10), (100.0, 6), (200.0, 8)]
    desired, _notes = apply_behavior(config, history, current=10, recommended=5, now_s=250.0)
    assert desired == 10  # the highest recommendation of the last 300 s
    desired, _ = apply_behavior(config, history[1:], current=10, recommended=5, now_s=350.0)
    assert desired == 8


def test_policy_config_reads_the_typed_spec():
    scaling = ScalingSpec(
        min_replicas=2, max_replicas=9, target_latency_p95_ms=120, target_qps_per_replica=40
    )
    precision = PrecisionSpec(
        tiers=(TierSpec("fp32", "s3://b/fp32"), TierSpec("int8", "s3://b/int8")),
        min_tier="int8",
        dwell_s=45,
    )
    config = PolicyConfig(scaling, precision, Tuning(expected_pod_start_s=90))
    assert config.tier_names == ("fp32", "int8")
    assert config.tiers_enabled
    behavior = config.behavior()
    assert (behavior.min_replicas, behavior.max_replicas) == (2, 9)
    assert behavior.down_window_s == scaling.scale_down_stabilization_s
    assert config.behavior(down_window_s=30).down_window_s == 30
    assert config.targets().latency_p95_ms == 120
    assert config.capacity({}).target_qps == 40
    assert not PolicyConfig(scaling).tiers_enabled


def test_pods_asked_for_under_overload_are_not_cancelled_while_they_start():
    config = tune(BOTH, scale_down_stabilization_s=0, expected_pod_start_s=60)
    state = PolicyState(ready_seen=4, ready_changed_s=0.0)
    decision, state = decide(config, observe(qps=200, p95=180), Replicas(4, 4), state, 1000.0)
    assert decision.desired_replicas == 8
    # Next period: the QPS alone would say 4, but the 8 are still starting.
    decision, state = decide(config, observe(qps=200, p95=180), Replicas(8, 4), state, 1005.0)
    assert decision.desired_replicas == 8
    # Once they are Ready the floor is gone and the QPS may scale down again.
    decision, state = decide(
        config, observe(qps=200, p95=60, pods=8), Replicas(8, 8), state, 1040.0
    )
    assert state.urgent_floor is None
    assert decision.desired_replicas < 8


def test_overload_floor_expires_when_pods_never_come():
    config = tune(BOTH, scale_down_stabilization_s=0, expected_pod_start_s=60)
    state = PolicyState(ready_seen=4, ready_changed_s=0.0, urgent_floor=(1000.0, 8))
    held, _ = decide(config, observe(qps=200, p95=80), Replicas(8, 4), state, 1100.0)
    assert held.desired_replicas == 8
    # The recommenders ask for 4; the pods still starting are what holds 8, and it says so.
    assert held.reason is Reason.OVERLOAD_FLOOR
    assert figures(held, Reason.OVERLOAD_FLOOR) == {"replicas": 8, "ready": 4}
    expired, state = decide(config, observe(qps=200, p95=80), Replicas(8, 4), state, 1121.0)
    assert state.urgent_floor is None
    assert expired.desired_replicas == 4


# Tier-aware scale-down: with a lower tier that can absorb a burst (not pinned, not measured
# slower), the scale-down window is the tiers' one, the 30 s rate may drive a scale-down, and a
# scale-down keeps the tolerance as a margin at the latency target.

TIERED = tune(
    BOTH, target_qps_per_replica=65, scale_down_stabilization_s=120, tiers=("fp32", "fp16", "int8")
)
FP32_AT_70 = {"fp32": TierProfile(capacity_qps_per_replica=70)}


def _release_after_burst(config: PolicyConfig, recurring: bool = False) -> list[tuple[float, int]]:
    """8 pods for a 500 QPS burst, then 260 QPS (4 pods at 65) from t=0; (t, replicas) per
    change. p95 40 ms on 8 pods: the latency rule agrees with the QPS one. recurring: the load
    came back after a scale-down a minute ago (the one-off fall's quick window does not apply)."""
    state = PolicyState(
        tier_profiles=dict(FP32_AT_70), load_returned_s=-60.0 if recurring else None
    )
    decision, state = decide(config, observe(qps=500, p95=60, pods=8), Replicas(8, 8), state, -5.0)
    assert decision.desired_replicas == 8
    current, changes = 8, []
    for period in range(30):
        now = period * 5.0
        decision, state = decide(
            config, observe(qps=260, p95=40, pods=current), Replicas(current, current), state, now
        )
        if decision.desired_replicas != current:
            changes.append((now, decision.desired_replicas))
            current = decision.desired_replicas
    return changes


def test_with_tiers_the_scale_down_window_is_the_tiers_one():
    # The burst's recommendation (t=-5) leaves a 30 s window at t=25, a 120 s one at t=115.
    changes = _release_after_burst(TIERED)
    assert changes and changes[0][0] == 25.0
    assert changes[-1][1] == 5  # 260 x 1.1 / 70 = 4.1: the margin keeps a fifth pod


def test_with_tiers_the_scale_down_reason_names_the_tier_that_absorbs():
    state = PolicyState(tier_profiles=dict(FP32_AT_70), recommendations=[(0.0, 8)])
    decision, _ = decide(TIERED, observe(qps=260, p95=40, pods=8), Replicas(8, 8), state, 31.0)
    assert decision.desired_replicas == 5
    # The tiers' quick window let it go; the margin kept a fifth pod (260 x 1.1 / 70).
    assert decision.reason is Reason.QUICK_SCALE_DOWN
    assert figures(decision, Reason.QUICK_SCALE_DOWN) == {"windowS": 30}
    assert figures(decision, Reason.TIER_MARGIN) == {"replicas": 5, "capacity": 70}


def test_without_tiers_or_pinned_the_scaling_window_holds():
    no_tiers = tune(TIERED, tiers=())
    pinned = tune(TIERED, pinned="fp32")
    for config in (no_tiers, pinned):
        assert _release_after_burst(config, recurring=True)[0][0] == 115.0


def test_with_tiers_measured_no_faster_the_scaling_window_holds():
    cpu = {name: TierProfile(capacity_qps_per_replica=70) for name in ("fp32", "fp16", "int8")}
    state = PolicyState(tier_profiles=cpu, recommendations=[(0.0, 8)])
    decision, _ = decide(TIERED, observe(qps=260, p95=40, pods=8), Replicas(8, 8), state, 31.0)
    assert decision.desired_replicas == 8
    assert decision.reason is Reason.SCALE_DOWN_STABILIZED
    assert figures(decision, Reason.SCALE_DOWN_STABILIZED) == {"windowS": 120}


def test_with_tiers_the_short_rate_drives_a_scale_down():
    config = tune(TIERED, scale_down_stabilization_s=0)
    state = PolicyState(tier_profiles=dict(FP32_AT_70))
    decision, _ = decide(
        config, observe(qps=500, qps_recent=260, p95=40, pods=8), Replicas(8, 8), state, 0.0
    )
    assert decision.desired_replicas == 5
    assert figures(decision, Reason.SHORT_RATE) == {"planned": 260}
    # Without tiers the 60 s rate stays the one a scale-down reads.
    decision, _ = decide(
        tune(config, tiers=()),
        observe(qps=500, qps_recent=260, p95=40, pods=8),
        Replicas(8, 8),
        PolicyState(),
        0.0,
    )
    assert decision.desired_replicas == 8


def test_with_tiers_a_scale_down_keeps_the_tolerance_at_the_latency_target():
    # 300 QPS on 6 pods at 66 ms: the QPS rule says 5 (60/replica against a 65 target), but 5
    # pods hold 300 x 1.1 = 330 only at 66/replica, above fp32's 64 measured here: the latency
    # rule would ask the sixth back as soon as the load rose by a few percent.
    config = tune(TIERED, scale_down_stabilization_s=0)
    state = PolicyState(tier_profiles=dict(FP32_AT_70))
    decision, _ = decide(config, observe(qps=300, p95=66, pods=6), Replicas(6, 6), state, 0.0)
    assert decision.desired_replicas == 6
    assert decision.reason is Reason.TIER_MARGIN
    margin = figures(decision, Reason.TIER_MARGIN)
    assert margin["replicas"] == 6
    assert margin["capacity"] == pytest.approx(65.4, abs=0.1)
    # With room for the margin the scale-down goes ahead.
    decision, _ = decide(config, observe(qps=280, p95=60, pods=6), Replicas(6, 6), state, 0.0)
    assert decision.desired_replicas == 5


def _scale_down_on_int8(config: PolicyConfig):
    # int8 has served for 55 s (the step-up sizing waits a 60 s window): 640 QPS on 11 pods at 60 ms; the QPS and
    # latency rules ask for 10 (640 / 65, 640 / 70), fp32 steps back up on 11 (640 / (70 x 0.9)).
    state = PolicyState(
        tier_profiles=dict(FP32_AT_70), active_tier=2, last_tier_switch_s=0.0, ready_seen=11
    )
    return decide(config, observe(qps=640, p95=60, pods=11), Replicas(11, 11), state, 55.0)


def test_on_a_lower_tier_a_scale_down_keeps_the_pods_that_bring_the_first_tier_back():
    decision, _ = _scale_down_on_int8(TIERED)
    assert decision.desired_replicas == 11
    assert decision.reason is Reason.STEP_UP_HEADROOM
    assert figures(decision, Reason.STEP_UP_HEADROOM) == {
        "planned": 640,
        "replicas": 11,
        "capacity": 70,
    }
    # With the tier pinned nothing steps back up: the scale-down goes ahead.
    pinned = tune(TIERED, pinned="int8")
    decision, _ = _scale_down_on_int8(pinned)
    assert decision.desired_replicas == 10


# Rule 3b with a faster tier: once the first tier's capacity is measured, the ask sized on the
# arrival gauge replaces the blind one, also when it is smaller (the lower tier bridges it).


def _overload_on_7_pods(config: PolicyConfig, profiles: dict[str, TierProfile]):
    # 7 settled pods report 400 QPS at p95 191 ms (the blind ask: 7 x 1.91 -> 14); the servers
    # received 590 in their last second.
    state = PolicyState(ready_seen=7, ready_changed_s=0.0, tier_profiles=dict(profiles))
    return decide(
        config,
        observe(qps=400, p95=191, pods=7, qps_arriving=590),
        Replicas(7, 7),
        state,
        1000.0,
    )


def test_with_a_faster_tier_the_measured_ask_replaces_a_larger_blind_one():
    decision, state = _overload_on_7_pods(TIERED, FP32_AT_70)
    # 590 / 65 (below fp32's measured 70) -> 10 pods, where the blind ask was 14.
    assert decision.desired_replicas == 10
    assert decision.reason is Reason.OVERLOAD_FLOOR
    overload = figures(decision, Reason.OVERLOAD_FLOOR)
    assert (overload["arriving"], overload["perReplica"], overload["replicas"]) == (590, 65, 10)
    # The lower tier bridges the wait for them.
    assert decision.tier_changed and decision.tier_index > 0
    assert state.urgent_floor == (1000.0, 10)


def test_the_measured_ask_sizes_by_the_first_tiers_capacity_when_it_is_below_the_target():
    # A 65/replica target over pods measured at 50: the target alone would under-ask (10).
    decision, _ = _overload_on_7_pods(TIERED, {"fp32": TierProfile(capacity_qps_per_replica=50)})
    assert decision.desired_replicas == 12
    overload = figures(decision, Reason.OVERLOAD_FLOOR)
    assert (overload["arriving"], overload["perReplica"]) == (590, 50)


def test_the_measured_ask_adds_a_pod_where_the_profile_says_the_pods_suffice():
    # 420 arriving / 65 -> 7, the pods that reported; their p95 (191 ms) says otherwise.
    state = PolicyState(ready_seen=7, ready_changed_s=0.0, tier_profiles=dict(FP32_AT_70))
    decision, _ = decide(
        TIERED,
        observe(qps=400, p95=191, pods=7, qps_arriving=420),
        Replicas(7, 7),
        state,
        1000.0,
    )
    assert decision.desired_replicas == 8
    overload = figures(decision, Reason.OVERLOAD_FLOOR)
    assert (overload["arriving"], overload["perReplica"]) == (420, 65)


def test_without_a_bridge_or_a_measured_first_tier_the_blind_ask_stands():
    unmeasured = (TIERED, {})
    no_tiers = (tune(TIERED, tiers=()), FP32_AT_70)
    pinned = (tune(TIERED, pinned="fp32"), FP32_AT_70)
    # On a CPU the lower tiers measure no faster: nothing bridges an under-ask.
    no_faster = (
        TIERED,
        {name: TierProfile(capacity_qps_per_replica=70) for name in ("fp32", "fp16", "int8")},
    )
    for config, profiles in (unmeasured, no_tiers, pinned, no_faster):
        decision, _ = _overload_on_7_pods(config, profiles)
        assert decision.desired_replicas == 14, (config.precision, profiles)
        assert "arriving" not in figures(decision, Reason.OVERLOAD_FLOOR)


# 6a. Quick scale-down for a one-off fall.
NO_TIERS = tune(TIERED, tiers=())


def test_a_one_off_fall_is_released_after_the_quick_window():
    # The burst's 8 (t=-5) leaves the 30 s window at t=25; the fall is known once the history
    # holds a point a metrics window old (read at t=-5, sampled at t=-10): t=50.
    changes = _release_after_burst(NO_TIERS)
    assert changes[0][0] == 50.0
    assert changes[-1][1] == 4  # 260 / 65
    state = PolicyState(qps_history=[(-65.0, 500.0)], recommendations=[(-35.0, 8)])
    decision, _ = decide(NO_TIERS, observe(qps=260, p95=40, pods=8), Replicas(8, 8), state, 0.0)
    assert decision.desired_replicas == 4
    assert decision.reason is Reason.QUICK_SCALE_DOWN
    assert figures(decision, Reason.QUICK_SCALE_DOWN) == {"windowS": 30}
    assert decision.message.startswith("scaled 8 -> 4: QPS 260 < 8 x 65 target")


def test_a_one_off_fall_is_planned_on_the_short_rate():
    # The 60 s rate still holds most of the burst; the short one has seen its end.
    state = PolicyState(qps_history=[(-65.0, 500.0)])
    falling = observe(qps=480, qps_recent=260, p95=40, pods=8)
    decision, _ = decide(NO_TIERS, falling, Replicas(8, 8), state, 0.0)
    assert decision.desired_replicas == 4
    assert figures(decision, Reason.SHORT_RATE) == {"planned": 260}
    # A load that recurs keeps reading the 60 s rate (480 / 65 = 7.4) and the 120 s window.
    recurring = replace(state, load_returned_s=-100.0)
    decision, _ = decide(NO_TIERS, falling, Replicas(8, 8), recurring, 0.0)
    assert decision.desired_replicas == 8


def test_the_quick_window_needs_the_load_below_where_it_was_a_window_ago():
    # 150 QPS on 8 pods asks for 3, but it rose from 100 a window ago: not a fall, whole window.
    state = PolicyState(qps_history=[(-65.0, 100.0)], recommendations=[(-40.0, 8)])
    decision, _ = decide(NO_TIERS, observe(qps=150, pods=8), Replicas(8, 8), state, 0.0)
    assert decision.desired_replicas == 8
    assert figures(decision, Reason.SCALE_DOWN_STABILIZED) == {"windowS": 120}
    fell = replace(state, qps_history=[(-65.0, 200.0)])
    decision, _ = decide(NO_TIERS, observe(qps=150, pods=8), Replicas(8, 8), fell, 0.0)
    assert decision.desired_replicas == 4  # 3, but at most -50 % a period


def _drive(config: PolicyConfig, load, until_s: float) -> list[tuple[float, int, str]]:
    """Every period from t=0: the window's rate load(t) on pods that are Ready at once;
    (t, replicas, reason) per change."""
    state, current, changes = PolicyState(), 8, []
    for period in range(int(until_s / config.scaling.period_s)):
        now = period * config.scaling.period_s
        decision, state = decide(
            config, observe(qps=load(now), pods=current), Replicas(current, current), state, now
        )
        if decision.desired_replicas != current:
            changes.append((now, decision.desired_replicas, {s.reason for s in decision.trail}))
            current = decision.desired_replicas
    return changes


def test_a_recurring_load_is_held_for_the_whole_window():
    # 400 QPS (8 x 50), 100 from t=100, 400 again from t=300 (within 300 s of the release),
    # 100 from t=500.
    config = tune(QPS_ONLY, period_s=5)

    def load(t: float) -> float:
        return 400.0 if t < 100 or 300 <= t < 500 else 100.0

    changes = _drive(config, load, 900)
    downs = [(t, n, why) for t, n, why in changes if n < 8]
    first, second = [t for t, _, _ in downs if t < 300], [t for t, _, _ in downs if t >= 500]
    # 60 s to see the fall, then the 30 s quick window.
    assert first[0] < 160 and Reason.QUICK_SCALE_DOWN in downs[0][2]
    assert any(t == 300 and n == 8 for t, n, _ in changes)  # the load came back
    assert second[0] >= 500 + config.scaling.scale_down_stabilization_s - config.scaling.period_s
    assert all(Reason.QUICK_SCALE_DOWN not in why for t, _, why in downs if t >= 500)


def test_a_recurrence_is_remembered_for_three_recurrence_windows():
    config = tune(NO_TIERS, recurrence_s=100)
    for returned_ago, quick in ((295.0, False), (305.0, True)):
        state = PolicyState(
            qps_history=[(-65.0, 500.0)],
            recommendations=[(-35.0, 8)],
            load_returned_s=-returned_ago,
        )
        decision, _ = decide(config, observe(qps=260, p95=40, pods=8), Replicas(8, 8), state, 0.0)
        assert (decision.desired_replicas < 8) is quick


def test_a_quick_window_not_shorter_than_the_window_is_off():
    config = tune(NO_TIERS, quick_scale_down_stabilization_s=120)
    assert _release_after_burst(config)[0][0] == 115.0
    state = PolicyState(qps_history=[(-65.0, 500.0)])
    falling = observe(qps=480, qps_recent=260, p95=40, pods=8)
    decision, _ = decide(config, falling, Replicas(8, 8), state, 0.0)
    assert decision.desired_replicas == 8  # no short rate either


def test_a_policy_state_copy_is_equal_and_independent_and_its_mutable_fields_are_known():
    state = PolicyState(
        recommendations=[(1.0, 2)],
        qps_history=[(1.0, 3.5)],
        tier_profiles={"fp32": TierProfile(capacity_qps_per_replica=40.0)},
        urgent_floor=(2.0, 3),
    )
    copied = state.copy()
    assert copied == state
    copied.recommendations.append((2.0, 4))
    copied.qps_history.append((2.0, 1.0))
    copied.tier_profiles["fp16"] = TierProfile()
    assert state.recommendations == [(1.0, 2)]
    assert state.qps_history == [(1.0, 3.5)]
    assert list(state.tier_profiles) == ["fp32"]
    # copy() shares what the fields hold: a new field of a mutable type must be copied there.
    mutable = {
        f.name
        for f in fields(PolicyState)
        if isinstance(getattr(PolicyState(), f.name), (list, dict, set))
    }
    assert mutable == {"recommendations", "qps_history", "tier_profiles"}
