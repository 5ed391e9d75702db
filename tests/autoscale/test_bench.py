"""`kinfer bench autoscale`: the JSON contract, errors, and the --all outputs."""

from __future__ import annotations

import json

import pytest

from kinfer.cli import main
from kinfer_dev.autoscale.bench import project_trace, spike_windows

FIGURES = {"slo_violation_fraction", "replica_seconds", "scale_events"}
POLICIES = {"kinfer", "kinfer-tiers", "kinfer-tiers-absorb", "hpa", "kpa", "kpa-native", "oracle"}


def test_trace_json_is_one_object_with_the_contract_keys(tmp_path, capsys):
    trace = tmp_path / "mine.csv"
    trace.write_text("t_s,qps\n0,200\n300,600\n600,200\n900,200\n")
    assert (
        main(["bench", "autoscale", "--trace", str(trace), "--json", "--cold-start-s", "60"]) == 0
    )
    out = capsys.readouterr().out
    summary = json.loads(out)
    assert out.count("\n") == 1
    assert summary["trace"] == "mine"
    assert summary["trace_length_s"] == 1200
    assert summary["cold_start_s"] == 60
    assert summary["arrival_gauge"] is True
    assert set(summary["policies"]) == POLICIES
    for figures in summary["policies"].values():
        assert set(figures) >= FIGURES
        assert 0 <= figures["slo_violation_fraction"] <= 1
    assert summary["policies"]["oracle"]["slo_violation_fraction"] == 0
    assert [spike["start_s"] for spike in summary["spikes"]] == [300]


def test_no_arrival_gauge_simulates_a_server_without_one(tmp_path, capsys):
    # A 4x step: with the gauge kinfer asks for the measured load at the first saturated
    # scrape; without it (Triton) twice the pods first, the rest a scrape later.
    trace = tmp_path / "jump.csv"
    trace.write_text("t_s,qps\n0,300\n300,1200\n600,1200\n")

    def kinfer_violation(*flags: str) -> float:
        assert main(["bench", "autoscale", "--trace", str(trace), "--json", *flags]) == 0
        summary = json.loads(capsys.readouterr().out)
        return summary["arrival_gauge"], summary["policies"]["kinfer"]["slo_violation_fraction"]

    gauge, with_gauge = kinfer_violation()
    no_gauge, blind = kinfer_violation("--no-arrival-gauge")
    assert (gauge, no_gauge) == (True, False)
    assert with_gauge < blind


def test_the_quick_window_releases_a_one_off_spike_sooner(tmp_path, capsys):
    # One 3x spike: released after the quick window, on the short rate, it costs fewer
    # replica-seconds than after the 120 s window (a quick window of 120 s is off).
    trace = tmp_path / "once.csv"
    trace.write_text("t_s,qps\n0,300\n300,900\n420,300\n900,300\n")

    def kinfer_run(*flags: str) -> tuple[int, float]:
        assert main(["bench", "autoscale", "--trace", str(trace), "--json", *flags]) == 0
        summary = json.loads(capsys.readouterr().out)
        kinfer = summary["policies"]["kinfer"]
        return summary["quick_scale_down_stabilization_s"], kinfer["replica_seconds"]

    (quick, released), (off, held) = (
        kinfer_run(),
        kinfer_run("--quick-scale-down-stabilization-s", "120"),
    )
    assert (quick, off) == (30, 120)
    assert released < held
    assert main(["bench", "autoscale", "--all", "--quick-scale-down-stabilization-s", "-1"]) == 2
    assert "--quick-scale-down-stabilization-s -1 must be >= 0" in capsys.readouterr().err


def test_bad_trace_is_an_error_naming_it(tmp_path, capsys):
    trace = tmp_path / "bad.csv"
    trace.write_text("time,qps\n0,1\n")
    assert main(["bench", "autoscale", "--trace", str(trace), "--json"]) == 2
    assert "--trace:" in capsys.readouterr().err
    assert main(["bench", "autoscale", "--trace", str(tmp_path / "missing.csv")]) == 2


def test_negative_cold_start_is_refused(tmp_path, capsys):
    trace = tmp_path / "t.csv"
    trace.write_text("t_s,qps\n0,1\n")
    assert main(["bench", "autoscale", "--trace", str(trace), "--cold-start-s", "-1"]) == 2
    assert "--cold-start-s -1.0 must be >= 0" in capsys.readouterr().err


def test_trace_or_all_is_required():
    with pytest.raises(SystemExit):
        main(["bench", "autoscale"])


def test_spike_windows_of_the_project_spike_trace():
    windows = spike_windows(project_trace("spike"))
    assert [(start, peak) for start, _, peak in windows] == [(600, 600), (1200, 900), (1800, 1200)]
    assert windows[0][1] == 1200


@pytest.mark.slow
def test_all_writes_table_json_and_plots(tmp_path, capsys):
    assert main(["bench", "autoscale", "--all", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "autoscale.md").read_text()
    assert table.startswith("| trace | cold start s | max pods | policy |")
    runs = json.loads((tmp_path / "autoscale.json").read_text())
    assert [(run["trace"], run["cold_start_s"], run["max_pods"]) for run in runs] == [
        ("step", 30, None),
        ("spike", 30, None),
        ("diurnal", 30, None),
        ("bursty", 30, None),
        ("spike", 60, None),
        ("spike", 120, None),
        ("spike", 60, 12),
    ]
    for name in (
        "step",
        "spike",
        "diurnal",
        "bursty",
        "spike-cold-start-60s",
        "spike-gpu-limited-12-pods",
    ):
        png = (tmp_path / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG")
    assert "| bursty | 30 | - | oracle |" in capsys.readouterr().out
