"""The timeline plot (`kinfer plot`, `make demo`) as a pure function of its series and Events:
the figure's data is asserted, not its pixels; and what `kinfer plot` asks Prometheus."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest

from kinfer.cli import main
from kinfer.observability import history, plot
from kinfer.observability.plot import Marker, Timeline

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def event(action: str, reason: str, message: str, at: str, **extra: Any) -> dict[str, Any]:
    return {"action": action, "reason": reason, "message": message, "firstTimestamp": at, **extra}


SPIKE_EVENTS = [
    event(
        "SwitchTier",
        "TierRestored",
        "tier int8 -> fp32: QPS 80 fits 3 Ready x 40/replica at fp32",
        "2027-01-15T08:01:22Z",
    ),
    event(
        "Scale",
        "OverloadFloor",
        "scaled 1 -> 3: p95 2388 ms > 100 ms target on 1 pods",
        "2027-01-15T08:00:24Z",
    ),
    event(
        "SwitchTier",
        "TierDegraded",
        "tier fp32 -> int8: p95 2388 ms > 100 ms target and saturated",
        "2027-01-15T08:00:28Z",
    ),
    # Not the autoscaler's: no marker.
    {
        "reason": "Created",
        "message": "created deployment demo",
        "firstTimestamp": "2027-01-15T08:00:01Z",
    },
]


def spike_timeline() -> Timeline:
    seconds = range(0, 120, 2)
    return Timeline(
        title="kinfer-demo/demo-mlp",
        start_s=T0,
        end_s=T0 + 120,
        qps=[(T0 + s, 0.0 if s < 10 else 80.0) for s in seconds],
        p95_ms=[(T0 + s, 2400.0 if 16 <= s < 60 else 40.0) for s in seconds],
        target_ms=[(T0, 100.0), (T0 + 120, 100.0)],
        ready_replicas=[(T0 + s, 1.0 if s < 70 else 3.0) for s in seconds],
        desired_replicas=[(T0 + s, 1.0 if s < 24 else 3.0) for s in seconds],
        tier=[(T0 + s, "int8" if 28 <= s < 82 else "fp32") for s in seconds],
        tiers=["fp32", "fp16", "int8"],
        markers=plot.markers_from_events(SPIKE_EVENTS),
    )


def by_gid(axes: Any, gid: str) -> list[Any]:
    return [line for line in axes.get_lines() if line.get_gid() == gid]


def test_events_become_scale_and_tier_markers_oldest_first() -> None:
    markers = plot.markers_from_events(SPIKE_EVENTS)
    assert markers == [
        Marker(T0 + 24, plot.MARKER_SCALE, "OverloadFloor", "1 -> 3"),
        Marker(T0 + 28, plot.MARKER_TIER, "TierDegraded", "fp32 -> int8"),
        Marker(T0 + 82, plot.MARKER_TIER, "TierRestored", "int8 -> fp32"),
    ]


def test_an_event_time_falls_back_to_event_time_then_creation() -> None:
    raw = event("Scale", "QPSTarget", "scaled 3 -> 2: QPS below target", "")
    raw["firstTimestamp"] = None
    raw["eventTime"] = "2027-01-15T08:00:05.500000Z"
    assert plot.marker_of(raw) == Marker(T0 + 5.5, plot.MARKER_SCALE, "QPSTarget", "3 -> 2")
    raw["eventTime"] = None
    raw["metadata"] = {"creationTimestamp": "2027-01-15T08:00:07Z"}
    assert plot.marker_of(raw).at_s == T0 + 7
    # A message without the usual shape still marks, labelled by its reason.
    odd = event("SwitchTier", "TierPinned", "tier pinned to fp16", "2027-01-15T08:00:09Z")
    assert plot.marker_of(odd).label == "TierPinned"


def test_the_figure_holds_every_series_on_its_panel() -> None:
    timeline = spike_timeline()
    figure = plot.render(timeline)
    qps, p95, replicas, tier = figure.axes
    assert [a.get_ylabel() for a in figure.axes] == ["QPS", "p95 ms", "replicas", "tier"]
    (qps_line,) = by_gid(qps, plot.GID_QPS)
    assert list(qps_line.get_xdata()) == [t - T0 for t, _ in timeline.qps]
    assert list(qps_line.get_ydata()) == [v for _, v in timeline.qps]
    (p95_line,) = by_gid(p95, plot.GID_P95)
    assert max(p95_line.get_ydata()) == 2400.0
    (target,) = by_gid(p95, plot.GID_TARGET)
    assert set(target.get_ydata()) == {100.0}
    # Saturation is 24x the target: the p95 panel is logarithmic.
    assert p95.get_yscale() == "log"
    (ready,) = by_gid(replicas, plot.GID_READY)
    (desired,) = by_gid(replicas, plot.GID_DESIRED)
    assert max(ready.get_ydata()) == 3.0 and max(desired.get_ydata()) == 3.0
    assert desired.get_drawstyle() == "steps-post"
    # The tier: fp32 on top, int8 at the bottom, and the line goes down and back up.
    assert [label.get_text() for label in tier.get_yticklabels()] == ["fp32", "fp16", "int8"]
    assert list(tier.get_yticks()) == [2, 1, 0]
    (tier_line,) = by_gid(tier, plot.GID_TIER)
    levels = list(tier_line.get_ydata())
    assert levels[0] == 2 and min(levels) == 0 and levels[-1] == 2


def test_every_event_is_marked_on_every_panel_and_labelled_on_the_first() -> None:
    figure = plot.render(spike_timeline())
    for axes in figure.axes:
        scale = [line.get_xdata()[0] for line in by_gid(axes, "scale-event")]
        tiers = [line.get_xdata()[0] for line in by_gid(axes, "tier-event")]
        assert scale == [24.0] and tiers == [28.0, 82.0]
    labels = [text.get_text() for text in figure.axes[0].texts]
    assert labels == ["1 -> 3", "fp32 -> int8", "int8 -> fp32"]
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert legend == ["QPS", "scale event", "tier switch"]


def test_history_drops_markers_outside_the_range_and_starts_at_the_first_sample() -> None:
    subject = history.Subject("kinfer-demo", "demo-mlp", tiers=("fp32", "int8"), target_ms=100.0)
    early = Marker(T0 - 1000, plot.MARKER_SCALE, "QPSTarget", "2 -> 1")
    inside = Marker(T0 + 24, plot.MARKER_SCALE, "OverloadFloor", "1 -> 3")
    answers = {"qps": [{"metric": {}, "values": [[T0 + 10, "5"], [T0 + 12, "6"]]}]}
    timeline = history.timeline_of(subject, T0 - 900, T0 + 120, answers, [early, inside])
    assert timeline.markers == [inside]
    # A service younger than the range: the plot starts at its first sample.
    assert timeline.start_s == T0 + 10
    # Without the operator's target series, the spec's target is drawn flat over the plot.
    assert timeline.target_ms == [(T0 + 10, 100.0), (T0 + 120, 100.0)]
    # Nothing at all: the whole range, empty.
    empty = history.timeline_of(subject, T0, T0 + 120, {}, [])
    assert (empty.start_s, empty.qps, empty.tier) == (T0, [], [])


def test_close_event_labels_go_on_separate_rows() -> None:
    at = [T0 + 18, T0 + 18, T0 + 19, T0 + 24, T0 + 60]
    markers = [Marker(t, plot.MARKER_TIER, "TierDegraded", "x") for t in at]
    # 4 % of a 100 s axis: 4 s. Three rows at most.
    assert plot.label_rows(markers, 100.0) == [0, 1, 2, 0, 0]
    figure = plot.render(Timeline("ns/close", T0, T0 + 100, markers=markers[:2]))
    tops = [text.xy[1] for text in figure.axes[0].texts if hasattr(text, "xy")]
    assert tops == [1.0, 1.0 - plot.LABEL_ROW_HEIGHT]


def test_a_calm_p95_is_linear_and_empty_panels_say_no_data() -> None:
    calm = Timeline("ns/calm", T0, T0 + 60, p95_ms=[(T0, 20.0), (T0 + 30, 25.0)],
                    target_ms=[(T0, 50.0), (T0 + 60, 50.0)])  # fmt: skip
    figure = plot.render(calm)
    qps, p95, replicas, tier = figure.axes
    assert p95.get_yscale() == "linear"
    for axes in (qps, replicas, tier):
        assert [text.get_text() for text in axes.texts] == ["no data"]
    assert list(by_gid(qps, plot.GID_QPS)[0].get_xdata()) == []


def test_write_png_writes_a_png_where_asked(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "timeline.png"
    figure = plot.write_png(spike_timeline(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(figure.axes) == 4


def test_describe_names_the_peaks_tiers_and_events() -> None:
    line = plot.describe(spike_timeline())
    assert line == (
        "kinfer-demo/demo-mlp over 120 s; QPS up to 80.0; p95 up to 2400 ms (target 100 ms); "
        "ready replicas 1-3; tiers fp32 -> int8 -> fp32; Events marked: 1 scale, 2 tier"
    )


def test_range_queries_reuse_the_operators_queries_and_read_its_metrics() -> None:
    from kinfer.autoscale.metrics import queries, selector

    built = history.range_queries("kinfer-demo", "demo-mlp", "onnxruntime", window_s=15)
    own = queries("onnxruntime", 15, sel=selector("kinfer-demo", "demo-mlp"))
    assert built["qps"] == own.qps
    assert built["p95_ms"] == own.latency_p95_ms
    assert "[15s]" in built["p95_ms"]
    sel = 'namespace="kinfer-demo",inferenceservice="demo-mlp"'
    assert built["ready_replicas"] == (
        f"max by (namespace, inferenceservice) (kinfer_inferenceservice_ready_replicas{{{sel}}})"
    )
    assert "kinfer_inferenceservice_current_replicas" in built["desired_replicas"]
    assert built["target_ms"].endswith(") * 1000")
    assert "kinfer_inferenceservice_latency_target_seconds" in built["target_ms"]
    assert built["tier"] == (
        "max by (namespace, inferenceservice, tier) "
        f"(kinfer_inferenceservice_active_tier{{{sel}}}) == 1"
    )
    assert set(built) == set(history.SIGNALS)
    triton = history.range_queries("ns", "t", "triton", window_s=60)
    assert "nv_inference_request_summary_us" in triton["p95_ms"]


def test_range_answers_become_points_and_tier_stretches() -> None:
    matrix = [{"metric": {}, "values": [[T0 + 4, "2"], [T0, "1"], [T0 + 2, "NaN"]]}]
    assert history.points(matrix) == [(T0, 1.0), (T0 + 4, 2.0)]
    tiers = [
        {"metric": {"tier": "fp32"}, "values": [[T0, "1"], [T0 + 2, "1"], [T0 + 8, "1"]]},
        {"metric": {"tier": "int8"}, "values": [[T0 + 4, "1"], [T0 + 6, "1"]]},
    ]
    assert [name for _, name in history.tier_points(tiers)] == [
        "fp32",
        "fp32",
        "int8",
        "int8",
        "fp32",
    ]


def test_subject_reads_the_spec_and_defaults_when_the_service_is_gone() -> None:
    body = {
        "spec": {
            "runtime": "onnxruntime",
            "precision": {"tiers": [{"name": "fp32"}, {"name": "int8"}]},
            "scaling": {"targetLatencyP95Ms": 114.0, "metricsWindowSeconds": 15},
        }
    }
    subject = history.Subject.of("ns", "svc", body)
    assert (subject.tiers, subject.target_ms, subject.window_s) == (("fp32", "int8"), 114.0, 15)
    gone = history.Subject.of("ns", "svc", None)
    assert (gone.runtime, gone.tiers, gone.target_ms, gone.window_s) == (
        "onnxruntime",
        (),
        None,
        60,
    )


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("1h30m", 5400), ("2d", 172800), ("45", 45)]
)
def test_durations(text: str, seconds: float) -> None:
    assert history.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30x", "m30", "1h 30m", "-5m"])
def test_bad_durations_say_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected e\.g\. 90s, 30m"):
        history.parse_duration(text)


def test_the_step_keeps_a_plot_under_its_point_budget() -> None:
    assert history.step_s(120) == history.MIN_STEP_S
    assert history.step_s(86400) == 144
    assert 86400 / history.step_s(86400) <= history.MAX_POINTS


def test_kinfer_plot_without_matplotlib_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert main(["plot", "demo-mlp", "-n", "kinfer-demo"]) == 2
    assert "pip install 'kinfer[plot]'" in capsys.readouterr().err


def test_kinfer_plot_refuses_a_bad_since_before_reading_anything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["plot", "demo-mlp", "--since", "yesterday"]) == 2
    assert "duration 'yesterday'" in capsys.readouterr().err


def test_a_line_breaks_where_samples_are_missing() -> None:
    points = [(T0, 1.0), (T0 + 2, 2.0), (T0 + 4, 3.0), (T0 + 40, 4.0), (T0 + 42, 5.0)]
    broken = plot.with_gaps(points)
    assert [t for t, _ in broken] == [T0, T0 + 2, T0 + 4, T0 + 22, T0 + 40, T0 + 42]
    assert math.isnan(broken[3][1])
    assert plot.with_gaps(points[:1]) == points[:1]
    figure = plot.render(Timeline("ns/gap", T0, T0 + 42, qps=points))
    (line,) = by_gid(figure.axes[0], plot.GID_QPS)
    assert len(line.get_xdata()) == 6
