"""Metrics agree with the requests sent: kinfer's contract names, and Triton's own counters."""

from __future__ import annotations

import time

import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from kinfer_dev.runtime.testmodels import INPUT_NAME, sample_input

from .clients import infer, sample_value, scrape
from .conftest import METRICS_MODEL

pytestmark = pytest.mark.slow

SERIES = {"model": METRICS_MODEL, "version": "1", "tier": "fp32"}


def _send(server, successes_rows: list[int], failures: int) -> None:
    for index, rows in enumerate(successes_rows):
        infer(
            server, METRICS_MODEL, sample_input(rows, seed=index), "http" if index % 2 else "grpc"
        )
    for _ in range(failures):
        with pytest.raises(InferenceServerException):
            infer(server, METRICS_MODEL, sample_input(1)[:, :10], "http")  # wrong shape


def test_kinfer_metrics_count_what_was_sent(ort_server):
    before = scrape(ort_server)
    rows = [1, 2, 3, 1, 4, 1, 2]
    _send(ort_server, rows, failures=3)
    after = scrape(ort_server)

    def delta(name: str, **labels: str) -> float:
        return sample_value(after, name, **labels) - sample_value(before, name, **labels)

    assert delta("kinfer_inference_requests_total", **SERIES) == len(rows) + 3
    assert delta("kinfer_inference_failures_total", **SERIES, reason="bad_request") == 3
    assert delta("kinfer_inference_request_duration_seconds_count", **SERIES) == len(rows)
    assert delta("kinfer_inference_request_duration_seconds_sum", **SERIES) > 0
    assert delta("kinfer_inference_request_duration_seconds_bucket", **SERIES, le="+Inf") == len(
        rows
    )
    assert delta("kinfer_inference_queue_duration_seconds_count", **SERIES) == len(rows)
    # Sequential requests run one per batch: the batch-size histogram sums to the rows sent.
    assert delta("kinfer_inference_batch_size_sum", **SERIES) == sum(rows)
    assert sample_value(after, "kinfer_inference_inflight_requests", **SERIES) == 0
    for line in after.splitlines():
        if line.startswith("kinfer_inference_requests_total{"):
            assert 'model="' in line and 'version="' in line and 'tier="' in line


def test_kinfer_arrival_rate_reports_the_last_second(ort_server):
    # The gauge covers the second before the scrape: it shows the requests just sent, then,
    # a second later, none. Both are waited for (bounded); neither needs a sleep of its own.
    def arriving() -> float:
        return sample_value(scrape(ort_server), "kinfer_inference_arrival_rate", **SERIES)

    # Other tests' requests to the same model leave the gauge first: two reads a slot and more
    # apart both at 0 (the slot still filling at a read is not in it).
    assert _poll(lambda: arriving() + _after(0.15, arriving), lambda v: v == 0, 5.0) == 0
    sent = 20
    client = httpclient.InferenceServerClient(ort_server.http_url, network_timeout=60)
    try:
        tensor = httpclient.InferInput(INPUT_NAME, [1, sample_input(1).shape[1]], "FP32")
        tensor.set_data_from_numpy(sample_input(1))
        started = time.monotonic()
        for _ in range(sent):
            client.infer(METRICS_MODEL, [tensor])
        took_s = time.monotonic() - started
    finally:
        client.close()
    peak = seen = 0.0

    def settled(value: float) -> bool:
        nonlocal peak
        peak = max(peak, value)
        return value == sent

    seen = _poll(arriving, settled, timeout_s=2.0)
    assert 0 < peak <= sent
    # Sent within well under a second, the requests are all in the gauge's second at once.
    if took_s < 0.5:
        assert seen == sent, f"{sent} requests in {took_s:.2f} s, the gauge peaked at {peak}"
    assert _poll(arriving, lambda value: value == 0, timeout_s=5.0) == 0


def _after(delay_s: float, read) -> float:
    time.sleep(delay_s)
    return read()


def _poll(read, done, timeout_s: float, interval_s: float = 0.02) -> float:
    deadline = time.monotonic() + timeout_s
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(interval_s)
        value = read()
    return value


def test_kinfer_counts_unknown_models_in_one_series(ort_server):
    before = scrape(ort_server)
    for name in ("typo_a", "typo_b"):
        with pytest.raises(InferenceServerException):
            infer(ort_server, name, sample_input(1), "grpc")
    after = scrape(ort_server)
    labels = {"model": "_unknown_", "reason": "model_not_found"}
    assert (
        sample_value(after, "kinfer_inference_failures_total", **labels)
        - sample_value(before, "kinfer_inference_failures_total", **labels)
        == 2
    )
    assert "typo_a" not in after


def test_triton_metrics_count_what_was_sent(triton_server):
    labels = {"model": METRICS_MODEL, "version": "1"}
    before = scrape(triton_server)
    rows = [1, 2, 1]
    _send(triton_server, rows, failures=0)

    def sent(text: str) -> float:
        return sample_value(text, "nv_inference_request_success", **labels) - sample_value(
            before, "nv_inference_request_success", **labels
        )

    # Triton records a request's statistics after it has sent the answer: a scrape
    # right after the last answer can miss it, so wait until all are counted.
    after = _poll(lambda: scrape(triton_server), lambda text: sent(text) >= len(rows), 30.0)
    assert sent(after) == len(rows)
    assert "nv_inference_request_summary_us{" in after and 'quantile="0.95"' in after
