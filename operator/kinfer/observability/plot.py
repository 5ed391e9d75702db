"""The timeline of one InferenceService as a PNG: QPS, p95 against the target, replicas and the
precision tier over time, with its scale and tier Events marked (`kinfer plot`, `make demo`).

The data is plain (`Timeline`), built by whoever read it (Prometheus range queries, or the demo's
own samples); `render` turns it into a matplotlib Figure without pyplot's global state, so tests
read the figure's data. matplotlib is not an operator dependency: `pip install 'kinfer[plot]'`.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# (unix seconds, value)
Point = tuple[float, float]

MARKER_SCALE = "scale"
MARKER_TIER = "tier"
# core/v1 Event.action of the operator's Events (kinfer.controller.control_loop).
ACTION_SCALE = "Scale"
ACTION_SWITCH_TIER = "SwitchTier"
# The gid of each plotted artist: what tests and tools find them by.
GID_QPS = "qps"
GID_P95 = "p95"
GID_TARGET = "target"
GID_READY = "ready-replicas"
GID_DESIRED = "desired-replicas"
GID_TIER = "tier"
MARKER_COLORS = {MARKER_SCALE: "tab:green", MARKER_TIER: "tab:purple"}
# Event labels closer than this share of the time axis go on separate rows (axes fraction).
LABEL_GAP = 0.04
LABEL_ROW_HEIGHT = 0.35
LABEL_ROW_SHIFT_PT = 9  # and a little to the right, clear of the row above
LABEL_ROWS = 3
# A line breaks where samples are this many usual spacings apart.
GAP_FACTOR = 3
# p95 on a log scale when its largest value is this many times the smallest (target included).
LOG_SCALE_RATIO = 10
INSTALL_HINT = "pip install 'kinfer[plot]' (matplotlib)"

_SCALED = re.compile(r"scaled (\d+) -> (\d+)")
_TIER = re.compile(r"tier (\S+) -> (\S+?):")


class PlottingUnavailable(RuntimeError):
    """matplotlib is not installed; the message says how to install it."""


@dataclass(frozen=True)
class Marker:
    """One scale or tier Event: when, which kind, its reason and a short label (`1 -> 3`)."""

    at_s: float
    kind: str
    reason: str
    label: str


@dataclass
class Timeline:
    """Everything one plot shows. Series are (unix seconds, value), oldest first; `tier` holds
    (unix seconds, tier name); `tiers` is spec.precision.tiers' order, highest quality first."""

    title: str
    start_s: float
    end_s: float
    qps: list[Point] = field(default_factory=list)
    p95_ms: list[Point] = field(default_factory=list)
    target_ms: list[Point] = field(default_factory=list)
    ready_replicas: list[Point] = field(default_factory=list)
    desired_replicas: list[Point] = field(default_factory=list)
    tier: list[tuple[float, str]] = field(default_factory=list)
    tiers: list[str] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)

    def tier_order(self) -> list[str]:
        """The tiers to label, highest first: the spec's, then any other tier seen."""
        order = list(self.tiers)
        order += [name for _, name in self.tier if name not in order]
        return order


def event_time_s(event: dict[str, Any]) -> float | None:
    """When a core/v1 Event happened (its first timestamp, event time or creation), unix s."""
    for raw in (
        event.get("firstTimestamp"),
        event.get("eventTime"),
        event.get("lastTimestamp"),
        (event.get("metadata") or {}).get("creationTimestamp"),
    ):
        if raw:
            return parse_time(str(raw))
    return None


def parse_time(raw: str) -> float:
    """An RFC 3339 time (`2026-12-06T20:55:01Z`, fractions and offsets too) in unix seconds."""
    value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def marker_of(event: dict[str, Any]) -> Marker | None:
    """The Marker of one of the operator's Events (action Scale or SwitchTier), else None."""
    action, message = event.get("action"), str(event.get("message") or "")
    at_s = event_time_s(event)
    if at_s is None:
        return None
    reason = str(event.get("reason") or "")
    if action == ACTION_SCALE:
        found = _SCALED.search(message)
        label = f"{found.group(1)} -> {found.group(2)}" if found else reason
        return Marker(at_s, MARKER_SCALE, reason, label)
    if action == ACTION_SWITCH_TIER:
        found = _TIER.search(message)
        label = f"{found.group(1)} -> {found.group(2)}" if found else reason
        return Marker(at_s, MARKER_TIER, reason, label)
    return None


