"""The metrics simulator: per-pod model-server metrics for simulated pods, in one scrape target.

In simulated-pods mode (`kinfer cluster up --simulated-pods`) kinfer's pods run nothing, so no
server exports the metrics the autoscaler reads. This process watches the Ready pods labelled
kinfer.dev/inferenceservice and the InferenceServices, gives each service the load of its
kinfer.dev/simulated-load annotation (simulated_load.py: profiles, split evenly across the
Ready pods, M/M/1 latency per pod) and serves, on 127.0.0.1, what each pod's kinfer-ort-server
would: kinfer_inference_requests_total, the kinfer_inference_request_duration_seconds histogram
(the server's buckets) and the kinfer_inference_arrival_rate gauge, labelled model, version and
tier, plus the namespace, inferenceservice, pod and runtime labels the shipped scrape config
would add. Prometheus scrapes it once per interval (honor_labels), not once per pod.

Only onnxruntime pods get series: Triton exports other names (nv_inference_*), which the
simulator does not imitate. Counters are floats (expected counts, not sampled requests): rate()
and histogram_quantile() read them as they read a server's.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kinfer.autoscale.metrics import SERVER_LATENCY_BUCKETS_S
from kinfer_dev.localcluster.config import (
    ANNOTATION_SIMULATED_CAPACITY_QPS,
    ANNOTATION_SIMULATED_LOAD,
)
from kinfer_dev.localcluster.podplan import LABEL_ISVC, LABEL_RUNTIME
from kinfer_dev.localcluster.simulated_load import (
    DEFAULT_CAPACITY_QPS,
    IDLE,
    LoadProfile,
    PodLoad,
    parse_capacity,
    parse_profile,
    split_load,
)

log = logging.getLogger("kinfer.metrics-simulator")

# kinfer-ort-server's latency buckets, as the operator knows them.
LATENCY_BUCKETS_S = SERVER_LATENCY_BUCKETS_S
SIMULATED_RUNTIME = "onnxruntime"
# The load is integrated in steps of at most this long (profiles change within a scrape).
STEP_S = 1.0
WATCH_TIMEOUT_S = 300
# A kind not installed yet (the CRD) is listed again this often.
RELIST_MISSING_KIND_S = 3.0
REQUESTS = "kinfer_inference_requests_total"
DURATION = "kinfer_inference_request_duration_seconds"
ARRIVAL = "kinfer_inference_arrival_rate"
HELP = {
    REQUESTS: ("counter", "Inference requests handled, successful or failed."),
    DURATION: ("histogram", "Server-side end-to-end latency of successful inference requests."),
    ARRIVAL: (
        "gauge",
        "Inference requests received per second over the last second (as of the scrape).",
    ),
}

Key = tuple[str, str]


@dataclass
class PodSeries:
    """One pod's counters, as its server would hold them (expected counts: floats)."""

    labels: str  # the rendered label set, without `le`
    requests: float = 0.0
    buckets: list[float] = field(default_factory=lambda: [0.0] * len(LATENCY_BUCKETS_S))
    duration_sum_s: float = 0.0
    arrival_qps: float = 0.0

    def advance(self, load: PodLoad, dt_s: float, within: list[float] | None = None) -> None:
        """dt_s seconds of serving `load`; `within`: the load's share of requests within each
        bucket bound, when the caller has it already (one computation for all of a service's
        pods)."""
        served = load.served_qps * dt_s
        if served <= 0:
            return
        if within is None:
            within = bucket_fractions(load)
        self.requests += served
        buckets = self.buckets
        for index, fraction in enumerate(within):
            buckets[index] += served * fraction
        self.duration_sum_s += served * load.latency_mean_s


def bucket_fractions(load: PodLoad) -> list[float]:
    return [load.fraction_within(bound) for bound in LATENCY_BUCKETS_S]


@dataclass
class Service:
    """What the simulator knows of one InferenceService: its load and its Ready pods."""

    profile: LoadProfile = IDLE
    capacity_qps: float = DEFAULT_CAPACITY_QPS
    model: str = ""
    tier: str = ""
    pods: dict[str, PodSeries] = field(default_factory=dict)
    advanced_s: float | None = None
    deleted: bool = False


