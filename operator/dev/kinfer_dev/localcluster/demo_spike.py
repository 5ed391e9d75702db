"""The demo's load spike: bounded loopback load on the demo's InferenceService, a live progress
line, and what the demo ends with (the timeline PNG, status.slo, failed requests).

The spike is sized on this machine: 1.2x what one fp32 pod serves (its queue grows without
bound), a p95 target of 10 fp32 service times, and a QPS target that asks for `max_replicas`
pods. While the new pods make their simulated cold start, the operator steps the tier down;
once they are Ready the tier comes back (docs/tiers.md).
"""

from __future__ import annotations

import json
import math
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from kinfer.observability.plot import Marker, Timeline
from kinfer_dev.runtime import testmodels

# Big enough that compute, not HTTP, dominates a request, so the tiers differ in speed the way
# they would on a GPU (on a CPU int8 is 1.5-2x faster than fp32, fp16 no faster), and that the
# spike is few requests a second: on two cores the servers' and the load generator's own work
# per request must leave room for the model's.
HEAVY = testmodels.MLPShape(hidden=(2048, 2048, 2048))
REQUEST_BATCH = 128
OVERLOAD = 1.2  # the spike, in fp32 pods' worth of load
TARGET_SERVICE_TIMES = 10  # the p95 target, in fp32 service times
COLD_START_S = 30  # each pod's simulated image pull and model load
PROGRESS_INTERVAL_S = 2.0
# The operator measures the first tier's capacity (M/M/1, from one sample) on any window whose
# p95 is within the target. A scrape that caught the spike's first instant (a few fast
# requests, a window mostly idle) would give a capacity far below the truth, and the tier would
# stay down on the new pods. So the spike starts just after a scrape of the pods and opens
# with a burst of BURST_REQUESTS at BURST_FACTOR x its rate, whose last waits 5 p95 targets:
# the next scrape already sees the queue.
SCRAPE_MARGIN_S = 0.25
BURST_REQUESTS = 5 * TARGET_SERVICE_TIMES
BURST_FACTOR = 10
HOLD_AFTER_RETURN_S = 6.0  # the load runs on this long once the tier is back
SPIKE_LIMIT_S = 360.0
SLO_WAIT_S = 90.0


@dataclass(frozen=True)
class SpikePlan:
    """The spike and the InferenceService's targets, from one request's service times."""

    fp32_ms: float
    int8_ms: float
    rate_qps: float
    target_latency_p95_ms: float
    target_qps_per_replica: float
    max_replicas: int

    def describe(self) -> str:
        return (
            f"one request (batch {REQUEST_BATCH}) on one thread: fp32 {self.fp32_ms:.1f} ms, "
            f"int8 {self.int8_ms:.1f} ms; spike {self.rate_qps:.0f} QPS ({OVERLOAD}x one fp32 "
            f"pod), p95 target {self.target_latency_p95_ms:.0f} ms, "
            f"{self.target_qps_per_replica:.0f} QPS per replica, up to {self.max_replicas} pods"
        )


def plan_spike(fp32_ms: float, int8_ms: float, max_replicas: int = 3) -> SpikePlan:
    """Size the spike on measured service times. The QPS target asks for `max_replicas` pods
    (less than a fp32 pod each, so the tier returns on them: QPS <= Ready x target x 1.1 x
    0.9, docs/tiers.md), and int8 on one pod holds the spike."""
    rate = OVERLOAD * 1000.0 / fp32_ms
    return SpikePlan(
        fp32_ms=fp32_ms,
        int8_ms=int8_ms,
        rate_qps=round(rate, 1),
        target_latency_p95_ms=round(TARGET_SERVICE_TIMES * fp32_ms, 1),
        target_qps_per_replica=round(rate / (max_replicas - 0.5), 1),
        max_replicas=max_replicas,
    )


