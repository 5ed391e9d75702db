"""One PNG per trace for the autoscaling bench: load, replicas and p95 of every policy over time."""

from __future__ import annotations

from pathlib import Path

from kinfer_dev.autoscale.simulator import Result, Trace

COLORS = {
    "kinfer": "tab:blue",
    "kinfer-tiers": "tab:green",
    "kinfer-tiers-absorb": "tab:olive",
    "hpa": "tab:red",
    "kpa": "tab:orange",
    "kpa-native": "tab:brown",
    "oracle": "tab:gray",
}


def plot(trace: Trace, slo_ms: float, results: dict[str, Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    seconds = range(trace.duration_s)
    figure, (load, replicas, latency) = plt.subplots(
        3, 1, figsize=(11, 8), sharex=True, constrained_layout=True
    )
    first = next(iter(results.values()))
    load.plot(seconds, first.offered_qps, color="black", linewidth=1)
    load.set_ylabel("offered QPS")
    load.set_title(f"trace {trace.name}: load, replicas and p95 per policy")
    for name, result in results.items():
        color = COLORS.get(name)
        style = "--" if name == "oracle" else "-"
        replicas.plot(
            seconds, result.replicas, style, color=color, linewidth=1.2, label=_label(name, result)
        )
        latency.plot(seconds, result.p95_ms, style, color=color, linewidth=0.8)
    replicas.set_ylabel("replicas")
    replicas.legend(loc="upper left", fontsize=8)
    latency.axhline(slo_ms, color="black", linestyle=":", linewidth=1)
    latency.set_yscale("log")
    latency.set_ylabel("p95 ms (log)")
    latency.set_xlabel("seconds")
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _label(name: str, result: Result) -> str:
    return (
        f"{name}: {result.slo_violation_fraction:.1%} over SLO, {result.replica_seconds} replica-s"
    )
