"""`kinfer bench autoscale`: kinfer (with and without tiers), HPA, KPA and an oracle on load traces,
in the simulator; prints one JSON object, or writes a markdown table and a PNG per trace."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from kinfer.api import constants as c
from kinfer.api.model import PrecisionSpec, ScalingSpec, TierSpec
from kinfer.autoscale.policy import PolicyConfig, Tuning
from kinfer_dev.autoscale import baselines
from kinfer_dev.autoscale.simulator import (
    Result,
    ServiceModel,
    Trace,
    arrivals_for,
    load_trace,
    simulate,
)

PROJECT_TRACES = ("step", "spike", "diurnal", "bursty")
# kinfer runs with the CRD defaults (docs/design-notes.md says why these).
KINFER_PERIOD_S = c.DEFAULT_SCALING_PERIOD_S
KINFER_SCALE_DOWN_STABILIZATION_S = c.DEFAULT_SCALE_DOWN_STABILIZATION_S
KINFER_QUICK_SCALE_DOWN_STABILIZATION_S = int(Tuning().quick_scale_down_stabilization_s)
POLICIES = ("kinfer", "kinfer-tiers", "kinfer-tiers-absorb", "hpa", "kpa", "kpa-native", "oracle")
# Cold starts the tier comparison runs the spike trace with (issue 6).
TIER_COLD_STARTS_S = (60, 120)
# And a cluster with room for only this many pods (no free GPU during the larger spikes).
GPU_LIMITED_MAX_PODS = 12
GPU_LIMITED_COLD_START_S = 60


@dataclass(frozen=True)
class Scenario:
    """One bench setting: the service, the targets every policy gets, kinfer's config."""

    model: ServiceModel
    target_qps_per_replica: float
    min_replicas: int
    max_replicas: int
    tiers: tuple[str, ...]
    period_s: int = KINFER_PERIOD_S
    scale_down_stabilization_s: int = KINFER_SCALE_DOWN_STABILIZATION_S
    quick_scale_down_stabilization_s: int = KINFER_QUICK_SCALE_DOWN_STABILIZATION_S

    def kinfer_config(self, absorb_bursts: bool = False) -> PolicyConfig:
        """kinfer with the CRD's defaults (a 5 s period and a 120 s scale-down window;
        docs/design-notes.md says why), unless the bench overrides them;
        absorb_bursts: spec.precision.absorbBursts (kinfer-tiers-absorb)."""
        scaling = ScalingSpec(
            min_replicas=self.min_replicas,
            max_replicas=self.max_replicas,
            target_latency_p95_ms=self.model.slo_ms,
            target_qps_per_replica=self.target_qps_per_replica,
            period_s=self.period_s,
            scale_down_stabilization_s=self.scale_down_stabilization_s,
            metrics_window_s=int(self.model.rate_window_s),
        )
        precision = PrecisionSpec(
            tiers=tuple(TierSpec(name, f"s3://models/{name}") for name in self.tiers),
            absorb_bursts=absorb_bursts,
        )
        tuning = Tuning(
            expected_pod_start_s=self.model.cold_start_s,
            quick_scale_down_stabilization_s=self.quick_scale_down_stabilization_s,
        )
        return PolicyConfig(scaling, precision, tuning)


def default_scenario(cold_start_s: float = 30.0, seed: int = 0) -> Scenario:
    """A GPU model server: 100 QPS per replica at full precision (p95 30 ms idle, 100 ms SLO at
    70 QPS), fp16 1.8x and int8 2.6x faster, Prometheus scraping every 15 s, rate over 1 m."""
    return Scenario(
        model=ServiceModel(
            capacity_qps_per_replica=100.0,
            slo_ms=100.0,
            cold_start_s=cold_start_s,
            scrape_interval_s=15.0,
            rate_window_s=60.0,
            tier_speedups=(1.0, 1.8, 2.6),
            seed=seed,
        ),
        target_qps_per_replica=65.0,
        min_replicas=1,
        max_replicas=40,
        tiers=("fp32", "fp16", "int8"),
    )


