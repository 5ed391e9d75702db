"""`make demo`'s pure parts: the spike's sizing and InferenceService, the progress line, the
phases it watches for, the SLO summary and the timeline it plots (the run itself:
e2e/test_demo.py)."""

from __future__ import annotations

import io
from typing import Any

import pytest

from kinfer.api.model import parse
from kinfer.cli import main
from kinfer.observability.plot import MARKER_TIER, Marker
from kinfer_dev.localcluster import demo, demo_spike
from kinfer_dev.localcluster.demo_spike import Sample, SpikeWatch, progress_line

T0 = 1_800_000_000.0


def sample(elapsed: float, tier: str | None = "fp32", ready: int = 1, desired: int = 1,
           qps: float | None = 80.0, p95: float | None = 40.0) -> Sample:  # fmt: skip
    return Sample(T0 + elapsed, elapsed, qps, p95, ready, desired, tier)


def test_the_spike_is_sized_on_the_measured_service_times() -> None:
    plan = demo_spike.plan_spike(fp32_ms=12.5, int8_ms=4.0, max_replicas=3)
    assert plan.rate_qps == 96.0  # 1.2 x 1000 / 12.5: one fp32 pod's queue grows
    assert plan.target_latency_p95_ms == 125.0  # 10 service times
    # The QPS target asks for all 3 pods (96 / 38.4 = 2.5), and 3 Ready fp32 pods hold the
    # spike for the tier to return: 3 x 38.4 x 1.1 x 0.9 >= 96.
    assert plan.target_qps_per_replica == 38.4
    assert 3 * plan.target_qps_per_replica * 1.1 * 0.9 >= plan.rate_qps
    assert 2 * plan.target_qps_per_replica * 1.1 * 0.9 < plan.rate_qps
    assert "spike 96 QPS (1.2x one fp32 pod)" in plan.describe()


@pytest.mark.parametrize("cold_start_s", [30, 0])
def test_the_demo_service_is_valid_tiered_and_autoscaled(cold_start_s: int) -> None:
    plan = demo_spike.plan_spike(12.5, 4.0)
    uris = {t: f"http://127.0.0.1:8080/mlp/{t}/model.onnx" for t in ("fp32", "fp16", "int8")}
    obj = demo.inference_service(uris, "NVIDIA-A100-SXM4-80GB", plan, cold_start_s)
    isvc = parse(obj)
    assert [tier.name for tier in isvc.spec.precision.tiers] == ["fp32", "fp16", "int8"]
    scaling = obj["spec"]["scaling"]
    assert (scaling["minReplicas"], scaling["maxReplicas"]) == (1, 3)
    assert scaling["targetLatencyP95Ms"] == 125.0 and scaling["targetQPSPerReplica"] == 38.4
    annotations = obj["metadata"].get("annotations") or {}
    expected = {"kinfer.dev/simulated-cold-start-seconds": "30"} if cold_start_s else {}
    assert annotations == expected


def test_the_progress_line_shows_qps_p95_against_the_target_replicas_and_tier() -> None:
    over = sample(42, tier="int8", ready=1, desired=3, qps=83.14, p95=412.4)
    assert progress_line(over, 100.0) == (
        "  42s  QPS   83.1  p95   412 ms > 100 ms target  ready 1/3  tier int8"
    )
    within = sample(100, ready=3, desired=3, qps=80.0, p95=61.0)
    assert progress_line(within, 100.0) == (
        " 100s  QPS   80.0  p95    61 ms <= 100 ms target  ready 3/3  tier fp32"
    )
    unknown = sample(0, tier=None, qps=None, p95=None)
    assert progress_line(unknown, None) == "   0s  QPS      -  p95      - ms  ready 1/1  tier -"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_rewrites_in_place_on_a_terminal_and_prints_lines_otherwise() -> None:
    plain = io.StringIO()
    progress = demo_spike.Progress(plain)
    progress.show("one long line")
    progress.show("two")
    progress.done()
    assert plain.getvalue() == "one long line\ntwo\n"

    tty = Terminal()
    progress = demo_spike.Progress(tty)
    progress.show("one long line")
    progress.show("two")  # padded over the longer line before it
    progress.show("kept", keep=True)
    progress.show("next")
    progress.done()
    assert tty.getvalue() == "\rone long line\rtwo          \rkept\n\rnext\n"


