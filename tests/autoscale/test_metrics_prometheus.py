"""The Prometheus reader against a real Prometheus (Debian's package) scraping real metrics
endpoints on 127.0.0.1 that export the contract's metric names, as two pods of one service."""

from __future__ import annotations

import itertools
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import Metric

from kinfer.autoscale.metrics import (
    SLO_REFRESH_S,
    PrometheusReader,
    PrometheusSettings,
    Wanted,
    slo_bucket,
)
from kinfer.autoscale.policy import PolicyState, Replicas, decide
from kinfer.autoscale.signal import SAME_SCRAPE_S
from tests.policy_configs import policy

PROMETHEUS = Path("/usr/bin/prometheus")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not PROMETHEUS.exists(),
        reason="needs Debian's prometheus package: apt-get install -y prometheus",
    ),
]
WINDOW_S = 10
DEADLINE_S = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TritonSummary:
    """A collector exporting Triton's counters and its p95 summary quantile (fixed per pod)."""

    def __init__(self, p95_us: float) -> None:
        self.p95_us = p95_us
        self.success = 0.0
        self.lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            counter = Metric("nv_inference_request_success", "successes", "counter")
            counter.add_sample(
                # Triton's counters carry no _total suffix.
                "nv_inference_request_success",
                {"model": "mlp", "version": "1"},
                self.success,
            )
            # Triton (before its failure counter grew a `reason` label) exports failures
            # with the same labels as successes: a query over both must not collide.
            failure = Metric("nv_inference_request_failure", "failures", "counter")
            failure.add_sample("nv_inference_request_failure", {"model": "mlp", "version": "1"}, 0)
            summary = Metric("nv_inference_request_summary_us", "latency", "summary")
            summary.add_sample(
                "nv_inference_request_summary_us",
                {"model": "mlp", "version": "1", "quantile": "0.95"},
                self.p95_us,
            )
            summary.add_sample(
                "nv_inference_request_summary_us_count", {"model": "mlp", "version": "1"}, 1
            )
            summary.add_sample(
                "nv_inference_request_summary_us_sum", {"model": "mlp", "version": "1"}, 1
            )
        yield counter
        yield failure
        yield summary