def run_trace(trace: Trace, scenario: Scenario) -> dict[str, Result]:
    """Every policy on the same arrivals; returns the results by policy name."""
    arrivals = arrivals_for(trace, scenario.model.seed, scenario.model.poisson_arrivals)
    config = scenario.kinfer_config()
    controllers = {
        "kinfer": baselines.kinfer(baselines.without_tiers(config), "kinfer"),
        "kinfer-tiers": baselines.kinfer(config, "kinfer-tiers"),
        "kinfer-tiers-absorb": baselines.kinfer(
            scenario.kinfer_config(absorb_bursts=True), "kinfer-tiers-absorb"
        ),
        "hpa": baselines.hpa(
            scenario.min_replicas, scenario.max_replicas, scenario.target_qps_per_replica
        ),
        "kpa": baselines.kpa(
            scenario.min_replicas,
            scenario.max_replicas,
            scenario.target_qps_per_replica,
            scenario.model.scrape_interval_s,
        ),
        "kpa-native": baselines.kpa(
            scenario.min_replicas,
            scenario.max_replicas,
            scenario.target_qps_per_replica,
            scenario.model.scrape_interval_s,
            native_metrics=True,
        ),
        "oracle": baselines.oracle(scenario.model, scenario.min_replicas, scenario.max_replicas),
    }
    return {
        name: simulate(scenario.model, trace, controller, arrivals)
        for name, controller in controllers.items()
    }


def report(trace: Trace, scenario: Scenario, results: dict[str, Result]) -> dict[str, object]:
    """The `--json` object: the trace, the setting, and per policy the three figures (and more);
    `spikes`: seconds over the SLO per policy from each rise above the trace's first load to the
    next one."""
    return {
        "trace": trace.name,
        "trace_length_s": trace.duration_s,
        "cold_start_s": scenario.model.cold_start_s,
        "max_pods": scenario.model.max_pods,
        "slo_ms": scenario.model.slo_ms,
        "seed": scenario.model.seed,
        "arrival_gauge": scenario.model.arrival_gauge_s > 0,
        "quick_scale_down_stabilization_s": scenario.quick_scale_down_stabilization_s,
        "policies": {name: result.summary() for name, result in results.items()},
        "spikes": [
            {
                "start_s": start,
                "peak_qps": peak,
                "violation_s": {
                    name: sum(result.violated[start:end]) for name, result in results.items()
                },
            }
            for start, end, peak in spike_windows(trace)
        ],
    }


def spike_windows(trace: Trace) -> list[tuple[int, int, float]]:
    """(start, end, peak QPS) of each rise above the first load, up to the next rise or the end."""
    base = trace.points[0][1] if trace.points[0][0] == 0 else 0.0
    starts = [
        (int(t), qps)
        for (t, qps), (_, before) in zip(trace.points[1:], trace.points, strict=False)
        if qps > base and before <= base
    ]
    windows = []
    for index, (start, _) in enumerate(starts):
        end = starts[index + 1][0] if index + 1 < len(starts) else trace.duration_s
        peak = max(qps for t, qps in trace.points if start <= t < end)
        windows.append((start, end, peak))
    return windows