def service_time_ms(path: Path, runs: int = 25) -> float:
    """Single-thread time of one request, as one model-server instance runs it: the fastest of
    `runs` after the first, this machine's speed without the other work on it. Busier, a pod
    is slower: the spike overloads it more, never less."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    batch = testmodels.sample_input(REQUEST_BATCH, HEAVY)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, {testmodels.INPUT_NAME: batch})
        times.append(time.perf_counter() - started)
    return 1000 * min(times[1:])


def request_payload() -> tuple[bytes, dict[str, str]]:
    """One spike request: a full batch of the heavy MLP, binary tensors."""
    return testmodels.binary_request(REQUEST_BATCH, HEAVY)


@dataclass(frozen=True)
class Sample:
    """What one progress line shows: the status and Prometheus at one moment."""

    at_s: float  # unix seconds
    elapsed_s: float
    qps: float | None
    p95_ms: float | None
    ready: int
    desired: int
    tier: str | None


def progress_line(sample: Sample, target_ms: float | None) -> str:
    """`  42s  QPS   83.1  p95   412 ms > 114 ms target  ready 1/3  tier int8`."""
    qps = "     -" if sample.qps is None else f"{sample.qps:6.1f}"
    latency = "p95      - ms" if sample.p95_ms is None else f"p95 {sample.p95_ms:5.0f} ms"
    if target_ms is not None:
        over = sample.p95_ms is not None and sample.p95_ms > target_ms
        latency += f" {'>' if over else '<='} {target_ms:.0f} ms target"
    return (
        f"{sample.elapsed_s:4.0f}s  QPS {qps}  {latency}  "
        f"ready {sample.ready}/{sample.desired}  tier {sample.tier or '-'}"
    )


class Progress:
    """One line per sample: rewritten in place on a terminal, plain lines otherwise."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self._width = 0

    def show(self, line: str, keep: bool = False) -> None:
        """Print `line`; on a terminal it replaces the last unless that one was kept."""
        if not self.tty:
            print(line, file=self.out, flush=True)
            return
        padded = line.ljust(self._width)
        self._width = 0 if keep else len(line)
        self.out.write("\r" + padded + ("\n" if keep else ""))
        self.out.flush()

    def done(self) -> None:
        if self.tty and self._width:
            self.out.write("\n")
            self.out.flush()
            self._width = 0


@dataclass
class SpikeWatch:
    """The phases the spike must show, from the samples: a step down from the first tier, a
    scale-out, and the first tier back on more than one Ready pod."""

    first_tier: str
    stepped_down: bool = False
    scaled_out: bool = False
    returned_at_s: float | None = None
    notes: list[str] = field(default_factory=list)

    def see(self, sample: Sample) -> list[str]:
        """Update on one sample; the phases it completes, as lines to keep on screen."""
        news = []
        if sample.tier not in (None, self.first_tier) and not self.stepped_down:
            self.stepped_down = True
            news.append(f"tier stepped down: {self.first_tier} -> {sample.tier}")
        if sample.desired > 1 and not self.scaled_out:
            self.scaled_out = True
            news.append(f"scaling out: 1 -> {sample.desired} replicas")
        back = self.stepped_down and sample.tier == self.first_tier and sample.ready > 1
        if back and self.returned_at_s is None:
            self.returned_at_s = sample.elapsed_s
            news.append(f"tier back at {self.first_tier} on {sample.ready} Ready pods")
        return news

    def missing(self) -> list[str]:
        wanted = [
            (self.stepped_down, f"a step down from {self.first_tier}"),
            (self.scaled_out, "a scale-out"),
            (self.returned_at_s is not None, f"{self.first_tier} back on the new pods"),
        ]
        return [what for done, what in wanted if not done]


def slo_summary(slo: dict[str, Any] | None) -> list[str]:
    """status.slo as the demo prints it; "n/a" for what is absent."""
    slo = slo or {}

    def field_of(key: str, form: Callable[[Any], str]) -> str:
        value = slo.get(key)
        return "n/a" if value is None else form(value)

    window = field_of("windowSeconds", lambda v: f"last {int(v)} s")
    within = field_of("withinTarget", lambda v: f"{100 * v:.1f} %")
    lower = field_of("lowerTierSeconds", lambda v: f"{v:.0f} s")
    return [
        f"SLO (status.slo, {window}, observed {field_of('observedAt', str)}):",
        f"  requests within the p95 target: {within}",
        f"  time on a lower tier: {lower}",
        f"  scale-outs: {field_of('scaleOuts', str)}, "
        f"tier switches: {field_of('tierSwitches', str)}",
    ]