class Pod:
    """One model-server pod's metrics endpoint, fed by a bounded background loop."""

    def __init__(self, triton_p95_us: float, arriving: float) -> None:
        self.registry = CollectorRegistry()
        labels = ["model", "version", "tier"]
        # The server's last-second arrival rate, split over two versions.
        arrival_rate = Gauge(
            "kinfer_inference_arrival_rate", "arriving", labels, registry=self.registry
        )
        arrival_rate.labels("mlp", "1", "fp32").set(arriving * 0.75)
        arrival_rate.labels("mlp", "2", "int8").set(arriving * 0.25)
        self.requests = Counter(
            "kinfer_inference_requests", "requests", labels, registry=self.registry
        )
        self.duration = Histogram(
            "kinfer_inference_request_duration_seconds",
            "latency",
            labels,
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
        )
        self.triton = TritonSummary(triton_p95_us)
        self.registry.register(self.triton)
        self.port = free_port()
        self.server, self.thread = start_http_server(
            self.port, addr="127.0.0.1", registry=self.registry
        )
        self.stop = threading.Event()
        self.loop = threading.Thread(target=self._feed, daemon=True)
        self.loop.start()

    def _feed(self) -> None:
        # Every tick: 3 requests at version 1 (40 ms, bucket 25-50 ms) and 1 at version 2
        # (200 ms, bucket 100-250 ms); bounded by the stop event and a hard cap of ticks.
        for _ in range(20_000):
            if self.stop.wait(0.05):
                return
            for _ in range(3):
                self.requests.labels("mlp", "1", "fp32").inc()
                self.duration.labels("mlp", "1", "fp32").observe(0.04)
            self.requests.labels("mlp", "2", "int8").inc()
            self.duration.labels("mlp", "2", "int8").observe(0.2)
            with self.triton.lock:
                self.triton.success += 4

    def close(self) -> None:
        self.stop.set()
        self.loop.join(timeout=10)
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def pods() -> Iterator[list[Pod]]:
    started = [Pod(30_000.0, arriving=80.0), Pod(50_000.0, arriving=40.0)]
    yield started
    for pod in started:
        pod.close()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory, pods) -> Iterator[str]:
    root = tmp_path_factory.mktemp("prometheus")
    targets = "\n".join(
        f"""      - targets: ["127.0.0.1:{pod.port}"]
        labels: {{namespace: team-a, inferenceservice: mlp, pod: mlp-{i}}}"""
        for i, pod in enumerate(pods)
    )
    config = root / "prometheus.yml"
    config.write_text(
        f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: kinfer
    static_configs:
{targets}
  # The first pod's endpoint once more, as the only pod of a second service.
  - job_name: other
    static_configs:
      - targets: ["127.0.0.1:{pods[0].port}"]
        labels: {{namespace: team-b, inferenceservice: other, pod: other-0}}
"""
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (root / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={config}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"prometheus did not become ready: {(root / 'prometheus.log').read_text()}"
                )
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def wait_for(read, ready, what: str):
    """Re-read until `ready(observation)`, bounded; returns the observation."""
    deadline = time.monotonic() + DEADLINE_S
    observation = read()
    while not ready(observation):
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not appear within {DEADLINE_S} s: {observation}")
        time.sleep(0.5)
        observation = read()
    return observation


def test_onnxruntime_qps_p95_versions_and_completeness(prometheus):
    reader = PrometheusReader(PrometheusSettings(url=prometheus), recent_window_s=5)

    def read():
        return reader.observe("team-a", "mlp", "onnxruntime", window_s=WINDOW_S)

    observation = wait_for(
        read,
        lambda o: (
            o.ok
            and o.pods_reporting == 2
            and {1, 2} <= set(o.versions)
            and all(v.latency_p95_ms is not None for v in o.versions.values())
        ),
        "both pods and versions",
    )
    assert observation.error is None
    assert observation.qps > 0
    assert observation.qps_recent is not None and observation.qps_recent > 0
    # The gauge as last scraped, summed over pods and versions.
    assert observation.qps_arriving == pytest.approx(120.0)
    # histogram_quantile interpolates inside the bucket holding the 95th percentile.
    assert observation.versions[1].latency_p95_ms == pytest.approx(25 + 0.95 * 25)
    assert observation.versions[2].latency_p95_ms == pytest.approx(100 + 0.95 * 150)
    # Three requests at version 1 for every one at version 2, scraped together.
    ratio = observation.versions[1].qps / observation.versions[2].qps
    assert ratio == pytest.approx(3, rel=0.05)
    assert observation.qps == pytest.approx(
        observation.versions[1].qps + observation.versions[2].qps, rel=1e-6
    )
    # A quarter of the requests take 200 ms: the overall p95 is in the 100-250 ms bucket.
    assert 100 < observation.latency_p95_ms <= 250
    assert 0 <= observation.newest_sample_age_s < 10


def test_triton_p95_from_per_pod_summaries(prometheus):
    def read(aggregation: str):
        reader = PrometheusReader(
            PrometheusSettings(url=prometheus, triton_p95_aggregation=aggregation),
            recent_window_s=5,
        )
        return reader.observe("team-a", "mlp", "triton", window_s=WINDOW_S)

    slowest = wait_for(
        lambda: read("max"), lambda o: o.ok and o.pods_reporting == 2, "Triton series"
    )
    assert slowest.latency_p95_ms == pytest.approx(50.0)
    assert slowest.versions[1].latency_p95_ms == pytest.approx(50.0)
    assert slowest.qps > 0
    assert slowest.qps_arriving is None, "Triton exports no arrival-rate gauge"
    # Both pods serve the same rate, so the request-weighted mean is the plain mean.
    mean = read("mean")
    assert mean.latency_p95_ms == pytest.approx(40.0, rel=0.05)


def test_the_trend_history_holds_a_point_per_scrape_not_per_read(prometheus):
    # Read faster than Prometheus scrapes (1 s here, every 5 s period against 15-30 s scrapes in
    # a cluster): rate() repeats between scrapes, and the policy keeps one point per newest
    # sample (the reader's newest_sample_age_s), so the trend sees rises, not repeats.
    reader = PrometheusReader(PrometheusSettings(url=prometheus))
    wait_for(
        lambda: reader.observe("team-a", "mlp", "onnxruntime", window_s=WINDOW_S),
        lambda o: o.ok and o.pods_reporting == 2,
        "both pods",
    )
    config = policy(min_replicas=1, max_replicas=20, target_qps_per_replica=50)
    state, reads = PolicyState(), 20
    started = time.time()
    for _ in range(reads):
        now_s = time.time()  # as the control loop takes it, before the read
        observation = reader.observe("team-a", "mlp", "onnxruntime", window_s=WINDOW_S)
        assert observation.ok and observation.newest_sample_age_s is not None
        _, state = decide(config, observation, Replicas(2, 2), state, now_s)
        time.sleep(0.02)
    elapsed_s = time.time() - started
    # Points at least SAME_SCRAPE_S apart, within the reads' span and the first sample's age.
    assert len(state.qps_history) <= elapsed_s / SAME_SCRAPE_S + 3
    times = [t for t, _ in state.qps_history]
    assert all(later - earlier >= SAME_SCRAPE_S for earlier, later in itertools.pairwise(times))


def test_one_query_answers_every_service_split_by_service(prometheus):
    reader = PrometheusReader(PrometheusSettings(url=prometheus), recent_window_s=5)
    wanted = [
        Wanted("team-a", "mlp", "onnxruntime", WINDOW_S),
        Wanted("team-b", "other", "onnxruntime", WINDOW_S),
        Wanted("team-c", "no-series", "onnxruntime", WINDOW_S),
    ]
    found = wait_for(
        lambda: reader.observe_all(wanted),
        lambda f: f[("team-a", "mlp")].pods_reporting == 2 and f[("team-b", "other")].ok,
        "both services",
    )
    sent = reader.queries_sent
    found = reader.observe_all(wanted)
    assert reader.queries_sent == sent + 1, "one query for every service of one runtime"
    mlp, other = found[("team-a", "mlp")], found[("team-b", "other")]
    assert (mlp.pods_reporting, other.pods_reporting) == (2, 1)
    # The second service is the first pod alone: its arrival gauge, not the sum of both.
    assert other.qps_arriving == pytest.approx(80.0)
    assert mlp.qps_arriving == pytest.approx(120.0)
    assert set(other.versions) == {1, 2}
    assert 0 < other.qps < mlp.qps
    assert "no series for team-c/no-series (onnxruntime)" in found[("team-c", "no-series")].error
    # Another runtime or window is its own query.
    reader.observe_all([*wanted, Wanted("team-a", "mlp", "triton", WINDOW_S)])
    assert reader.queries_sent == sent + 3


def test_services_due_in_one_period_share_its_answer(prometheus):
    reader = PrometheusReader(PrometheusSettings(url=prometheus), recent_window_s=5)
    now = [15 * 66_666.0]  # the start of a 15 s period
    reader.clock = lambda: now[0]
    first = Wanted("team-a", "mlp", "onnxruntime", WINDOW_S, period_s=15)
    late = Wanted("team-b", "other", "onnxruntime", WINDOW_S, period_s=15)
    # Both scraped (period 0: every call reads afresh).
    wait_for(
        lambda: reader.observe_all([replace(first, period_s=0), replace(late, period_s=0)]),
        lambda f: f[first.key].ok and f[late.key].ok,
        "both services",
    )
    assert reader.observe_all([first])[first.key].ok
    sent = reader.queries_sent
    now[0] += 10  # the same period, 10 s on: a service whose tick came late
    found = reader.observe_all([late])
    assert reader.queries_sent == sent, "no new query within the period"
    assert found[late.key].ok and found[late.key].pods_reporting == 1
    # Another period of the same key, or another period length, is a query of its own.
    reader.observe_all([Wanted("team-a", "mlp", "onnxruntime", WINDOW_S, period_s=30)])
    assert reader.queries_sent == sent + 1
    now[0] += 5
    reader.observe_all([first, late])
    assert reader.queries_sent == sent + 2


def test_a_failed_read_serves_its_period_too():
    reader = PrometheusReader(
        PrometheusSettings(url=f"http://127.0.0.1:{free_port()}", timeout_s=2)
    )
    reader.clock = lambda: 1_000_000.0
    wanted = [Wanted("team-a", f"s{i}", "onnxruntime", WINDOW_S, period_s=15) for i in range(5)]
    found = reader.observe_all(wanted[:2])
    found.update(reader.observe_all(wanted[2:]))
    assert reader.queries_sent == 1, "a dead Prometheus is asked once per period, not per service"
    assert all(not o.ok and "127.0.0.1" in o.error for o in found.values())


def test_unknown_service_is_an_observation_not_an_exception(prometheus):
    reader = PrometheusReader(PrometheusSettings(url=prometheus))
    observation = reader.observe("team-a", "nothing-here", "onnxruntime", window_s=WINDOW_S)
    assert not observation.ok
    assert "no series for team-a/nothing-here (onnxruntime)" in observation.error


def test_prometheus_down_is_an_observation_not_an_exception():
    url = f"http://127.0.0.1:{free_port()}"
    reader = PrometheusReader(PrometheusSettings(url=url, timeout_s=2))
    observation = reader.observe("team-a", "mlp", "onnxruntime")
    assert not observation.ok
    assert observation.error.startswith(f"Prometheus at {url}:")


def test_bearer_token_is_read_from_its_file(prometheus, tmp_path):
    # Prometheus ignores the header; the read works and the token reaches the request.
    token = tmp_path / "token"
    token.write_text("s3cr3t\n")
    reader = PrometheusReader(PrometheusSettings(url=prometheus, bearer_token_file=str(token)))
    observation = reader.observe("team-a", "mlp", "onnxruntime", window_s=WINDOW_S)
    assert observation.ok
    assert reader._client.headers == {"Authorization": "Bearer s3cr3t"}


def test_the_share_within_the_target_is_counted_at_its_bucket_for_every_service(prometheus):
    reader = PrometheusReader(PrometheusSettings(url=prometheus))
    slots = itertools.count(0, SLO_REFRESH_S)  # every call a new refresh slot
    reader.clock = lambda: float(next(slots))
    # Three requests in four take 40 ms, one 200 ms: within 50 ms, 3/4; within 250 ms, all.
    within_50 = wait_for(
        lambda: reader.within_target("team-a", "mlp", slo_bucket(50)),
        lambda share: share is not None,
        "the 50 ms share",
    )
    assert within_50 == pytest.approx(0.75, abs=0.02)
    assert reader.within_target("team-a", "mlp", slo_bucket(250)) == pytest.approx(1.0)
    assert reader.within_target("team-b", "other", slo_bucket(60)) == pytest.approx(0.75, abs=0.02)
    assert reader.within_target("team-a", "nothing-here", "0.05") is None


def test_one_slo_query_serves_every_service_until_the_next_refresh(prometheus):
    reader = PrometheusReader(PrometheusSettings(url=prometheus))
    now = [1_000_000.0]
    reader.clock = lambda: now[0]

    def next_slot_shares():
        now[0] += SLO_REFRESH_S
        sent = reader.queries_sent
        shares = [
            reader.within_target(*svc, "0.05") for svc in (("team-a", "mlp"), ("team-b", "other"))
        ]
        assert reader.queries_sent == sent + 1, "one answer for every service in its slot"
        return shares

    wait_for(next_slot_shares, lambda shares: None not in shares, "both services' shares")
    sent = reader.queries_sent
    assert reader.within_target("team-a", "mlp", "0.25") is None, "read at the next refresh"
    now[0] += SLO_REFRESH_S
    assert reader.within_target("team-a", "mlp", "0.25") == pytest.approx(1.0)
    assert reader.queries_sent == sent + 1


def test_prometheus_down_gives_no_share_not_an_exception():
    reader = PrometheusReader(PrometheusSettings(url=f"http://127.0.0.1:{free_port()}"))
    assert reader.within_target("team-a", "mlp", "0.05") is None


@pytest.fixture
def silent_prometheus() -> Iterator[str]:
    """A Prometheus address that accepts connections and never answers (one waiting out its
    query timeout, as a stopped or overloaded one does)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def at_once(calls: int, call) -> None:
    """`call` from `calls` threads released together, as the operator's ticks run."""
    barrier = threading.Barrier(calls)

    def run() -> None:
        barrier.wait()
        call()

    threads = [threading.Thread(target=run) for _ in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)


def test_ticks_at_once_send_one_slo_query_not_one_each(silent_prometheus):
    reader = PrometheusReader(PrometheusSettings(url=silent_prometheus, timeout_s=1))
    reader.clock = lambda: 1_000_000.0
    shares = []
    at_once(8, lambda: shares.append(reader.within_target("team-a", "mlp", "0.05")))
    assert shares == [None] * 8
    assert reader.queries_sent == 1, "the first tick reads; the others wait for its answer"


def test_decisions_at_once_send_one_query_per_key(silent_prometheus):
    reader = PrometheusReader(PrometheusSettings(url=silent_prometheus, timeout_s=1))
    reader.clock = lambda: 1_000_000.0
    wanted = [Wanted("team-a", "mlp", "onnxruntime", WINDOW_S, period_s=15)]
    found = []
    at_once(8, lambda: found.append(reader.observe_all(wanted)))
    assert all(not f[("team-a", "mlp")].ok for f in found)
    assert reader.queries_sent == 1
