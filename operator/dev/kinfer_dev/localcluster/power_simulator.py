"""The simulated GPU power exporter: dcgm-exporter's power and energy series for the local
cluster's GPU pods, drawn from a model that follows each pod's load.

A SIMULATOR. The local cluster's GPUs are simulated (its KWOK nodes advertise nvidia.com/gpu;
the pod runner runs the model servers on the CPU), so nothing draws GPU power and
dcgm-exporter cannot run. This process stands in for it so that the operator's energy read
path (kinfer.autoscale.energy) runs end to end on the local cluster: it tests the read path
only. Its figures are a model, not a measurement; real figures come only from dcgm-exporter
on real GPUs.

Every SAMPLE_INTERVAL_S it reads, for each Running pod labelled kinfer.dev/inferenceservice
that holds nvidia.com/gpu, the request counters of the pod's own server (kinfer-ort-server's
kinfer_inference_requests_total by tier; Triton's nv_inference_request_success and _failure),
and advances each of the pod's GPUs by the model (`PowerModel`):

    power_w   = min(max_w, idle_w + sum over tiers (joules_per_request x factor(tier)
                x requests per second of that tier) / the pod's GPUs)
    energy_mJ += power_w x seconds x 1000

It serves them on 127.0.0.1 /metrics in dcgm-exporter's format (DCGM_FI_DEV_POWER_USAGE in W,
DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION in mJ; labels gpu, UUID "GPU-sim-...", device, modelName
"kinfer simulated GPU", Hostname, and the GPU's namespace, pod and container), for the local
Prometheus to scrape with honor_labels (job kinfer-power-simulator).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kinfer_dev.localcluster.config import LOOPBACK
from kinfer_dev.localcluster.metrics_simulator import Watch, label_set
from kinfer_dev.localcluster.podplan import DEFAULT_PORTS, LABEL_ISVC

log = logging.getLogger("kinfer.power-simulator")

GPU_RESOURCE = "nvidia.com/gpu"
MODEL_NAME = "kinfer simulated GPU"
POWER = "DCGM_FI_DEV_POWER_USAGE"
ENERGY = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
SIMULATED = "kinfer simulated GPU power exporter, a model (not a measurement)"
HELP = {
    POWER: ("gauge", f"Power draw (in W). {SIMULATED}."),
    ENERGY: ("counter", f"Total energy consumption since boot (in mJ). {SIMULATED}."),
}
# The model's defaults: a GPU of about an A100's range (idle 50 W, 400 W board limit) spending
# 2 J on a full-precision request; lower precision spends less per request.
DEFAULT_IDLE_W = 50.0
DEFAULT_JOULES_PER_REQUEST = 2.0
DEFAULT_MAX_W = 400.0
DEFAULT_TIER_FACTORS = {"fp32": 1.0, "fp16": 0.55, "int8": 0.35}
# A tier the model does not know (no tiers, a custom name, Triton's series) counts as fp32.
UNKNOWN_TIER_FACTOR = 1.0
SAMPLE_INTERVAL_S = 1.0
READ_TIMEOUT_S = 2.0
# Without a `_total` suffix: the text parser reads every counter's samples as name_total.
REQUEST_COUNTERS = (
    "kinfer_inference_requests",
    "nv_inference_request_success",
    "nv_inference_request_failure",
)

Key = tuple[str, str]


@dataclass(frozen=True)
class PowerModel:
    """How a simulated GPU's power follows its pod's load (the defaults above)."""

    idle_w: float = DEFAULT_IDLE_W
    joules_per_request: float = DEFAULT_JOULES_PER_REQUEST
    max_w: float = DEFAULT_MAX_W
    tier_factors: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_TIER_FACTORS))

    def __post_init__(self) -> None:
        if not 0 <= self.idle_w <= self.max_w:
            raise ValueError(f"idle {self.idle_w} W: must be within 0 and max {self.max_w} W")
        if self.joules_per_request < 0:
            raise ValueError(f"joules per request {self.joules_per_request}: must be >= 0")

    def factor(self, tier: str) -> float:
        return self.tier_factors.get(tier, UNKNOWN_TIER_FACTOR)

    def joules_per_request_of(self, tier: str) -> float:
        return self.joules_per_request * self.factor(tier)

    def gpu_power_w(self, rates_qps: Mapping[str, float], gpus: int = 1) -> float:
        """One of the pod's `gpus` GPUs while the pod serves `rates_qps` (requests per second
        by tier): idle plus its share of the requests' energy per second, capped at max_w."""
        load_w = sum(self.joules_per_request_of(t) * max(q, 0.0) for t, q in rates_qps.items())
        return min(self.max_w, self.idle_w + load_w / max(gpus, 1))


