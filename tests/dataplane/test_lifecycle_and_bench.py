"""kinfer-ort-server start-up and shutdown, and the runtime benchmark's pure parts."""

from __future__ import annotations

import argparse

import pytest

from kinfer_dev.runtime import bench
from kinfer_dev.runtime.ort_server import start_ort_server
from kinfer_dev.runtime.repository import write_model_repository

pytestmark = pytest.mark.slow


def test_sigterm_stops_the_server_cleanly(tier_models, tmp_path):
    repo = tmp_path / "repo"
    write_model_repository(repo, "m", {"fp32": tier_models["fp32"]})
    handle = start_ort_server(repo, load_models=["m"], work_dir=tmp_path / "work")
    assert handle.stop() == 0
    assert "stopping" in handle.log_tail()


def test_a_startup_model_that_fails_to_load_stops_the_server(tmp_path):
    (tmp_path / "repo").mkdir()
    with pytest.raises(RuntimeError, match="exited with code 1") as caught:
        start_ort_server(tmp_path / "repo", load_models=["missing"], work_dir=tmp_path / "work")
    assert "failed to load 'missing'" in str(caught.value)


def _cell(target: str, concurrency: int, p50_ms: float, rps: float) -> bench.Cell:
    return bench.Cell(target, concurrency, 100, 0, 1.0, p50_ms, p50_ms * 2, rps)


def test_ratios_compare_with_raw_and_with_triton_on_the_same_protocol():
    cells = [
        _cell("raw", 1, 0.01, 50_000),
        _cell("kinfer-http", 1, 0.41, 2_000),
        _cell("kinfer-grpc", 1, 0.81, 1_000),
        _cell("kinfer-grpcio", 1, 0.91, 400),
        _cell("triton-http", 1, 1.01, 500),
        _cell("triton-grpc", 1, 1.61, 800),
    ]
    bench._add_ratios(cells)
    by_target = {cell.target: cell for cell in cells}
    assert by_target["kinfer-http"].p50_added_ms == pytest.approx(0.40)
    assert by_target["kinfer-http"].throughput_vs_triton == pytest.approx(4.0)
    assert by_target["kinfer-grpc"].throughput_vs_triton == pytest.approx(1.25)
    assert by_target["kinfer-grpcio"].throughput_vs_triton == pytest.approx(0.5)
    assert by_target["triton-http"].throughput_vs_triton is None
    assert by_target["raw"].p50_added_ms is None
    table = bench.format_table(
        {
            "machine": {"cpu": "cpu", "cores": 2, "onnxruntime": "1"},
            "model": {"name": "m", "shape": {}},
            "cells": [vars(cell) for cell in cells],
        }
    )
    assert "kinfer-http" in table and "4.00" in table


def test_server_cpu_counts_the_process_and_its_children(tmp_path):
    import os
    import subprocess
    import sys

    burn = (
        "import sys, time\n"
        "start = time.process_time()\n"
        "while time.process_time() - start < 0.3: pass\n"
        "print('burnt', flush=True)\n"
        "sys.stdin.read()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "burnt"
        own = sum(os.times()[:2])
        assert bench._tree_cpu_s(os.getpid()) >= own + 0.25
        assert bench._tree_cpu_s(child.pid) >= 0.25
    finally:
        child.stdin.close()
        child.wait(timeout=30)
    assert bench._tree_cpu_s(child.pid) is None  # gone: no figure rather than a wrong one


def test_repeated_sweeps_report_medians_and_sum_counts():
    rounds = [[_cell("raw", 1, p50, rps)] for p50, rps in ((1.0, 10.0), (3.0, 30.0), (2.0, 20.0))]
    (merged,) = bench._median_cells(rounds)
    assert (merged.p50_ms, merged.throughput_rps, merged.requests) == (2.0, 20.0, 300)


def test_raw_paced_idles_before_each_run_and_is_compared_with_raw(tier_models):
    from kinfer_dev.runtime.testmodels import sample_input

    batch = sample_input(1)
    raw = bench._bench_raw(tier_models["fp32"], batch, 1, 0.3, 0.05, 100_000)
    paced = bench._bench_raw(
        tier_models["fp32"], batch, 1, 0.3, 0.05, 100_000, pause_s=bench.RAW_PAUSE_S
    )
    assert (raw.target, paced.target) == ("raw", "raw-paced")
    assert raw.requests > 0 and paced.requests > 0
    # Each paced run waits RAW_PAUSE_S first: no more runs than the pauses leave room for,
    # while the tight loop runs back to back.
    assert paced.throughput_rps <= 1 / bench.RAW_PAUSE_S
    assert raw.throughput_rps > paced.throughput_rps
    bench._add_ratios([raw, paced])
    assert paced.p50_added_ms == pytest.approx(paced.p50_ms - raw.p50_ms)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("concurrency", "0"),
        ("concurrency", "a"),
        ("targets", "raw,gpu"),
        ("repeat", 0),
        ("duration_s", 0),
        ("client", "go"),
    ],
)
def test_bad_bench_options_exit_2(option, value, capsys, monkeypatch):
    # kinfer-perf missing: --client=go must say what to build instead of failing later.
    monkeypatch.setattr(bench, "find_perf_client", lambda: None)
    args = argparse.Namespace(
        concurrency="1",
        targets="raw",
        repeat=1,
        duration_s=1.0,
        warmup_s=0.0,
        max_requests=10,
        json=False,
        server_arg=[],
        client="tritonclient",
    )
    setattr(args, option, value)
    assert bench.run(args) == 2
    assert option.split("_")[0] in capsys.readouterr().err


