"""The simulator: trace parsing, conservation, determinism, analytic cases, metrics lag."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from kinfer_dev.autoscale import baselines
from kinfer_dev.autoscale.bench import PROJECT_TRACES, default_scenario, project_trace, run_trace
from kinfer_dev.autoscale.simulator import (
    Command,
    Controller,
    Result,
    ServiceModel,
    Trace,
    arrivals_for,
    load_trace,
    simulate,
)

EXACT = ServiceModel(
    capacity_qps_per_replica=100,
    slo_ms=100,
    cold_start_s=30,
    scrape_interval_s=15,
    rate_window_s=60,
    poisson_arrivals=False,
)


def fixed(replicas: int, at_s: int | None = None, then: int | None = None) -> Controller:
    """Holds `replicas`, switching to `then` at `at_s`."""

    def step(view):
        if at_s is not None and view.t >= at_s:
            return Command(then)
        return Command(replicas)

    return Controller(name="fixed", interval_s=1, step=step)


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_trace_is_piecewise_constant(tmp_path):
    trace = load_trace(write(tmp_path, "t_s,qps\n0,10\n60,40\n100,5\n"))
    assert trace.name == "t"
    assert [trace.qps_at(t) for t in (0, 59, 60, 99, 100, 139)] == [10, 10, 40, 40, 5, 5]
    # The last row holds as long as the segment before it.
    assert trace.duration_s == 140


def test_load_trace_starts_at_zero_load_before_its_first_row(tmp_path):
    trace = load_trace(write(tmp_path, "t_s,qps\n30,10\n"))
    assert trace.qps_at(0) == 0
    assert trace.qps_at(30) == 10


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("time,qps\n0,1\n", "header .* must be exactly 't_s,qps'"),
        ("t_s,qps\n0,x\n", r":2: \['0', 'x'\] must be two numbers"),
        ("t_s,qps\n0,1\n0,2\n", ":3: t_s=0.0 must be greater than the row before"),
        ("t_s,qps\n0,-1\n", "qps=-1.0 must both be >= 0"),
        ("t_s,qps\n", "no rows after the header"),
    ],
)
def test_load_trace_errors_name_the_row(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        load_trace(write(tmp_path, text))


@pytest.mark.parametrize("name", PROJECT_TRACES)
def test_project_traces_load(name):
    trace = project_trace(name)
    assert trace.duration_s >= 1800
    assert all(qps > 0 for _, qps in trace.points[1:])


def test_requests_are_conserved():
    """Every arrival is served, rejected, or still queued at the end; overload included."""
    trace = Trace("t", ((0, 300), (100, 2000), (200, 300), (400, 300)))
    result = simulate(replace(EXACT, poisson_arrivals=True), trace, fixed(5))
    assert result.rejected > 0
    assert result.arrived == pytest.approx(result.served + result.rejected + result.backlog_end)
    assert result.arrived == pytest.approx(sum(arrivals_for(trace, 0)))


def test_same_seed_same_result_other_seed_other_arrivals():
    scenario = default_scenario(cold_start_s=30, seed=4)
    trace = project_trace("spike")
    first = {name: r.summary() for name, r in run_trace(trace, scenario).items()}
    again = {name: r.summary() for name, r in run_trace(trace, scenario).items()}
    assert first == again
    assert arrivals_for(trace, 4) != arrivals_for(trace, 5)


def test_analytic_mm1_latency_and_replica_seconds():
    """Constant 240 QPS on 4 replicas of mu=100: p95 = ln(20) / (100 - 60) s, never over SLO."""
    trace = Trace("flat", ((0, 240), (600, 240)))
    result = simulate(EXACT, trace, fixed(4), initial_replicas=4)
    expected = math.log(20) / 40 * 1000
    assert result.p95_ms == pytest.approx([expected] * 1200)
    assert result.slo_violation_fraction == 0
    assert result.replica_seconds == 4 * 1200
    assert result.scale_events == 0


def test_analytic_overload_every_second_violates():
    # 3 replicas hold 210 QPS at the 100 ms SLO (mu - ln20/0.1 = 70 each); 240 QPS do not.
    trace = Trace("flat", ((0, 240), (600, 240)))
    result = simulate(EXACT, trace, fixed(3), initial_replicas=3)
    assert result.slo_violation_fraction == 1.0


def test_cold_start_delays_ready():
    trace = Trace("flat", ((0, 100), (300, 100)))
    result = simulate(EXACT, trace, fixed(2, at_s=50, then=5), initial_replicas=2)
    assert result.replicas[50] == 5
    assert result.ready[79] == 2
    assert result.ready[80] == 5


def test_scale_down_removes_starting_pods_first():
    trace = Trace("flat", ((0, 100), (300, 100)))

    def step(view):
        return Command(6 if view.t < 10 else 3)

    result = simulate(EXACT, trace, Controller("c", 1, step), initial_replicas=3)
    # The three that were starting go; the three Ready ones stay Ready.
    assert result.ready[10:] == [3] * (600 - 10)


def prometheus_each_second(model: ServiceModel, trace: Trace, replicas: int) -> dict:
    """What a controller reading Prometheus every second sees, replicas held constant."""
    seen = {}

    def step(view):
        seen[view.t] = view.prometheus()
        return Command(replicas)

    simulate(model, trace, Controller("probe", 1, step), initial_replicas=replicas)
    return seen


def test_prometheus_rate_lags_a_step_by_its_window():
    """A step from 100 to 400 QPS at t=300: rate over 60 s moves between the scrapes."""
    trace = Trace("step", ((0, 100), (300, 400), (900, 400)))
    seen = prometheus_each_second(EXACT, trace, 10)
    assert seen[299].qps == pytest.approx(100)
    assert seen[299].newest_sample_age_s < 15
    assert seen[299].pods_reporting == 10
    late = seen[300 + 60 + 15]
    assert late.qps == pytest.approx(400)
    assert late.latency_p95_ms == pytest.approx(math.log(20) / 60 * 1000)
    ramp = [seen[t].qps for t in range(300, 376)]
    assert ramp == sorted(ramp)
    assert 100 < ramp[30] < 400
    # The short window sees the step a whole window earlier.
    assert seen[340].qps_recent == pytest.approx(400)
    assert seen[340].qps < 400


def test_arrival_gauge_holds_the_second_before_the_last_scrape():
    """kinfer_inference_arrival_rate as Prometheus returns it: the value of the last scrape."""
    trace = Trace("step", ((0, 100), (300, 400), (900, 400)))
    seen = prometheus_each_second(EXACT, trace, 10)
    first_after = next(s for s in range(301, 400) if seen[s].newest_sample_age_s == 0)
    # Until a scrape follows the step the gauge says 100; from that scrape on, 400, while the
    # rates have only its first seconds.
    assert seen[first_after - 1].qps_arriving == pytest.approx(100)
    assert seen[first_after].qps_arriving == pytest.approx(400)
    assert seen[first_after].qps < 200
    without = prometheus_each_second(replace(EXACT, arrival_gauge_s=0), trace, 10)
    assert without[first_after].qps_arriving is None
    assert without[first_after].qps == seen[first_after].qps


def test_prometheus_needs_two_scrapes():
    trace = Trace("flat", ((0, 100), (300, 100)))
    seen = prometheus_each_second(EXACT, trace, 2)
    assert seen[0].error is not None
    assert not seen[0].ok


def test_oracle_holds_the_slo_with_the_fewest_replicas():
    trace = Trace("steps", ((0, 140), (100, 700), (200, 70), (300, 70)))
    result = simulate(EXACT, trace, baselines.oracle(EXACT, 1, 50))
    assert result.slo_violation_fraction == 0
    # 70 QPS per replica at the SLO: 2, 10, 1 replicas.
    assert result.replicas[50] == 2
    assert result.replicas[150] == 10
    assert result.replicas[250] == 1


def test_tier_switch_takes_effect_after_the_switch_time():
    model = replace(EXACT, tier_speedups=(1.0, 2.0), tier_switch_s=2)
    trace = Trace("flat", ((0, 300), (200, 300)))

    def step(view):
        return Command(2, tier=1 if view.t >= 100 else 0)

    result = simulate(model, trace, Controller("t", 1, step), initial_replicas=2)
    assert result.tier[101] == 0
    assert result.tier[102] == 1
    assert result.tier_switches == 1
    # 150 QPS per replica: saturated at mu=100, p95 = ln(20) / (200 - 150) at mu=200.
    assert result.p95_ms[99] > 100
    assert result.p95_ms[150] == pytest.approx(math.log(20) / 50 * 1000)


def test_kinfer_in_the_simulator_is_the_operator_policy():
    """The simulated kinfer scales out a step with the policy's own reasons."""
    scenario = default_scenario()
    trace = Trace("step", ((0, 300), (300, 900), (1200, 900)))
    result = simulate(
        scenario.model, trace, baselines.kinfer(baselines.without_tiers(scenario.kinfer_config()))
    )
    assert max(result.replicas) >= 13
    assert any(reason.startswith("scaled 5 -> ") for _, reason in result.reasons)