def rates(
    previous: Mapping[str, float], counts: Mapping[str, float], dt_s: float
) -> dict[str, float]:
    """Requests per second by tier between two readings of the counters (a counter that went
    down was reset: its whole new count is this interval's)."""
    found = {}
    for tier, count in counts.items():
        before = previous.get(tier, 0.0)
        served = count - before if count >= before else count
        found[tier] = served / dt_s if dt_s > 0 else 0.0
    return found


@dataclass
class GpuPod:
    """One pod holding simulated GPUs, and the model's state of each of them."""

    namespace: str
    name: str
    uid: str
    container: str
    node: str
    gpus: int
    metrics_url: str
    counts: dict[str, float] | None = None
    sampled_s: float | None = None
    power_w: float = 0.0
    energy_mj: float = 0.0

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    def advance(self, counts: Mapping[str, float], now_s: float, model: PowerModel) -> None:
        """Integrate each GPU's power from the last reading to `now_s` (`counts`: the server's
        request counters by tier now). The first reading only starts the clock, at idle."""
        if self.sampled_s is None or self.counts is None:
            self.counts, self.sampled_s, self.power_w = dict(counts), now_s, model.idle_w
            return
        dt_s = now_s - self.sampled_s
        if dt_s <= 0:
            return
        self.power_w = model.gpu_power_w(rates(self.counts, counts, dt_s), self.gpus)
        self.energy_mj += self.power_w * dt_s * 1000.0
        self.counts, self.sampled_s = dict(counts), now_s

    def gpu_labels(self, index: int) -> dict[str, str]:
        return {
            "gpu": str(index),
            "UUID": f"GPU-sim-{self.uid[:8] or self.name}-{index}",
            "device": f"nvidia{index}",
            "modelName": MODEL_NAME,
            "Hostname": self.node,
            "container": self.container,
            "namespace": self.namespace,
            "pod": self.name,
        }


def gpu_pod(pod: Mapping[str, Any]) -> GpuPod | None:
    """The GpuPod of a Running pod with a loopback IP whose container holds nvidia.com/gpu."""
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    if meta.get("deletionTimestamp") or status.get("phase") != "Running":
        return None
    pod_ip = status.get("podIP") or ""
    try:
        if ipaddress.ip_address(pod_ip) not in LOOPBACK:
            return None  # network safety: only this machine's loopback is ever dialled
    except ValueError:
        return None
    for container in spec.get("containers") or []:
        limits = (container.get("resources") or {}).get("limits") or {}
        if _gpus(limits) > 0:
            annotations = meta.get("annotations") or {}
            port = annotations.get("prometheus.io/port") or _metrics_port(container)
            path = annotations.get("prometheus.io/path") or "/metrics"
            return GpuPod(
                namespace=str(meta.get("namespace")),
                name=str(meta.get("name")),
                uid=str(meta.get("uid") or ""),
                container=str(container.get("name") or ""),
                node=str(spec.get("nodeName") or ""),
                gpus=_gpus(limits),
                metrics_url=f"http://{pod_ip}:{port}{path}",
            )
    return None


def _gpus(limits: Mapping[str, Any]) -> int:
    try:
        return int(str(limits.get(GPU_RESOURCE, "0")))
    except ValueError:
        return 0


def _metrics_port(container: Mapping[str, Any]) -> int:
    for port in container.get("ports") or []:
        if port.get("name") == "metrics":
            return int(port["containerPort"])
    return DEFAULT_PORTS["metrics"]


def request_counts(text: str) -> dict[str, float]:
    """A server's request counters by tier, from its /metrics text ("" for series without a
    tier: Triton's, or a service without tiers)."""
    from prometheus_client.parser import text_string_to_metric_families

    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.removesuffix("_total") in REQUEST_COUNTERS:
                tier = sample.labels.get("tier", "")
                counts[tier] = counts.get(tier, 0.0) + float(sample.value)
    return counts


def exposition(pods: Iterable[GpuPod]) -> str:
    """dcgm-exporter's text format: one series per GPU of each pod."""
    pods = sorted(pods, key=lambda p: p.key)
    lines: list[str] = []
    for name, value_of in ((POWER, _power), (ENERGY, _energy)):
        kind, text = HELP[name]
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for pod in pods:
            for index in range(pod.gpus):
                lines.append(f"{name}{{{label_set(pod.gpu_labels(index))}}} {value_of(pod)!r}")
    return "\n".join(lines) + "\n"