def label_set(labels: dict[str, str]) -> str:
    return ",".join(f'{name}="{_escape(value)}"' for name, value in labels.items())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def format_bound(bound: float) -> str:
    """A bucket bound as prometheus_client writes it (Go's float formatting): 0.5, 1.0, 10.0."""
    text = repr(float(bound))
    return text if "e" not in text else f"{bound:.17g}"


def is_ready(pod: dict[str, Any]) -> bool:
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    if meta.get("deletionTimestamp") or status.get("phase") != "Running":
        return False
    return any(
        cond.get("type") == "Ready" and cond.get("status") == "True"
        for cond in status.get("conditions") or []
    )


def _service_figures(isvc: dict[str, Any]) -> tuple[LoadProfile, float, str, str]:
    """(profile, capacity, model name, tier) of an InferenceService; bad annotations: idle."""
    meta, spec = isvc.get("metadata") or {}, isvc.get("spec") or {}
    annotations = meta.get("annotations") or {}
    where = f"{meta.get('namespace')}/{meta.get('name')}"
    try:
        profile = parse_profile(annotations.get(ANNOTATION_SIMULATED_LOAD))
    except ValueError as error:
        log.warning("%s: %s; simulating idle", where, error)
        profile = IDLE
    try:
        capacity = parse_capacity(annotations.get(ANNOTATION_SIMULATED_CAPACITY_QPS))
    except ValueError as error:
        log.warning("%s: %s; simulating %g QPS", where, error, DEFAULT_CAPACITY_QPS)
        capacity = DEFAULT_CAPACITY_QPS
    model = str((spec.get("model") or {}).get("name") or meta.get("name") or "")
    tiers = (spec.get("precision") or {}).get("tiers") or []
    tier = str(tiers[0].get("name", "")) if tiers else ""
    return profile, capacity, model, tier