def project_trace(name: str) -> Trace:
    source = resources.files("kinfer_dev.autoscale") / "traces" / f"{name}.csv"
    with resources.as_file(source) as path:
        return load_trace(path)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "autoscale",
        help="compare kinfer's autoscaling with HPA, KPA and an oracle on load traces",
        description=(
            "Replays a load trace (CSV 't_s,qps') through the autoscaling simulator for kinfer"
            " (with and without precision tiers), HPA on QPS, Knative's KPA and an oracle."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--trace", type=Path, help="a CSV trace with the header t_s,qps")
    source.add_argument(
        "--all",
        action="store_true",
        help=f"the project's traces ({', '.join(PROJECT_TRACES)}) and the tier comparison",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument(
        "--out", type=Path, help="with --all: write autoscale.md, autoscale.json and the PNGs here"
    )
    parser.add_argument(
        "--cold-start-s",
        type=float,
        default=30.0,
        help="seconds from scale-up to Ready (default 30)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the arrivals (default 0)")
    parser.add_argument(
        "--period-s",
        type=int,
        default=KINFER_PERIOD_S,
        help=f"kinfer's scaling period (default {KINFER_PERIOD_S}; HPA keeps its 15 s)",
    )
    parser.add_argument(
        "--scale-down-stabilization-s",
        type=int,
        default=KINFER_SCALE_DOWN_STABILIZATION_S,
        help=f"kinfer's scale-down window (default {KINFER_SCALE_DOWN_STABILIZATION_S};"
        " HPA keeps its 300 s)",
    )
    parser.add_argument(
        "--quick-scale-down-stabilization-s",
        type=int,
        default=KINFER_QUICK_SCALE_DOWN_STABILIZATION_S,
        help="kinfer's scale-down window for a one-off fall (default"
        f" {KINFER_QUICK_SCALE_DOWN_STABILIZATION_S}; not shorter than the window: off)",
    )
    parser.add_argument(
        "--no-arrival-gauge",
        action="store_true",
        help="a server without kinfer's arrival-rate gauge (Triton): overloads are sized blind",
    )
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    error = _argument_error(args)
    if error is not None:
        print(f"kinfer: {error}", file=sys.stderr)
        return 2
    scenario = default_scenario(args.cold_start_s, args.seed)
    if args.no_arrival_gauge:
        scenario = replace(scenario, model=replace(scenario.model, arrival_gauge_s=0))
    scenario = replace(
        scenario,
        period_s=args.period_s,
        scale_down_stabilization_s=args.scale_down_stabilization_s,
        quick_scale_down_stabilization_s=args.quick_scale_down_stabilization_s,
    )
    if args.trace is None:
        return _run_all(args, scenario)
    try:
        trace = load_trace(args.trace)
    except (OSError, ValueError) as error:
        print(f"kinfer: --trace: {error}", file=sys.stderr)
        return 2
    summary = report(trace, scenario, run_trace(trace, scenario))
    print(json.dumps(summary) if args.json else _markdown([summary]))
    return 0


def _argument_error(args: argparse.Namespace) -> str | None:
    if args.cold_start_s < 0:
        return f"--cold-start-s {args.cold_start_s} must be >= 0"
    if args.period_s <= 0 or args.scale_down_stabilization_s < 0:
        return (
            f"--period-s {args.period_s} must be > 0 and --scale-down-stabilization-s"
            f" {args.scale_down_stabilization_s} >= 0"
        )
    if args.quick_scale_down_stabilization_s < 0:
        return (
            "--quick-scale-down-stabilization-s"
            f" {args.quick_scale_down_stabilization_s} must be >= 0"
        )
    return None


def _scenarios(scenario: Scenario) -> list[tuple[str, Trace, Scenario]]:
    """(plot name, trace, scenario) of every run of --all: the project's traces, the spike at
    longer cold starts, and the spike on a cluster with room for few pods."""
    runs = [(name, project_trace(name), scenario) for name in PROJECT_TRACES]
    spike = project_trace("spike")
    for cold_start_s in TIER_COLD_STARTS_S:
        slower = replace(scenario, model=replace(scenario.model, cold_start_s=float(cold_start_s)))
        runs.append((f"spike-cold-start-{cold_start_s}s", spike, slower))
    limited = replace(
        scenario,
        model=replace(
            scenario.model,
            cold_start_s=float(GPU_LIMITED_COLD_START_S),
            max_pods=GPU_LIMITED_MAX_PODS,
        ),
    )
    runs.append((f"spike-gpu-limited-{GPU_LIMITED_MAX_PODS}-pods", spike, limited))
    return runs


def _run_all(args: argparse.Namespace, scenario: Scenario) -> int:
    from kinfer_dev.autoscale import plots

    summaries = []
    for name, trace, run_scenario in _scenarios(scenario):
        results = run_trace(trace, run_scenario)
        summaries.append(report(trace, run_scenario, results))
        if args.out is not None:
            plots.plot(trace, scenario.model.slo_ms, results, args.out / f"{name}.png")
    table = _markdown(summaries)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "autoscale.md").write_text(table)
        (args.out / "autoscale.json").write_text(json.dumps(summaries, indent=1) + "\n")
    print(json.dumps({"runs": summaries}) if args.json else table)
    return 0


def _markdown(summaries: list[dict[str, object]]) -> str:
    lines = [
        "| trace | cold start s | max pods | policy | SLO violation | replica-s | vs oracle"
        " | scale events | tier switches | lower tier | reversals / flaps | violation vs HPA |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for summary in summaries:
        policies: dict[str, dict[str, float]] = summary["policies"]  # type: ignore[assignment]
        oracle_rs = policies["oracle"]["replica_seconds"] or 1
        hpa_violation = policies["hpa"]["slo_violation_fraction"]
        for name, figures in policies.items():
            versus_hpa = (
                f"{figures['slo_violation_fraction'] / hpa_violation:.2f}x"
                if hpa_violation
                else "-"
            )
            lines.append(
                f"| {summary['trace']} | {summary['cold_start_s']:g}"
                f" | {summary['max_pods'] or '-'} | {name}"
                f" | {figures['slo_violation_fraction']:.2%} | {figures['replica_seconds']}"
                f" | {figures['replica_seconds'] / oracle_rs:.2f}x | {figures['scale_events']}"
                f" | {figures['tier_switches']} | {figures['lower_tier_fraction']:.1%}"
                f" | {figures['reversals']} / {figures['flaps']} | {versus_hpa} |"
            )
    return "\n".join(lines) + "\n"