def _power(pod: GpuPod) -> float:
    return round(pod.power_w, 3)


def _energy(pod: GpuPod) -> float:
    # dcgm-exporter reports whole millijoules.
    return float(int(pod.energy_mj))


# -- the process: the pod watch, the sampler and the HTTP endpoint -----------------------------
class PowerSimulator:
    """The GPU pods (from a pod watch), sampled on a timer, rendered on /metrics."""

    def __init__(
        self,
        kubeconfig: Path,
        model: PowerModel | None = None,
        interval_s: float = SAMPLE_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from kubernetes import client, config

        core = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
        self.model = model or PowerModel()
        self.interval_s = interval_s
        self.clock = clock
        self.pods: dict[Key, GpuPod] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.watch = Watch(
            "Pod",
            lambda **kw: core.list_pod_for_all_namespaces(label_selector=LABEL_ISVC, **kw),
            self.replace_pods,
            self.pod_event,
        )

    # -- pods ---------------------------------------------------------------
    def replace_pods(self, pods: list[dict[str, Any]]) -> None:
        with self.lock:
            listed = {p.key: p for p in filter(None, map(gpu_pod, pods))}
            self.pods = {k: self.pods.get(k, new) for k, new in listed.items()}

    def pod_event(self, event_type: str, pod: dict[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        found = gpu_pod(pod) if event_type != "DELETED" else None
        with self.lock:
            if found is None:
                self.pods.pop(key, None)
            elif key not in self.pods or self.pods[key].metrics_url != found.metrics_url:
                self.pods[key] = found

    # -- time ---------------------------------------------------------------
    def sample(self) -> None:
        """Read every GPU pod's counters once and advance its GPUs; a pod whose server does
        not answer is not advanced (its next reading covers the whole interval)."""
        with self.lock:
            pods = list(self.pods.values())
        for pod in pods:
            try:
                with urllib.request.urlopen(pod.metrics_url, timeout=READ_TIMEOUT_S) as response:
                    counts = request_counts(response.read().decode())
            except (OSError, ValueError) as error:
                log.debug("%s/%s: %s", pod.namespace, pod.name, error)
                continue
            with self.lock:
                if self.pods.get(pod.key) is pod:
                    pod.advance(counts, self.clock(), self.model)

    def run_sampler(self) -> None:
        while not self.stop.wait(self.interval_s):
            try:
                self.sample()
            except Exception as error:  # one bad reading must not stop the exporter
                log.warning("sampling the GPU pods: %s", error)

    def scrape(self) -> str:
        with self.lock:
            return exposition(list(self.pods.values()))

    def start(self) -> None:
        threading.Thread(target=self.watch.run, args=(self.stop,), daemon=True).start()
        threading.Thread(target=self.run_sampler, daemon=True).start()

    def serve(self, port: int) -> ThreadingHTTPServer:
        simulator = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/metrics":
                    body, status = simulator.scrape().encode(), 200
                elif self.path == "/healthz":
                    status = 200 if simulator.watch.synced.is_set() else 503
                    body = b"ok\n" if status == 200 else b"pod watch not synced\n"
                else:
                    body, status = b"not found\n", 404
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # one line per scrape would be noise

        # Loopback only: the scrape comes from the local Prometheus.
        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kinfer-power-simulator",
        description="The simulated GPU power exporter: dcgm-exporter's power and energy series "
        "for the local cluster's GPU pods, from a model of their load (not a measurement).",
    )
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True, help="listen on 127.0.0.1:PORT")
    parser.add_argument("--interval-s", type=float, default=SAMPLE_INTERVAL_S)
    parser.add_argument("--idle-w", type=float, default=DEFAULT_IDLE_W)
    parser.add_argument("--joules-per-request", type=float, default=DEFAULT_JOULES_PER_REQUEST)
    parser.add_argument("--max-w", type=float, default=DEFAULT_MAX_W)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    model = PowerModel(args.idle_w, args.joules_per_request, args.max_w)
    simulator = PowerSimulator(args.kubeconfig, model, args.interval_s)
    signal.signal(signal.SIGTERM, lambda *_: simulator.stop.set())
    signal.signal(signal.SIGINT, lambda *_: simulator.stop.set())
    server = simulator.serve(args.port)
    simulator.start()
    log.info(
        "simulated GPU power exporter (a model, not a measurement) serving"
        " http://127.0.0.1:%d/metrics: idle %g W, %g J per fp32 request, max %g W",
        args.port,
        model.idle_w,
        model.joules_per_request,
        model.max_w,
    )
    simulator.stop.wait()
    server.shutdown()
    log.info("simulated GPU power exporter stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