class Fleet:
    """Every simulated service and pod, advanced in time on demand (no I/O: tests drive it)."""

    def __init__(self) -> None:
        self.services: dict[Key, Service] = {}
        # pod (namespace, name) -> its service's key, for the pods that have series.
        self.pod_owner: dict[Key, Key] = {}

    # -- the watched objects ----------------------------------------------
    def service_event(self, event_type: str, isvc: dict[str, Any], now_s: float) -> None:
        meta = isvc.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        service = self.services.setdefault(key, Service())
        self.advance_service(service, now_s)
        if event_type == "DELETED":
            # Its pods go with it (garbage collection); until then they serve nothing.
            service.profile, service.capacity_qps = IDLE, DEFAULT_CAPACITY_QPS
            service.deleted = True
            if not service.pods:
                del self.services[key]
            return
        profile, capacity, model, tier = _service_figures(isvc)
        service.profile, service.capacity_qps, service.deleted = profile, capacity, False
        if (model, tier) != (service.model, service.tier):
            service.model, service.tier = model, tier
            service.pods = {name: self._new_series(key, name) for name in service.pods}

    def pod_event(self, event_type: str, pod: dict[str, Any], now_s: float) -> None:
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        owner = (namespace, str(labels.get(LABEL_ISVC, "")))
        simulated = (
            event_type != "DELETED"
            and bool(owner[1])
            and labels.get(LABEL_RUNTIME, SIMULATED_RUNTIME) == SIMULATED_RUNTIME
            and is_ready(pod)
        )
        previous = self.pod_owner.get((namespace, name))
        if previous is not None and (not simulated or previous != owner):
            self._drop_pod(previous, namespace, name, now_s)
        if simulated and (namespace, name) not in self.pod_owner:
            service = self.services.setdefault(owner, Service())
            self.advance_service(service, now_s)
            service.pods[name] = self._new_series(owner, name)
            self.pod_owner[(namespace, name)] = owner

    def replace_pods(self, pods: Iterable[dict[str, Any]], now_s: float) -> None:
        """A fresh list: pods not in it are gone."""
        listed = list(pods)
        keys = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in listed}
        for namespace, name in [k for k in self.pod_owner if k not in keys]:
            self._drop_pod(self.pod_owner[(namespace, name)], namespace, name, now_s)
        for pod in listed:
            self.pod_event("MODIFIED", pod, now_s)

    def replace_services(self, isvcs: Iterable[dict[str, Any]], now_s: float) -> None:
        listed = list(isvcs)
        keys = {(i["metadata"]["namespace"], i["metadata"]["name"]) for i in listed}
        for namespace, name in [k for k in self.services if k not in keys]:
            gone = {"metadata": {"namespace": namespace, "name": name}}
            self.service_event("DELETED", gone, now_s)
        for isvc in listed:
            self.service_event("MODIFIED", isvc, now_s)

    def _drop_pod(self, owner: Key, namespace: str, name: str, now_s: float) -> None:
        service = self.services.get(owner)
        if service is not None:
            self.advance_service(service, now_s)
            service.pods.pop(name, None)
            if service.deleted and not service.pods:
                del self.services[owner]
        self.pod_owner.pop((namespace, name), None)

    def _new_series(self, owner: Key, pod: str) -> PodSeries:
        service = self.services[owner]
        labels = {
            "namespace": owner[0],
            "inferenceservice": owner[1],
            "pod": pod,
            "runtime": SIMULATED_RUNTIME,
            "model": service.model or owner[1],
            "version": "1",
            "tier": service.tier,
        }
        return PodSeries(label_set(labels))

    # -- time -------------------------------------------------------------
    def advance_service(self, service: Service, now_s: float) -> None:
        """Serve the service's load on its Ready pods from its last advance until now_s."""
        start = service.advanced_s if service.advanced_s is not None else now_s
        service.advanced_s = max(start, now_s)
        pods = list(service.pods.values())
        while pods and start < now_s:
            step = min(STEP_S, now_s - start)
            arrival = split_load(service.profile.qps(start + step / 2), len(pods))
            if arrival > 0:
                load = PodLoad(arrival, service.capacity_qps)
                within = bucket_fractions(load)
                for series in pods:
                    series.advance(load, step, within)
            start += step
        arrival_now = split_load(service.profile.qps(now_s), len(pods))
        for series in pods:
            series.arrival_qps = arrival_now

    def advance(self, now_s: float) -> None:
        for service in self.services.values():
            self.advance_service(service, now_s)

    def series(self) -> list[PodSeries]:
        return [s for service in self.services.values() for s in service.pods.values()]


def exposition(pods: list[PodSeries]) -> str:
    """Prometheus' text format (0.0.4), families in the server's order."""
    lines: list[str] = []

    def header(name: str) -> None:
        kind, text = HELP[name]
        lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} {kind}")

    header(REQUESTS)
    lines.extend(f"{REQUESTS}{{{pod.labels}}} {pod.requests!r}" for pod in pods)
    header(DURATION)
    bounds = [format_bound(b) for b in LATENCY_BUCKETS_S]
    for pod in pods:
        for bound, count in zip(bounds, pod.buckets, strict=True):
            lines.append(f'{DURATION}_bucket{{{pod.labels},le="{bound}"}} {count!r}')
        lines.append(f'{DURATION}_bucket{{{pod.labels},le="+Inf"}} {pod.requests!r}')
        lines.append(f"{DURATION}_sum{{{pod.labels}}} {pod.duration_sum_s!r}")
        lines.append(f"{DURATION}_count{{{pod.labels}}} {pod.requests!r}")
    header(ARRIVAL)
    lines.extend(f"{ARRIVAL}{{{pod.labels}}} {pod.arrival_qps!r}" for pod in pods)
    return "\n".join(lines) + "\n"