class DemoService:
    """The demo's InferenceService, its Ready pods and its Events, read with the kubernetes
    client (a kubectl process a second would cost the 2-core machine more than the reads)."""

    def __init__(self, kubeconfig: Path, namespace: str, name: str) -> None:
        from kubernetes import client

        from kinfer.controller.kube import load_api_client

        self.namespace, self.name = namespace, name
        self.api = load_api_client(str(kubeconfig))
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)

    def get(self) -> dict[str, Any]:
        from kinfer.api import constants as c

        return dict(
            self.custom.get_namespaced_custom_object(
                c.GROUP, c.VERSION, self.namespace, c.PLURAL, self.name
            )
        )

    def ready_urls(self) -> list[str]:
        """The HTTP base URLs of the Ready pods (loopback pod IPs on the local cluster)."""
        from kinfer.api import constants as c

        return [f"http://{pod['status']['podIP']}:{c.HTTP_PORT}" for pod in self.ready_pods()]

    def ready_pods(self) -> list[dict[str, Any]]:
        """The service's Ready pods with an IP and no deletion under way, as JSON."""
        from kinfer.api import constants as c

        pods = self.core.list_namespaced_pod(
            self.namespace, label_selector=f"{c.LABEL_ISVC}={self.name}"
        ).items
        return [
            self.api.sanitize_for_serialization(pod)
            for pod in pods
            if pod.status.pod_ip and not pod.metadata.deletion_timestamp and _ready(pod)
        ]

    def events(self) -> list[dict[str, Any]]:
        listed = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={self.name}"
        )
        return list(self.api.sanitize_for_serialization(listed).get("items") or [])


def _ready(pod: Any) -> bool:
    return any(
        cond.type == "Ready" and cond.status == "True" for cond in pod.status.conditions or []
    )


@dataclass
class SpikeResult:
    samples: list[Sample]
    watch: SpikeWatch
    sent: int
    ok: int
    failed: int
    errors: list[str]
    started_s: float
    ended_s: float


def run_spike(
    service: DemoService,
    prometheus_url: str | None,
    plan: SpikePlan,
    model: str,
    first_tier: str,
    out: TextIO = sys.stdout,
    limit_s: float = SPIKE_LIMIT_S,
) -> SpikeResult:
    """Drive the spike until the tier has come back (and HOLD_AFTER_RETURN_S more) or
    `limit_s`, printing a progress line every PROGRESS_INTERVAL_S."""
    from kinfer_dev.runtime.loadgen import LoadGenerator

    body, headers = request_payload()
    budget_s = limit_s + 60
    load = LoadGenerator(
        service.ready_urls,
        model,
        body,
        headers=headers,
        rate_qps=plan.rate_qps * BURST_FACTOR,
        max_duration_s=budget_s,
        max_requests=int(plan.rate_qps * budget_s) + BURST_REQUESTS,
        timeout_s=60,
        refresh_s=PROGRESS_INTERVAL_S,
    )
    sampler = _Sampler(service, prometheus_url)
    watch, progress, samples = SpikeWatch(first_tier), Progress(out), []
    scrapes = (
        scrape_times_s(prometheus_url, service.namespace, service.name) if prometheus_url else []
    )
    time.sleep(start_delay_s(scrapes, time.time()))
    phase = f"{SCRAPE_MARGIN_S} s after a scrape of its pods" if len(scrapes) > 1 else "now"
    print(f"the spike starts {phase}, with a burst of {BURST_REQUESTS} requests", file=out)
    started_s, started = time.time(), time.monotonic()
    with load:
        _burst(load, plan.rate_qps)
        while True:
            sample = sampler.sample(time.monotonic() - started)
            samples.append(sample)
            news = watch.see(sample)
            progress.show(progress_line(sample, plan.target_latency_p95_ms), keep=bool(news))
            for line in news:
                progress.show(f"      -> {line}", keep=True)
            back = watch.returned_at_s
            if back is not None and sample.elapsed_s >= back + HOLD_AFTER_RETURN_S:
                break
            if sample.elapsed_s >= limit_s:
                break
            next_at = started + len(samples) * PROGRESS_INTERVAL_S
            time.sleep(max(0.0, next_at - time.monotonic()))
    progress.done()
    result = load.result
    return SpikeResult(
        samples, watch, result.sent, result.ok, result.failed, list(result.errors),
        started_s, time.time(),
    )  # fmt: skip


def start_delay_s(scrapes_s: list[float], now_s: float, margin_s: float = SCRAPE_MARGIN_S) -> float:
    """How long to wait for `margin_s` after a scrape, from the times of the last scrapes (two
    or more give the phase and the interval); 0 without them."""
    times = sorted(scrapes_s)
    if len(times) < 2 or times[-1] - times[-2] <= 0:
        return 0.0
    interval = times[-1] - times[-2]
    start = times[-1] + margin_s
    if start < now_s:
        start += math.ceil((now_s - start) / interval) * interval
    return start - now_s