def markers_from_events(events: Iterable[dict[str, Any]]) -> list[Marker]:
    """The scale and tier Markers of a list of core/v1 Events (as JSON), oldest first."""
    found = [marker for marker in map(marker_of, events) if marker is not None]
    return sorted(found, key=lambda marker: marker.at_s)


def render(timeline: Timeline) -> Any:
    """The timeline as a matplotlib Figure: four panels sharing the time axis (seconds since
    `start_s`): QPS; p95 and the target (log scale); ready and desired replicas; the tier.
    Every scale and tier Marker is a vertical line on each panel, labelled on the first."""
    figure_class = _figure_class()
    figure = figure_class(figsize=(11, 9), layout="constrained")
    qps_ax, p95_ax, replicas_ax, tier_ax = figure.subplots(4, 1, sharex=True)
    start = timeline.start_s
    began = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    qps_ax.set_title(f"{timeline.title}: QPS, p95, replicas and tier from {began}")
    _line(qps_ax, timeline.qps, start, GID_QPS, "QPS", color="black")
    qps_ax.set_ylabel("QPS")
    _latency(p95_ax, timeline, start)
    _replicas(replicas_ax, timeline, start)
    _tiers(tier_ax, timeline, start)
    tier_ax.set_xlabel(f"seconds since {began}")
    tier_ax.set_xlim(0, max(timeline.end_s - start, 1.0))
    for axes in (qps_ax, p95_ax, replicas_ax, tier_ax):
        _mark(axes, timeline, labelled=axes is qps_ax)
    qps_ax.legend(loc="lower right", fontsize=8)
    return figure


def write_png(timeline: Timeline, path: Path) -> Any:
    """Render `timeline` into `path` (PNG; folders created); returns the Figure."""
    figure = render(timeline)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    return figure


def require_matplotlib() -> None:
    """Raise PlottingUnavailable, saying how to install it, when matplotlib is missing."""
    _figure_class()


def describe(timeline: Timeline) -> str:
    """One line on what the plot shows: its span, peaks, tiers visited and Events marked."""
    span = timeline.end_s - timeline.start_s
    parts = [f"{timeline.title} over {span:.0f} s"]
    if timeline.qps:
        parts.append(f"QPS up to {max(v for _, v in timeline.qps):.1f}")
    if timeline.p95_ms:
        peak = f"p95 up to {max(v for _, v in timeline.p95_ms):.0f} ms"
        if timeline.target_ms:
            peak += f" (target {timeline.target_ms[-1][1]:.0f} ms)"
        parts.append(peak)
    if timeline.ready_replicas:
        ready = [v for _, v in timeline.ready_replicas]
        parts.append(f"ready replicas {min(ready):.0f}-{max(ready):.0f}")
    visited = [name for index, (_, name) in enumerate(timeline.tier)
               if index == 0 or timeline.tier[index - 1][1] != name]  # fmt: skip
    if visited:
        parts.append("tiers " + " -> ".join(visited))
    scale = sum(1 for m in timeline.markers if m.kind == MARKER_SCALE)
    tier = sum(1 for m in timeline.markers if m.kind == MARKER_TIER)
    parts.append(f"Events marked: {scale} scale, {tier} tier")
    return "; ".join(parts)


def _figure_class() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PlottingUnavailable(f"plotting needs matplotlib: {INSTALL_HINT}") from None
    return Figure