# -- the process: watches and the HTTP endpoint -----------------------------
class Watch:
    """List one kind, then follow its watch (listing again only when the watch says Gone)."""

    def __init__(
        self,
        name: str,
        list_call: Callable[..., Any],
        on_list: Callable[[list[dict[str, Any]]], None],
        on_event: Callable[[str, dict[str, Any]], None],
    ) -> None:
        self.name = name
        self.list_call = list_call
        self.on_list = on_list
        self.on_event = on_event
        self.synced = threading.Event()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self._follow(self._list(), stop)
            except Exception as error:  # the API server away: list again shortly
                if getattr(error, "status", None) == 404:
                    # The kind is not there (the CRD is installed after `cluster up`): none yet.
                    self.on_list([])
                    self.synced.set()
                    stop.wait(RELIST_MISSING_KIND_S)
                    continue
                log.warning("%s watch: %s; listing again", self.name, error)
                stop.wait(2.0)

    def _list(self) -> str:
        listed = json.loads(self.list_call(_preload_content=False).data)
        self.on_list(listed.get("items") or [])
        self.synced.set()
        return str(listed["metadata"].get("resourceVersion") or "")

    def _follow(self, version: str, stop: threading.Event) -> None:
        from kubernetes.watch.watch import iter_resp_lines

        while not stop.is_set():
            response = self.list_call(
                watch=True,
                resource_version=version,
                timeout_seconds=WATCH_TIMEOUT_S,
                allow_watch_bookmarks=True,
                _preload_content=False,
            )
            try:
                for line in iter_resp_lines(response):
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        raise RuntimeError(f"watch error {obj.get('code')}: {obj.get('message')}")
                    version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                    if event.get("type") != "BOOKMARK":
                        self.on_event(str(event.get("type")), obj)
                    if stop.is_set():
                        return
            finally:
                response.close()
                response.release_conn()


class MetricsSimulator:
    """The fleet, the watches that feed it, and /metrics that advances and renders it."""

    def __init__(self, kubeconfig: Path, clock: Callable[[], float] = time.time) -> None:
        from kubernetes import client, config

        api_client = config.new_client_from_config(config_file=str(kubeconfig))
        core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
        self.fleet = Fleet()
        self.lock = threading.Lock()
        self.clock = clock
        self.stop = threading.Event()
        self.watches = [
            Watch(
                "InferenceService",
                lambda **kw: custom.list_cluster_custom_object(
                    "kinfer.dev", "v1alpha1", "inferenceservices", **kw
                ),
                self._locked(self.fleet.replace_services),
                self._locked(self.fleet.service_event),
            ),
            Watch(
                "Pod",
                lambda **kw: core.list_pod_for_all_namespaces(label_selector=LABEL_ISVC, **kw),
                self._locked(self.fleet.replace_pods),
                self._locked(self.fleet.pod_event),
            ),
        ]

    def _locked(self, update: Callable[..., None]) -> Callable[..., None]:
        def locked(*args: Any) -> None:
            with self.lock:
                update(*args, self.clock())

        return locked

    @property
    def synced(self) -> bool:
        return all(w.synced.is_set() for w in self.watches)

    def start(self) -> None:
        # InferenceServices first: a pod's series take their model name from its service.
        for watch in self.watches:
            threading.Thread(target=watch.run, args=(self.stop,), daemon=True).start()
            watch.synced.wait(60)

    def scrape(self) -> str:
        with self.lock:
            self.fleet.advance(self.clock())
            return exposition(self.fleet.series())

    def serve(self, port: int) -> ThreadingHTTPServer:
        simulator = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/metrics":
                    body, status = simulator.scrape().encode(), 200
                elif self.path == "/healthz":
                    status = 200 if simulator.synced else 503
                    body = b"ok\n" if status == 200 else b"watches not synced\n"
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
        prog="kinfer-metrics-simulator",
        description="Serve simulated model-server metrics for the local cluster's simulated pods.",
    )
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True, help="listen on 127.0.0.1:PORT")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    simulator = MetricsSimulator(args.kubeconfig)
    signal.signal(signal.SIGTERM, lambda *_: simulator.stop.set())
    signal.signal(signal.SIGINT, lambda *_: simulator.stop.set())
    server = simulator.serve(args.port)
    simulator.start()
    log.info("metrics simulator serving http://127.0.0.1:%d/metrics", args.port)
    simulator.stop.wait()
    server.shutdown()
    log.info("metrics simulator stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