def scrape_times_s(prometheus_url: str, namespace: str, name: str) -> list[float]:
    """When Prometheus last scraped the service's pods (its `up` samples of the last 10 s);
    empty when it cannot say."""
    from kinfer.autoscale.metrics import selector

    query = urllib.parse.urlencode({"query": f"up{{{selector(namespace, name)}}}[10s]"})
    try:
        with urllib.request.urlopen(f"{prometheus_url}/api/v1/query?{query}", timeout=5) as answer:
            series = json.load(answer)["data"]["result"]
    except (OSError, ValueError, KeyError):
        return []
    return [float(t) for t, _ in series[0]["values"]] if series else []


def _burst(load: Any, rate_qps: float) -> None:
    """Let the generator send BURST_REQUESTS at its burst rate, then set the spike's rate
    (bounded: the burst lasts at most as long as they take at the spike's rate)."""
    deadline = time.monotonic() + BURST_REQUESTS / rate_qps
    while load.result.sent < BURST_REQUESTS and time.monotonic() < deadline:
        time.sleep(0.01)
    load.set_rate(rate_qps)


class _Sampler:
    """One Sample from the InferenceService's status and, when there is one, Prometheus (QPS and
    p95 over the service's metrics window, the operator's own query)."""

    def __init__(self, service: DemoService, prometheus_url: str | None) -> None:
        from kinfer.autoscale.metrics import PrometheusReader, PrometheusSettings

        self.service = service
        self.reader = (
            PrometheusReader(PrometheusSettings(url=prometheus_url)) if prometheus_url else None
        )

    def sample(self, elapsed_s: float) -> Sample:
        at_s = time.time()
        body = self.service.get()
        spec, status = body.get("spec") or {}, body.get("status") or {}
        last = (status.get("autoscaling") or {}).get("lastMetrics") or {}
        qps, p95 = last.get("qps"), last.get("latencyP95Ms")
        if self.reader is not None:
            window_s = int((spec.get("scaling") or {}).get("metricsWindowSeconds") or 60)
            seen = self.reader.observe(
                self.service.namespace, self.service.name, "onnxruntime", window_s
            )
            if seen.ok:
                qps, p95 = seen.qps, seen.latency_p95_ms
        return Sample(
            at_s=at_s,
            elapsed_s=elapsed_s,
            qps=qps,
            p95_ms=p95,
            ready=int(status.get("readyReplicas") or 0),
            desired=int(spec.get("replicas") or 0),
            tier=status.get("activeTier"),
        )


def timeline_of_samples(
    title: str,
    samples: list[Sample],
    markers: list[Marker],
    target_ms: float,
    tiers: list[str],
    start_s: float,
    end_s: float,
) -> Timeline:
    """The demo's samples and the service's Events as a plot Timeline."""
    return Timeline(
        title=title,
        start_s=start_s,
        end_s=end_s,
        qps=[(s.at_s, s.qps) for s in samples if s.qps is not None],
        p95_ms=[(s.at_s, s.p95_ms) for s in samples if s.p95_ms is not None],
        target_ms=[(start_s, target_ms), (end_s, target_ms)],
        ready_replicas=[(s.at_s, float(s.ready)) for s in samples],
        desired_replicas=[(s.at_s, float(s.desired)) for s in samples],
        tier=[(s.at_s, s.tier) for s in samples if s.tier],
        tiers=tiers,
        markers=[m for m in markers if start_s <= m.at_s <= end_s],
    )


def wait_for_slo(service: DemoService, timeout_s: float = SLO_WAIT_S) -> dict[str, Any] | None:
    """status.slo once it counts the spike (a scale-out, the step down and back), or what is
    there after `timeout_s` (the operator writes it with its status, not at once)."""
    deadline = time.monotonic() + timeout_s
    slo = None
    while True:
        slo = (service.get().get("status") or {}).get("slo")
        if slo and (slo.get("scaleOuts") or 0) >= 1 and (slo.get("tierSwitches") or 0) >= 2:
            return dict(slo)
        if time.monotonic() >= deadline:
            return dict(slo) if slo else None
        time.sleep(2.0)
