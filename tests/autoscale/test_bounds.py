"""The spike lower bound: exact on deterministic arrivals, and never above what a policy pays."""

from kinfer_dev.autoscale import bench
from kinfer_dev.autoscale.bounds import bursts, hold_cost_bound, scale_out_cost_bound, spike_bound
from kinfer_dev.autoscale.simulator import ServiceModel, Trace

# Seed 0 puts the first scrape at t=2, then every 15 s: 92, 107, ...
MODEL = ServiceModel(
    capacity_qps_per_replica=100.0,
    slo_ms=100.0,
    cold_start_s=60.0,
    tier_speedups=(1.0, 1.8, 2.6),
    seed=0,
    poisson_arrivals=False,
)


def _spike(qps: float) -> Trace:
    return Trace("spike", ((0.0, 300.0), (100.0, qps), (160.0, 300.0), (400.0, 300.0)))


def test_a_spike_the_fastest_tier_holds_costs_only_the_detection() -> None:
    # 900 QPS on 5 pods: 180 per pod, int8 (mu 260) holds it at 37 ms once switched at 107 + 1.
    bound = spike_bound(MODEL, _spike(900.0), 100, 160, replicas=5, fastest_tier=2)
    assert bound.first_scrape_s == 107
    assert bound.violation_s == 8


def test_a_spike_over_the_fastest_tier_lasting_less_than_a_cold_start_is_lost_whole() -> None:
    # 1200 QPS on 5 pods: 240 per pod, int8's p95 150 ms > 100 ms; pods Ready at 167 > 160.
    bound = spike_bound(MODEL, _spike(1200.0), 100, 160, replicas=5, fastest_tier=2)
    assert bound.violation_s == 60


def test_without_tiers_only_new_pods_end_the_violation() -> None:
    short = ServiceModel(**{**MODEL.__dict__, "cold_start_s": 30.0})
    bound = spike_bound(short, _spike(600.0), 100, 160, replicas=5)
    assert bound.violation_s == 107 + 30 - 100


def test_no_policy_beats_the_bound_on_the_project_spike_trace() -> None:
    trace = bench.project_trace("spike")
    scenario = bench.default_scenario(60.0, 0)
    results = bench.run_trace(trace, scenario)
    for start, end in ((600, 720), (1200, 1320), (1800, 1860)):
        with_tiers = spike_bound(scenario.model, trace, start, end, replicas=5, fastest_tier=2)
        without = spike_bound(scenario.model, trace, start, end, replicas=5)
        for name, result in results.items():
            if name == "oracle":
                continue
            paid = sum(result.violated[start:end])
            assert paid >= with_tiers.violation_s, name
            if name not in ("kinfer-tiers", "kinfer-tiers-absorb"):
                assert paid >= without.violation_s, name


def test_bursts_are_the_runs_above_the_first_load() -> None:
    trace = Trace(
        "b", ((0.0, 300.0), (100.0, 600.0), (130.0, 300.0), (400.0, 900.0), (420.0, 300.0))
    )
    assert [(b.start_s, b.end_s, b.peak_qps, b.gap_s) for b in bursts(trace)] == [
        (100, 130, 600.0, 100),
        (400, 420, 900.0, 270),
    ]


def test_holding_is_free_only_when_the_budget_covers_every_reactive_burst() -> None:
    trace = Trace(
        "b", ((0.0, 300.0), (100.0, 600.0), (130.0, 300.0), (400.0, 900.0), (420.0, 300.0))
    )
    short = ServiceModel(**{**MODEL.__dict__, "cold_start_s": 30.0})
    assert hold_cost_bound(short, trace, violation_budget_s=1000) == (0, 0)
    # Nothing may be paid: both bursts held, 5 -> 9 pods over 100 s and 5 -> 13 over 270 s.
    assert hold_cost_bound(short, trace, violation_budget_s=0) == (4 * 100 + 8 * 270, 2)


def test_scale_out_cost_runs_the_peaks_pods_from_the_first_scrape_to_the_end_seen() -> None:
    trace = Trace(
        "b", ((0.0, 300.0), (100.0, 600.0), (130.0, 300.0), (400.0, 900.0), (420.0, 300.0))
    )
    # 5 pods at 65/replica for 300 QPS over the 440 s; 10 pods for 600 QPS from the scrape at
    # 107 to the one at 137; 14 for 900 QPS from 407 to 422.
    expected = 5 * 440 + (10 - 5) * 30 + (14 - 5) * 15
    assert scale_out_cost_bound(MODEL, trace, 65.0) == expected
    # Each release hold_s later.
    assert scale_out_cost_bound(MODEL, trace, 65.0, hold_s=10) == expected + 5 * 10 + 9 * 10
    # The floor of pods counts where the target asks for fewer.
    assert scale_out_cost_bound(MODEL, trace, 65.0, min_replicas=8) == (
        8 * 440 + (10 - 8) * 30 + (14 - 8) * 15
    )


def test_a_burst_over_before_a_scrape_sees_it_costs_no_pods() -> None:
    # 100-105: the scrape at 107 is the first to hold it and also the first after its end.
    trace = Trace("b", ((0.0, 300.0), (100.0, 900.0), (105.0, 300.0), (200.0, 300.0)))
    assert trace.duration_s == 295
    assert scale_out_cost_bound(MODEL, trace, 65.0) == 5 * 295


def test_no_policy_that_scales_out_for_every_burst_beats_its_cost_on_the_bursty_trace() -> None:
    trace = bench.project_trace("bursty")
    for seed in (0, 3):
        scenario = bench.default_scenario(30.0, seed)
        bound = scale_out_cost_bound(
            scenario.model, trace, scenario.target_qps_per_replica, scenario.min_replicas
        )
        results = bench.run_trace(trace, scenario)
        assert bound > results["oracle"].replica_seconds
        # kinfer-tiers-absorb is left out: a burst its lower tier holds gets no new pods.
        for name in ("kinfer", "kinfer-tiers", "hpa", "kpa", "kpa-native"):
            assert results[name].replica_seconds >= bound, (name, seed)