def test_pods_beyond_the_cluster_stay_pending_and_hold_no_gpu():
    model = replace(EXACT, max_pods=4)
    trace = Trace("flat", ((0, 100), (300, 100)))
    seen = {}

    def step(view):
        seen[view.t] = (view.replicas, view.max_additional)
        if view.t < 100:
            return Command(6)
        return Command(3)

    result = simulate(model, trace, Controller("c", 1, step), initial_replicas=2)
    assert seen[50] == (6, 0)
    assert result.replicas[50] == 4  # two Pending pods hold no GPU
    assert result.ready[80] == 4
    assert seen[150] == (3, 1)
    assert result.replicas[150] == 3
    assert result.replica_seconds == 2 * 0 + sum(result.replicas)


def test_scale_down_drops_pending_pods_first():
    model = replace(EXACT, max_pods=3, cold_start_s=10)
    trace = Trace("flat", ((0, 100), (300, 100)))
    seen = {}

    def step(view):
        seen[view.t] = view.replicas
        return Command(5 if view.t < 100 else 3)

    result = simulate(model, trace, Controller("c", 1, step), initial_replicas=1)
    assert seen[50] == 5
    assert result.ready[50] == 3
    assert seen[150] == 3
    # The three placed pods stayed Ready through the scale-down.
    assert result.ready[100:] == [3] * 500


def _result(offered: list[float], replicas: list[int]) -> Result:
    return Result(
        policy="p", trace="t", seconds=len(replicas), offered_qps=offered, replicas=replicas
    )


def test_reversals_and_flaps_count_changes_undone_within_a_minute():
    # 5 -> 4 at t=100, back to 5 at t=130 (a reversal), 5 -> 6 at t=300 and 6 -> 5 at t=400
    # (100 s apart: not one).
    replicas = [5] * 100 + [4] * 30 + [5] * 170 + [6] * 100 + [5] * 100
    steady = _result([300.0] * len(replicas), replicas)
    assert steady.reversals() == [(100, 130)]
    assert steady.flaps() == [(100, 130)]
    assert steady.summary()["reversals"] == steady.summary()["flaps"] == 1
    # The same reversal while the offered load rises by 50 %: the load explains it.
    burst = _result([300.0] * 120 + [450.0] * (len(replicas) - 120), replicas)
    assert burst.reversals() == [(100, 130)]
    assert burst.flaps() == []
