"""`kinfer bench operator`'s results: one row per (operator label, services, moving share),
the targets of issue 20, the printed table, and docs/bench/operator.{json,md,png} that
accumulate the rows."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

JSON_NAME, MARKDOWN_NAME, PLOT_NAME = "operator.json", "operator.md", "operator.png"
# The fleet's default share of services with moving load (kinfer_dev.fleet.services).
DEFAULT_MOVING_SHARE = 0.10


@dataclass(frozen=True)
class Target:
    figure: str  # a Row field
    title: str
    limit: float | None  # at most this, at 1,000 services (None: shown, no target)


PER_SERVICE = "operator CPU per service, % of one core"
TARGETS = (
    Target("cpu_percent", "operator CPU, % of one core", 25.0),
    Target("rss_mb", "operator RSS, MiB (peak)", 300.0),
    Target("api_reads_per_s", "API requests/s, no watches or writes", 5.0),
    Target("api_writes_per_s", "API writes/s (what decisions need)", None),
    Target("queries_per_period", "Prometheus queries per period", 3.0),
    Target("lag_p50_s", "decision lag p50, s", None),
    Target("lag_p99_s", "decision lag p99, s", 1.0),
    Target("children_s", "apply -> all children created, s", 120.0),
    Target("ready_s", "apply -> all Ready, s", None),
)
TARGET_SERVICES = 1000


@dataclass(frozen=True)
class Row:
    """One measured run. Figures are None where the operator or the cluster had no source."""

    label: str
    services: int
    window_s: float
    cpu_percent: float
    rss_mb: float
    api_reads_per_s: float | None
    api_writes_per_s: float | None
    queries_per_period: float | None
    lag_p50_s: float | None
    lag_p99_s: float | None
    children_s: float | None
    ready_s: float | None
    # Where the API and Prometheus figures come from: "audit log", "query log", or the
    # operator's own "kinfer_api_requests_total" / "kinfer_metric_reads_total".
    api_source: str = ""
    queries_source: str = ""
    operator: str = ""
    measured_at: str = ""
    host: str = ""
    # The share of the services whose load moved (0: all idle).
    moving_share: float = DEFAULT_MOVING_SHARE

    @property
    def key(self) -> tuple[str, int, float]:
        return (self.label, self.services, self.moving_share)

    @property
    def cpu_per_service(self) -> float:
        """Operator CPU per service, % of one core: flat or falling with N (issue 20)."""
        return self.cpu_percent / self.services


def verdict(target: Target, value: float | None, services: int) -> str:
    if value is None or target.limit is None:
        return ""
    met = "ok" if value <= target.limit else "OVER"
    return met if services >= TARGET_SERVICES else f"{met} (target is at 1,000)"


def _cell(value: float | None) -> str:
    if value is None:
        return "n/a"
    digits = 2 if abs(value) < 10 else 1 if abs(value) < 100 else 0
    return f"{value:.{digits}f}"


def _limit(target: Target) -> str:
    return f"<= {target.limit:g}" if target.limit is not None else "-"


def console_table(row: Row) -> str:
    """One run: each figure next to its target."""
    width = max(len(title) for title in [*(t.title for t in TARGETS), PER_SERVICE])
    lines = [
        f"{row.label}: {row.services} services ({row.moving_share:.0%} moving),"
        f" {row.window_s:.0f} s window ({row.host})",
        f"{'figure':<{width}}  {'measured':>9}  {'target':>8}",
    ]
    for target in TARGETS:
        value = getattr(row, target.figure)
        lines.append(
            f"{target.title:<{width}}  {_cell(value):>9}  {_limit(target):>8}"
            f"  {verdict(target, value, row.services)}".rstrip()
        )
    lines.append(f"{PER_SERVICE:<{width}}  {row.cpu_per_service:>9.4f}")
    lines.append(
        f"sources: API {row.api_source or 'n/a'}; Prometheus {row.queries_source or 'n/a'}"
    )
    return "\n".join(lines)


def load_rows(path: Path) -> list[Row]:
    if not path.exists():
        return []
    known = {f.name for f in fields(Row)}
    return [
        Row(**{k: v for k, v in raw.items() if k in known}) for raw in json.loads(path.read_text())
    ]


def upsert(rows: list[Row], row: Row) -> list[Row]:
    """The rows with `row` replacing any of the same label, size and moving share; ordered by
    label, moving share, size."""
    kept = [r for r in rows if r.key != row.key] + [row]
    return sorted(kept, key=lambda r: (r.label, r.moving_share, r.services))


def markdown(rows: list[Row]) -> str:
    header = ["operator", "services", "moving", "CPU per service, %"] + [
        f"{t.title} ({_limit(t)})" if t.limit is not None else t.title for t in TARGETS
    ]
    lines = [
        "# Operator at fleet scale",
        "",
        'Written by `kinfer bench operator` (docs/local-cluster.md, "Fleet runs: simulated'
        ' pods"): one row per operator, fleet size and share of services whose load moves'
        " (the rest idle), on the local cluster with simulated pods. Targets (issue 20) hold"
        f" at {TARGET_SERVICES:,} services; n/a: the operator"
        " or the cluster has no source for the figure. The plot is"
        f" [{PLOT_NAME}]({PLOT_NAME}); the figures, with their sources,"
        f" [{JSON_NAME}]({JSON_NAME}).",
        "",
        "| " + " | ".join(header) + " | window s | sources (API; Prometheus) | measured |",
        "|---|" + "---:|" * (len(header) - 1) + "---:|---|---|",
    ]
    for row in rows:
        cells = [
            row.label,
            str(row.services),
            f"{row.moving_share:.0%}",
            f"{row.cpu_per_service:.4f}",
        ]
        cells += [_cell(getattr(row, t.figure)) for t in TARGETS]
        cells += [
            f"{row.window_s:.0f}",
            f"{row.api_source or 'n/a'}; {row.queries_source or 'n/a'}",
            f"{row.measured_at} {row.host}".strip(),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    shown = [t for t in TARGETS if t.figure != "api_writes_per_s"]
    shown.append(Target("cpu_per_service", PER_SERVICE, None))
    figure, axes = plt.subplots(3, 3, figsize=(15, 10), constrained_layout=True)
    series = sorted({(r.label, r.moving_share) for r in rows})
    for axis, target in zip(axes.flat, shown, strict=False):
        for label, share in series:
            points = [
                (r.services, getattr(r, target.figure))
                for r in rows
                if (r.label, r.moving_share) == (label, share)
                and getattr(r, target.figure) is not None
            ]
            if points:
                xs, ys = zip(*sorted(points), strict=True)
                axis.plot(xs, ys, marker="o", label=f"{label}, {share:.0%} moving")
        if target.limit is not None:
            axis.axhline(target.limit, color="tab:red", linestyle="--", linewidth=1)
        if target.figure == "cpu_per_service":
            axis.set_yscale("log")  # a hundredth of a percent next to tenths
        else:
            axis.set_ylim(bottom=0)
        axis.set_title(target.title, fontsize=9)
        axis.set_xlabel("InferenceServices")
        axis.set_xscale("log")
        axis.grid(True, alpha=0.3)
    for axis in list(axes.flat)[len(shown) :]:
        axis.axis("off")
    axes.flat[0].legend(fontsize=8)
    figure.suptitle("kinfer operator at fleet scale (dashed: target at 1,000 services)")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write(out: Path, row: Row) -> list[Row]:
    """Add `row` to out/operator.json and regenerate operator.md and operator.png."""
    out.mkdir(parents=True, exist_ok=True)
    rows = upsert(load_rows(out / JSON_NAME), row)
    (out / JSON_NAME).write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    (out / MARKDOWN_NAME).write_text(markdown(rows))
    plot(rows, out / PLOT_NAME)
    return rows
