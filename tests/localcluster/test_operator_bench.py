"""`kinfer bench operator`, pure parts: /proc parsing, the operator's metrics, the audit and
query logs, the fleet it applies, and the table it keeps."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from kinfer.api.validation import validate_object
from kinfer_dev.fleet import bench, measure, report, services

# -- /proc ----------------------------------------------------------------------------

# A real /proc/<pid>/stat line, with a command name that holds a space and a parenthesis.
STAT = (
    "4242 (kinfer run) x) S 4200 4242 4200 0 -1 4194560 51234 0 12 0 "
    "1500 320 0 0 20 0 9 0 987654 1314455552 29350 18446744073709551615 "
    "1 1 0 0 0 0 0 16781312 17922 0 0 0 17 1 0 0 0 0 0"
)


def test_cpu_ticks_are_utime_plus_stime_whatever_the_command_name() -> None:
    assert measure.cpu_ticks(STAT) == 1500 + 320
    assert measure.parent_pid(STAT) == 4200


def test_rss_comes_from_vmrss() -> None:
    status = "Name:\tpython3\nVmPeak:\t 900000 kB\nVmRSS:\t  117248 kB\nThreads:\t9\n"
    assert measure.rss_bytes(status) == 117248 * 1024
    assert measure.rss_bytes("Name:\tzombie\n") == 0


def test_cpu_percent_is_of_one_core() -> None:
    assert measure.cpu_percent(ticks=300, seconds=120, ticks_per_s=100) == pytest.approx(2.5)
    assert measure.cpu_percent(ticks=24000, seconds=120, ticks_per_s=100) == pytest.approx(200)


def _fake_proc(root: Path, processes: dict[int, tuple[int, int, int]]) -> Path:
    """pid -> (parent, cpu ticks, rss kB)"""
    for pid, (parent, ticks, rss_kb) in processes.items():
        directory = root / str(pid)
        directory.mkdir(parents=True)
        fields = STAT.split(") S ")[1].split()
        fields[0] = str(parent)
        fields[10], fields[11] = str(ticks), "0"
        (directory / "stat").write_text(f"{pid} (p) S " + " ".join(fields))
        (directory / "status").write_text(f"VmRSS:\t{rss_kb} kB\n")
    (root / "self").mkdir()
    return root


def test_the_process_tree_sums_a_wrapper_and_its_children(tmp_path: Path) -> None:
    proc = _fake_proc(
        tmp_path, {10: (1, 5, 1000), 11: (10, 200, 50000), 12: (11, 7, 10), 99: (1, 999, 999)}
    )
    assert sorted(measure.process_tree(10, proc)) == [10, 11, 12]
    sample = measure.sample_tree(10, proc)
    assert sample == measure.ProcessSample(5 + 200 + 7, (1000 + 50000 + 10) * 1024)


# -- the operator's metrics -----------------------------------------------------------

METRICS_BEFORE = """
# TYPE kinfer_api_requests_total counter
kinfer_api_requests_total{verb="LIST",resource="pods"} 4.0
kinfer_api_requests_total{verb="WATCH",resource="pods"} 4.0
kinfer_api_requests_total{verb="PATCH",resource="inferenceservices/status"} 10.0
# TYPE kinfer_metric_reads_total counter
kinfer_metric_reads_total 100.0
# TYPE kinfer_decision_lag_seconds histogram
kinfer_decision_lag_seconds_bucket{le="0.1"} 10.0
kinfer_decision_lag_seconds_bucket{le="0.5"} 20.0
kinfer_decision_lag_seconds_bucket{le="1.0"} 20.0
kinfer_decision_lag_seconds_bucket{le="+Inf"} 20.0
kinfer_decision_lag_seconds_sum 3.0
kinfer_decision_lag_seconds_count 20.0
"""
METRICS_AFTER = """
# TYPE kinfer_api_requests_total counter
kinfer_api_requests_total{verb="LIST",resource="pods"} 4.0
kinfer_api_requests_total{verb="GET",resource="inferenceservices"} 6.0
kinfer_api_requests_total{verb="WATCH",resource="pods"} 5.0
kinfer_api_requests_total{verb="PATCH",resource="inferenceservices/status"} 40.0
# TYPE kinfer_metric_reads_total counter
kinfer_metric_reads_total 124.0
# TYPE kinfer_decision_lag_seconds histogram
kinfer_decision_lag_seconds_bucket{le="0.1"} 60.0
kinfer_decision_lag_seconds_bucket{le="0.5"} 110.0
kinfer_decision_lag_seconds_bucket{le="1.0"} 119.0
kinfer_decision_lag_seconds_bucket{le="+Inf"} 120.0
kinfer_decision_lag_seconds_sum 30.0
kinfer_decision_lag_seconds_count 120.0
"""


def test_counter_deltas_by_label_and_in_total() -> None:
    before, after = measure.parse_metrics(METRICS_BEFORE), measure.parse_metrics(METRICS_AFTER)
    by_verb = measure.delta(before, after, "kinfer_api_requests_total", by="verb")
    assert by_verb == {"LIST": 0, "GET": 6, "WATCH": 1, "PATCH": 30}
    assert measure.requests_by_kind(by_verb) == {"reads": 6, "writes": 30, "watches": 1}
    assert measure.delta(before, after, "kinfer_metric_reads_total") == {"": 24}
    assert measure.has_metric(after, "kinfer_metric_reads_total")
    assert not measure.has_metric(after, "kinfer_decision_lag")


def test_lag_quantiles_come_from_the_windows_buckets() -> None:
    before, after = measure.parse_metrics(METRICS_BEFORE), measure.parse_metrics(METRICS_AFTER)
    buckets = measure.bucket_deltas(before, after, "kinfer_decision_lag_seconds")
    assert buckets == {0.1: 50, 0.5: 90, 1.0: 99, math.inf: 100}
    # p50: rank 50 ends the first bucket; p95: 0.5 + 0.5 * (95 - 90) / 9.
    assert measure.histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert measure.histogram_quantile(0.95, buckets) == pytest.approx(0.5 + 0.5 * 5 / 9)
    # Above the highest finite bound: that bound, as Prometheus answers.
    assert measure.histogram_quantile(0.999, buckets) == pytest.approx(1.0)
    assert measure.histogram_quantile(0.5, {0.1: 0, math.inf: 0}) is None
    assert measure.histogram_quantile(0.5, {}) is None


# -- the logs ---------------------------------------------------------------------------


def _audit(verb: str, at: str, user: str = "kinfer-operator") -> str:
    return json.dumps(
        {"kind": "Event", "verb": verb, "user": {"username": user}, "requestReceivedTimestamp": at}
    )


def test_audit_counts_the_operators_requests_in_the_window_by_verb() -> None:
    start = measure._timestamp("2026-12-06T10:00:00Z")
    lines = [
        _audit("get", "2026-12-06T09:59:59.999Z"),  # before
        _audit("get", "2026-12-06T10:00:00.000001Z"),
        _audit("list", "2026-12-06T10:00:30Z"),
        _audit("patch", "2026-12-06T10:00:31Z"),
        _audit("watch", "2026-12-06T10:00:32Z"),
        _audit("get", "2026-12-06T10:00:33Z", user="kinfer-admin"),
        '{"kind": "Event", "verb": "get", "requestRecei',  # cut by the reader
        _audit("patch", "2026-12-06T10:02:00Z"),  # at the end: excluded
    ]
    verbs = measure.audit_verbs(lines, "kinfer-operator", start, start + 120)
    assert verbs == {"get": 1, "list": 1, "patch": 1, "watch": 1}
    assert measure.requests_by_kind(verbs) == {"reads": 2, "writes": 1, "watches": 1}


def test_the_query_log_counts_queries_in_the_window() -> None:
    start = measure._timestamp("2026-12-06T10:00:00Z")
    entry = {"params": {"query": "up"}, "ts": "2026-12-06T10:00:05.5Z"}
    lines = [json.dumps(entry), json.dumps({**entry, "ts": "2026-12-06T11:00:00Z"}), "garbage"]
    assert measure.logged_queries(lines, start, start + 120) == 1


def test_logs_are_read_from_an_offset(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_text("old\n")
    offset = measure.size_of(log)
    with open(log, "a") as handle:
        handle.write("new 1\nnew 2\n")
    assert measure.read_from(log, offset) == ["new 1", "new 2"]
    assert measure.read_from(tmp_path / "missing", 0) == []
    assert measure.size_of(None) == 0


# -- the fleet ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "mix"), [(1, (1, 0, 0)), (10, (1, 4, 5)), (100, (10, 45, 45)), (1000, (100, 450, 450))]
)
def test_the_mix_is_a_tenth_moving_and_the_rest_idle_half_at_zero(
    n: int, mix: tuple[int, int, int]
) -> None:
    found = services.fleet_mix(n)
    assert (found.moving, found.idle_at_zero, found.idle_at_one) == mix
    assert found.total == n


@pytest.mark.parametrize(
    ("n", "share", "mix"), [(10, 0.0, (0, 5, 5)), (1000, 0.0, (0, 500, 500)), (10, 1.0, (10, 0, 0))]
)
def test_another_moving_share_keeps_the_idle_half_at_zero(
    n: int, share: float, mix: tuple[int, int, int]
) -> None:
    found = services.fleet_mix(n, share)
    assert (found.moving, found.idle_at_zero, found.idle_at_one) == mix
    assert len(services.fleet(n, "ns", share)) == n


def test_a_moving_share_outside_zero_to_one_says_so() -> None:
    with pytest.raises(ValueError, match=r"--moving-share 1\.5: must be from 0 to 1"):
        services.fleet_mix(10, 1.5)


def test_every_service_is_valid_and_loaded_as_its_kind_says() -> None:
    items = services.fleet(10, "ns")
    assert len({i["metadata"]["name"] for i in items}) == 10
    for item in items:
        assert validate_object(item) == [], item["metadata"]["name"]
    loads = {
        i["metadata"]["name"]: i["metadata"]["annotations"]["kinfer.dev/simulated-load"]
        for i in items
    }
    assert loads["moving-0000"].startswith("square:")
    assert {loads[n] for n in loads if n.startswith("idle")} == {"idle"}
    replicas = {i["metadata"]["name"]: i["spec"]["replicas"] for i in items}
    assert replicas["idle-zero-0000"] == 0 and replicas["idle-one-0000"] == 1
    assert all(i["spec"]["scaling"]["targetQPSPerReplica"] for i in items)


def test_moving_phases_are_spread_over_the_period() -> None:
    phases = {services.moving_load(i, 4).rsplit(":", 1)[1] for i in range(4)}
    assert phases == {"0", "30", "60", "90"}


def test_nodes_hold_the_fleet_at_its_largest() -> None:
    nodes = services.fleet_nodes(1000)
    assert sum(n.pods for n in nodes) >= services.fleet_mix(1000).max_pods
    assert all(n.pods < 254 and not n.has_gpus for n in nodes)


# -- the bench's helpers and the table ----------------------------------------------------------


def test_operator_argv_adds_where_it_runs_and_metrics_only_when_it_has_them() -> None:
    argv = bench.operator_argv("'/old venv/bin/kinfer' run", "/k", "http://127.0.0.1:9090", None)
    assert argv == [
        "/old venv/bin/kinfer",
        "run",
        "--kubeconfig=/k",
        "--prometheus-url=http://127.0.0.1:9090",
    ]
    assert bench.operator_argv("kinfer run", "/k", "http://p", 8081)[-1] == "--metrics-port=8081"


def _isvc(generation: int, **ready: object) -> dict[str, object]:
    return {
        "metadata": {"generation": generation},
        "status": {"conditions": [{"type": "Ready", **ready}]},
    }


def test_a_service_is_settled_when_ready_or_scaled_to_zero_for_its_generation() -> None:
    assert bench.settled(_isvc(2, status="True", observedGeneration=2))
    assert bench.settled(_isvc(2, status="False", reason="ScaledToZero", observedGeneration=2))
    assert not bench.settled(_isvc(3, status="True", observedGeneration=2))
    assert not bench.settled(_isvc(2, status="False", reason="Progressing", observedGeneration=2))
    assert not bench.settled({"metadata": {"generation": 1}})


ROW = report.Row(
    label="after",
    services=1000,
    window_s=120.0,
    cpu_percent=12.5,
    rss_mb=180.0,
    api_reads_per_s=0.4,
    api_writes_per_s=3.1,
    queries_per_period=1.0,
    lag_p50_s=0.2,
    lag_p99_s=1.4,
    children_s=95.0,
    ready_s=110.0,
    api_source="audit log",
    queries_source="query log",
)


def test_the_console_table_puts_each_figure_next_to_its_target() -> None:
    text = report.console_table(ROW)
    lines = {line.split("  ")[0]: line.split() for line in text.splitlines()}
    assert lines["operator CPU, % of one core"][-4:] == ["12.5", "<=", "25", "ok"]
    assert lines["decision lag p99, s"][-1] == "OVER"
    assert "n/a" in report.console_table(replace(ROW, lag_p99_s=None))
    assert "(target is at 1,000)" in report.console_table(replace(ROW, services=10))
    assert lines["operator CPU per service, % of one core"][-1] == "0.0125"
    assert "1000 services (10% moving)" in text


def test_rows_accumulate_per_label_and_size(tmp_path: Path) -> None:
    before = replace(ROW, label="before", api_source="audit log", lag_p50_s=None, lag_p99_s=None)
    small = replace(ROW, services=100, cpu_percent=2.0)
    report.write(tmp_path, ROW)
    report.write(tmp_path, before)
    report.write(tmp_path, small)
    idle = report.write(tmp_path, replace(ROW, moving_share=0.0, cpu_percent=10.0))
    assert [(r.label, r.services, r.moving_share) for r in idle] == [
        ("after", 1000, 0.0),
        ("after", 100, 0.1),
        ("after", 1000, 0.1),
        ("before", 1000, 0.1),
    ], "an all-idle fleet is a row of its own"
    rows = report.write(tmp_path, replace(small, cpu_percent=3.0))  # a rerun replaces its row
    assert [r.cpu_percent for r in rows if r.key == ("after", 100, 0.1)] == [3.0]
    assert report.load_rows(tmp_path / report.JSON_NAME) == rows
    table = (tmp_path / report.MARKDOWN_NAME).read_text()
    assert table.count("\n| after |") == 3 and table.count("\n| before |") == 1
    assert "| before | 1000 | 10% | 0.0125 | 12.5 | 180 | 0.40 | 3.10 | 1.00 | n/a | n/a |" in table
    assert "| after | 1000 | 0% | 0.0100 | 10.0 |" in table
    assert (tmp_path / report.PLOT_NAME).stat().st_size > 10_000