def test_the_watch_sees_the_step_down_the_scale_out_and_the_return() -> None:
    watch = SpikeWatch("fp32")
    assert watch.see(sample(0)) == []
    assert watch.missing() == ["a step down from fp32", "a scale-out", "fp32 back on the new pods"]
    assert watch.see(sample(10, desired=3)) == ["scaling out: 1 -> 3 replicas"]
    assert watch.see(sample(14, tier="int8", desired=3)) == ["tier stepped down: fp32 -> int8"]
    # fp32 on one pod is not the return: the new pods are not Ready yet.
    assert watch.see(sample(16, tier="fp32", ready=1, desired=3)) == []
    assert watch.see(sample(50, tier="fp32", ready=3, desired=3)) == [
        "tier back at fp32 on 3 Ready pods"
    ]
    assert watch.returned_at_s == 50 and watch.missing() == []


def test_the_slo_summary_prints_what_is_there_and_n_a_for_the_rest() -> None:
    slo = {
        "windowSeconds": 3600,
        "withinTarget": 0.8731,
        "lowerTierSeconds": 41.2,
        "scaleOuts": 1,
        "tierSwitches": 2,
        "observedAt": "2026-12-06T21:03:12Z",
    }
    assert demo_spike.slo_summary(slo) == [
        "SLO (status.slo, last 3600 s, observed 2026-12-06T21:03:12Z):",
        "  requests within the p95 target: 87.3 %",
        "  time on a lower tier: 41 s",
        "  scale-outs: 1, tier switches: 2",
    ]
    partial = demo_spike.slo_summary({"windowSeconds": 3600, "scaleOuts": 0})
    assert partial[1] == "  requests within the p95 target: n/a"
    assert partial[3] == "  scale-outs: 0, tier switches: n/a"
    assert demo_spike.slo_summary(None)[0] == "SLO (status.slo, n/a, observed n/a):"


def test_the_timeline_of_samples_keeps_what_was_seen_and_the_events_of_the_run() -> None:
    samples = [sample(0), sample(2, tier=None, qps=None, p95=None), sample(4, tier="int8")]
    inside = Marker(T0 + 3, MARKER_TIER, "TierDegraded", "fp32 -> int8")
    before = Marker(T0 - 100, MARKER_TIER, "TierRestored", "int8 -> fp32")
    timeline = demo_spike.timeline_of_samples(
        "kinfer-demo/demo-mlp", samples, [before, inside], 100.0, ["fp32", "int8"], T0, T0 + 5
    )
    assert timeline.qps == [(T0, 80.0), (T0 + 4, 80.0)]
    assert timeline.tier == [(T0, "fp32"), (T0 + 4, "int8")]
    assert timeline.ready_replicas == [(T0, 1.0), (T0 + 2, 1.0), (T0 + 4, 1.0)]
    assert timeline.target_ms == [(T0, 100.0), (T0 + 5, 100.0)]
    assert timeline.markers == [inside]


@pytest.mark.parametrize(
    ("argv", "port"),
    [
        (["python", "-m", "kinfer", "run", "--metrics-port=40123"], 40123),
        (["python", "-m", "kinfer", "run", "--metrics-port=0"], None),
        (["python", "-m", "kinfer", "run"], None),
    ],
)
def test_an_operator_already_running_is_kept_only_with_its_metrics_served(
    argv: list[str], port: int | None
) -> None:
    assert demo._metrics_port(argv) == port


def test_the_demo_command_takes_no_spike(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["cluster", "demo", "--help"])
    assert "--no-spike" in capsys.readouterr().out


def test_the_last_line_is_the_failed_requests(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def spiked(failed: int) -> Any:
        def _run(config: Any, timeout_s: float, spike: bool, outcome: demo.Outcome) -> None:
            outcome.failed_requests = failed

        return _run

    monkeypatch.setattr(demo, "_run", spiked(0))
    assert demo.run(None) == 0  # type: ignore[arg-type]
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "failed requests: 0" and lines[-2].startswith("DEMO OK in ")
    monkeypatch.setattr(demo, "_run", spiked(3))
    assert demo.run(None) == 1  # type: ignore[arg-type]
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "failed requests: 3"
    assert lines[-2].endswith(": 3 requests failed")


def test_the_spike_starts_just_after_a_scrape_of_its_pods() -> None:
    scrapes = [T0 - 2.0, T0]  # every 2 s
    assert demo_spike.start_delay_s(scrapes, T0 + 0.1) == pytest.approx(0.15)
    # The moment passed: the one after the next scrape.
    assert demo_spike.start_delay_s(scrapes, T0 + 1.0) == pytest.approx(1.25)
    assert demo_spike.start_delay_s(list(reversed(scrapes)), T0 + 5.0) == pytest.approx(1.25)
    # Unknown phase: at once.
    assert demo_spike.start_delay_s([T0], T0 + 1.0) == 0.0
    assert demo_spike.start_delay_s([], T0) == 0.0