def test_exit_on_error_false_serves_the_other_models_and_strict_readiness_says_not_ready(
    tier_models, tmp_path
):
    import urllib.error
    import urllib.request

    repo = tmp_path / "repo"
    write_model_repository(repo, "good", {"fp32": tier_models["fp32"]})
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    handle = start_ort_server(
        repo,
        load_models=["good"],
        work_dir=tmp_path / "work",
        extra_args=["--load-model=broken", "--exit-on-error=false", "--strict-readiness=false"],
    )
    try:
        url = f"http://{handle.http_url}/v2/models/good/ready"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://{handle.http_url}/v2/models/broken/ready", timeout=10)
        assert "failed to load 'broken' version 1" in handle.log_tail()
    finally:
        assert handle.stop() == 0


def test_native_requests_are_what_tritonclient_sends():
    import json

    from tritonclient.grpc import service_pb2

    from kinfer_dev.runtime.testmodels import sample_input

    batch = sample_input(2)
    body, json_size = bench.native_request("grpc", batch)
    request = service_pb2.ModelInferRequest.FromString(body)
    assert json_size is None
    assert (request.model_name, list(request.inputs[0].shape)) == (bench.MODEL, [2, 64])
    assert request.raw_input_contents[0] == batch.astype("float32").tobytes()
    assert [output.name for output in request.outputs] == ["output"]
    body, json_size = bench.native_request("http", batch)
    header = json.loads(body[:json_size])
    assert header["inputs"][0]["shape"] == [2, 64]
    assert header["inputs"][0]["parameters"]["binary_data_size"] == len(body) - json_size


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_the_native_client_measures_a_real_server(ort_server, protocol):
    if bench.find_perf_client() is None:
        pytest.fail("kinfer-perf is not built: run `make grpc-frontend`")
    from kinfer_dev.runtime.testmodels import sample_input

    cell = bench._bench_native(
        f"kinfer-{protocol}", ort_server, protocol, sample_input(1), 4, 0.5, 0.2, 100_000
    )
    assert cell.failures == 0 and cell.requests > 10
    assert 0 < cell.p50_ms <= cell.p99_ms
    assert cell.throughput_rps > 0 and cell.server_cpu_us > 0
    assert cell.server_mean_ms is not None and cell.server_mean_ms > 0


def test_the_native_client_reports_failures_instead_of_hiding_them(ort_server, tmp_path):
    import json
    import subprocess

    request = tmp_path / "bad.bin"
    request.write_bytes(b'{"inputs": []}')
    done = subprocess.run(
        [
            bench.find_perf_client() or bench.PERF_CLIENT,
            "--protocol=http",
            f"--url={ort_server.http_url}",
            "--model=mlp",
            f"--request={request}",
            "--concurrency=2",
            "--warmup=0s",
            "--duration=0.3s",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    figures = json.loads(done.stdout)
    assert figures["requests"] == 0 and figures["failures"] > 0
    assert "HTTP 400" in figures["first_error"]