def with_gaps(points: list[Point]) -> list[Point]:
    """`points` with a NaN wherever two are more than GAP_FACTOR x the usual spacing apart
    (no sample there: a line must not bridge it)."""
    spacings = sorted(b[0] - a[0] for a, b in itertools.pairwise(points))
    if not spacings:
        return list(points)
    usual = spacings[len(spacings) // 2]
    broken = [points[0]]
    for before, point in itertools.pairwise(points):
        if point[0] - before[0] > GAP_FACTOR * usual:
            broken.append(((before[0] + point[0]) / 2, math.nan))
        broken.append(point)
    return broken


def _line(axes: Any, points: list[Point], start: float, gid: str, label: str, **style: Any) -> Any:
    xs = [t - start for t, _ in with_gaps(points)]
    ys = [value for _, value in with_gaps(points)]
    (line,) = axes.plot(xs, ys, label=label, gid=gid, linewidth=1.2, **style)
    if not points:
        axes.text(0.5, 0.5, "no data", transform=axes.transAxes, ha="center", color="gray")
    return line


def _latency(axes: Any, timeline: Timeline, start: float) -> None:
    _line(axes, timeline.p95_ms, start, GID_P95, "p95", color="tab:blue")
    if timeline.target_ms:
        xs = [t - start for t, _ in timeline.target_ms]
        ys = [value for _, value in timeline.target_ms]
        axes.step(xs, ys, where="post", color="tab:red", linestyle="--", gid=GID_TARGET,
                  label="target")  # fmt: skip
    values = [v for _, v in timeline.p95_ms + timeline.target_ms if v > 0]
    if values and max(values) > LOG_SCALE_RATIO * min(values):
        # A saturated p95 is many times the target: a log scale keeps the target readable.
        from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

        axes.set_yscale("log")
        axes.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axes.yaxis.set_major_formatter(ScalarFormatter())
        axes.yaxis.set_minor_formatter(NullFormatter())
    axes.set_ylabel("p95 ms")
    axes.legend(loc="upper left", fontsize=8)


def _replicas(axes: Any, timeline: Timeline, start: float) -> None:
    for points, gid, label, style in (
        (timeline.ready_replicas, GID_READY, "ready", "-"),
        (timeline.desired_replicas, GID_DESIRED, "desired", "--"),
    ):
        xs = [t - start for t, _ in points]
        ys = [value for _, value in points]
        axes.step(xs, ys, where="post", linestyle=style, gid=gid, label=label, linewidth=1.2)
    if not timeline.ready_replicas:
        axes.text(0.5, 0.5, "no data", transform=axes.transAxes, ha="center", color="gray")
    top = max([v for _, v in timeline.ready_replicas + timeline.desired_replicas] or [1.0])
    axes.set_ylim(0, top + 1)
    axes.yaxis.get_major_locator().set_params(integer=True)
    axes.set_ylabel("replicas")
    axes.legend(loc="upper left", fontsize=8)


def _tiers(axes: Any, timeline: Timeline, start: float) -> None:
    """The tier as a step line: the first (highest quality) tier on top."""
    order = timeline.tier_order()
    level = {name: len(order) - 1 - index for index, name in enumerate(order)}
    xs = [t - start for t, _ in timeline.tier]
    ys = [level[name] for _, name in timeline.tier]
    axes.step(xs, ys, where="post", color="tab:purple", gid=GID_TIER, linewidth=1.5)
    axes.set_yticks([level[name] for name in order], labels=order)
    axes.set_ylim(-0.5, max(len(order) - 0.5, 0.5))
    axes.set_ylabel("tier")
    if not timeline.tier:
        axes.text(0.5, 0.5, "no data", transform=axes.transAxes, ha="center", color="gray")


def label_rows(markers: list[Marker], span_s: float) -> list[int]:
    """The row of each Marker's label (0: the top): a label closer than LABEL_GAP of the span
    to one already in a row goes to the next row, so that close Events stay readable."""
    gap_s = LABEL_GAP * max(span_s, 1.0)
    placed: list[tuple[float, int]] = []
    rows = []
    for marker in markers:
        taken = {row for at_s, row in placed if abs(marker.at_s - at_s) < gap_s}
        row = next((r for r in range(LABEL_ROWS) if r not in taken), len(placed) % LABEL_ROWS)
        placed.append((marker.at_s, row))
        rows.append(row)
    return rows


def _mark(axes: Any, timeline: Timeline, labelled: bool) -> None:
    start, markers = timeline.start_s, timeline.markers
    rows = label_rows(markers, timeline.end_s - start)
    legend_done: set[str] = set()
    for marker, row in zip(markers, rows, strict=True):
        x = marker.at_s - start
        color = MARKER_COLORS.get(marker.kind, "gray")
        name = "scale event" if marker.kind == MARKER_SCALE else "tier switch"
        legend = labelled and marker.kind not in legend_done
        legend_done.add(marker.kind)
        axes.axvline(x, color=color, linestyle=":", linewidth=1, gid=f"{marker.kind}-event",
                     label=name if legend else "_nolegend_")  # fmt: skip
        if labelled:
            axes.annotate(
                marker.label,
                xy=(x, 1.0 - LABEL_ROW_HEIGHT * row),
                xycoords=("data", "axes fraction"),
                xytext=(2 + LABEL_ROW_SHIFT_PT * row, -2),
                textcoords="offset points",
                rotation=90,
                va="top",
                fontsize=7,
                color=color,
            )
