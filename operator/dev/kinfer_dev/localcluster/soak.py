"""`kinfer bench soak`: the demo's InferenceService under load spikes, over and over.

On the local cluster (real model servers, the operator as a local process), the demo's tiered,
autoscaled MLP gets cycles of load: a spike (the demo's: 1.2x what one fp32 pod serves), so
the tier steps down and pods scale out, then a quiet spell (a third of one pod's worth), so
they scale in and the tier comes back. It reports the requests that failed (must be 0), the
scale and tier Events, and the resident memory of the operator and of each model server at
the end of the first cycle and of the last: each must stay within 10 %.

    kinfer bench soak                      # 30 minutes, 5-minute cycles
    kinfer bench soak --minutes 3 --cycle-s 90 --cold-start-s 10   # CI's (e2e/test_soak.py)

The first cycle is the warm-up: what the first spike allocates (arenas, buffers) is not a
leak, so memory is compared from its end. A server counts when its pod lived through both
samples (pods of a scale-out come and go).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_MINUTES = 30.0
DEFAULT_CYCLE_S = 300.0
SPIKE_SHARE = 0.4  # of each cycle; the rest is quiet
QUIET_LOAD = 0.3  # fp32 pods' worth of load between spikes
RSS_FLAT = 0.10  # the most memory may grow from the first cycle's end to the last's
SCALE_DOWN_STABILIZATION_S = 20  # so each quiet spell scales in (the default waits 5 min)
READY_TIMEOUT_S = 600.0
PROGRESS_S = 10.0


class SoakError(RuntimeError):
    """The soak could not run (the cluster, the service); not a failed verdict."""


@dataclass(frozen=True)
class Memory:
    """One process's resident memory at the warm-up's end and at the soak's."""

    process: str
    start_mib: float
    end_mib: float

    @property
    def change(self) -> float:
        return (self.end_mib - self.start_mib) / self.start_mib if self.start_mib else 0.0

    @property
    def flat(self) -> bool:
        return self.change <= RSS_FLAT


@dataclass
class SoakResult:
    minutes: float
    cycles: int
    sent: int = 0
    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    scale_outs: int = 0
    scale_ins: int = 0
    tier_switches: int = 0
    memory: list[Memory] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.failed == 0 and bool(self.memory) and all(m.flat for m in self.memory)

    def lines(self) -> list[str]:
        out = [
            f"soak: {self.minutes:g} min, {self.cycles} cycles of spike and quiet",
            f"requests: {self.sent} sent, {self.ok} answered, {self.failed} failed",
            f"events: {self.scale_outs} scale-outs, {self.scale_ins} scale-ins, "
            f"{self.tier_switches} tier switches",
            f"memory (RSS) from the first cycle's end to the last's (at most +{RSS_FLAT:.0%}):",
        ]
        out += [
            f"  {m.process}: {m.start_mib:.0f} MiB -> {m.end_mib:.0f} MiB "
            f"({m.change:+.1%}) {'ok' if m.flat else 'GREW'}"
            for m in self.memory
        ]
        out += [f"  e.g. {error}" for error in self.errors[:3]]
        out.append(f"SOAK {'OK' if self.passed else 'FAILED'}")
        return out


def rss_mib(pid: int) -> float | None:
    """VmRSS of a live process, MiB (None: it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def compare(start: dict[str, float], end: dict[str, float]) -> list[Memory]:
    """The processes sampled both times, by name."""
    return [Memory(name, start[name], end[name]) for name in sorted(start) if name in end]


def count_events(events: list[dict[str, Any]], uid: str) -> tuple[int, int, int]:
    """(scale-outs, scale-ins, tier switches) among the operator's Events on object `uid`;
    an Event repeated is counted by its `count`."""
    from kinfer.observability.plot import MARKER_SCALE, MARKER_TIER, marker_of

    outs = ins = switches = 0
    for event in events:
        if (event.get("involvedObject") or {}).get("uid") != uid:
            continue
        marker = marker_of(event)
        times = int(event.get("count") or 1)
        if marker is None:
            continue
        if marker.kind == MARKER_TIER:
            switches += times
        elif marker.kind == MARKER_SCALE and "->" in marker.label:
            before, after = (int(side) for side in marker.label.split("->"))
            outs += times if after > before else 0
            ins += times if after < before else 0
    return outs, ins, switches


def load_at(elapsed_s: float, cycle_s: float, spike_qps: float, quiet_qps: float) -> float:
    """The offered rate at `elapsed_s`: each cycle opens with its spike."""
    return spike_qps if (elapsed_s % cycle_s) < SPIKE_SHARE * cycle_s else quiet_qps


class Soak:
    """The demo's service, its load and its processes' memory on a running local cluster."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.state_dir: Path | None = None
        self.operator_pid = 0

    def run(self) -> SoakResult:
        from kinfer_dev.localcluster import demo, demo_spike
        from kinfer_dev.localcluster.kubectl import Kubectl
        from kinfer_dev.localcluster.processes import ProcessTable

        setup = demo.prepare_cluster(_config(self.args))
        kubectl = Kubectl(setup.kubectl_binary, setup.kubeconfig)
        self.state_dir = setup.kubeconfig.parent
        processes = ProcessTable(self.state_dir)
        setup.work_dir.mkdir(parents=True, exist_ok=True)
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(demo.crd_path()))
        kubectl("wait", "--for=condition=Established", "crd/inferenceservices.kinfer.dev")
        self.operator_pid = demo.start_operator(processes, kubectl, setup).pid
        models_dir = setup.work_dir / "models"
        tiers, store = demo.serve_models(processes, models_dir, setup.work_dir)
        plan = demo.size_spike(models_dir, tiers)
        print(f"spike sized on this machine: {plan.describe()}", flush=True)
        uris = {tier: f"{store.url}/{path}" for tier, path in tiers.items()}
        isvc = demo.inference_service(
            uris, demo.first_gpu_product(kubectl), plan, self.args.cold_start_s
        )
        isvc["spec"]["scaling"]["scaleDownStabilizationSeconds"] = SCALE_DOWN_STABILIZATION_S
        demo.recreate(kubectl, isvc)
        demo.wait_ready(kubectl, READY_TIMEOUT_S)
        service = demo_spike.DemoService(setup.kubeconfig, demo.NAMESPACE, demo.NAME)
        demo.wait_first_tier(service, next(iter(tiers)))
        quiet = QUIET_LOAD * plan.rate_qps / demo_spike.OVERLOAD
        return self._cycles(service, plan.rate_qps, quiet)

    def _cycles(self, service: Any, spike_qps: float, quiet_qps: float) -> SoakResult:
        from kinfer_dev.localcluster import demo, demo_spike
        from kinfer_dev.runtime.loadgen import LoadGenerator

        args = self.args
        cycles = max(2, round(args.minutes * 60 / args.cycle_s))
        duration_s = cycles * args.cycle_s
        result = SoakResult(minutes=duration_s / 60, cycles=cycles)
        body, headers = demo_spike.request_payload()
        load = LoadGenerator(
            service.ready_urls,
            demo.MODEL,
            body,
            headers=headers,
            rate_qps=spike_qps,
            max_duration_s=duration_s + 120,
            max_requests=int(spike_qps * (duration_s + 120)),
            timeout_s=60,
            refresh_s=1.0,
        )
        print(
            f"{cycles} cycles of {args.cycle_s:.0f} s: {spike_qps:.1f} QPS for "
            f"{SPIKE_SHARE * args.cycle_s:.0f} s, then {quiet_qps:.1f} QPS",
            flush=True,
        )
        started = time.monotonic()
        per_cycle: list[dict[str, float]] = []  # memory at each cycle's end
        with load:
            while (elapsed := time.monotonic() - started) < duration_s:
                load.set_rate(load_at(elapsed, args.cycle_s, spike_qps, quiet_qps))
                if elapsed >= (len(per_cycle) + 1) * args.cycle_s:
                    per_cycle.append(self.memory(service))
                    print(f"cycle {len(per_cycle)} done: {_mib(per_cycle[-1])}", flush=True)
                _progress(elapsed, duration_s, load.result, service)
                next_at = min((len(per_cycle) + 1) * args.cycle_s, elapsed + PROGRESS_S)
                time.sleep(max(0.1, next_at - elapsed))
            per_cycle.append(self.memory(service))
            print(f"cycle {len(per_cycle)} done: {_mib(per_cycle[-1])}", flush=True)
        start_memory, end_memory = per_cycle[0], per_cycle[-1]
        result.sent, result.ok = load.result.sent, load.result.ok
        result.failed, result.errors = load.result.failed, list(load.result.errors)
        result.memory = compare(start_memory, end_memory)
        uid = service.get()["metadata"]["uid"]
        result.scale_outs, result.scale_ins, result.tier_switches = count_events(
            service.events(), uid
        )
        return result

    def memory(self, service: Any) -> dict[str, float]:
        """RSS of the operator and of each Ready pod's model server, MiB."""
        from kinfer_dev.localcluster.podplan import work_dir_for
        from kinfer_dev.localcluster.runner import SERVER_RECORD

        assert self.state_dir is not None
        found = {}
        operator = rss_mib(self.operator_pid)
        if operator is not None:
            found["operator"] = operator
        for pod in service.ready_pods():
            record = work_dir_for(self.state_dir, pod) / SERVER_RECORD
            try:
                pid = json.loads(record.read_text())["pid"]
            except (OSError, ValueError, KeyError):
                continue
            rss = rss_mib(pid)
            if rss is not None:
                found[f"server {pod['metadata']['name']}"] = rss
        return found


def _mib(memory: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.0f} MiB" for name, value in sorted(memory.items()))


def _progress(elapsed: float, duration: float, load: Any, service: Any) -> None:
    status = service.get().get("status") or {}
    print(
        f"  {elapsed:5.0f}/{duration:.0f} s: {load.sent} sent, {load.failed} failed; "
        f"tier {status.get('activeTier')}, {status.get('readyReplicas', 0)}/"
        f"{status.get('replicas', 0)} ready",
        flush=True,
    )


def _config(args: argparse.Namespace) -> Any:
    from kinfer_dev.localcluster.config import ClusterConfig

    return ClusterConfig.from_env(state_dir=args.state_dir, pod_cidr=args.pod_cidr)


def run(args: argparse.Namespace, soak: Callable[[argparse.Namespace], Soak] = Soak) -> int:
    """The soak and its verdict: 0 when nothing failed and memory stayed flat."""
    try:
        result = soak(args).run()
    except SoakError as error:
        print(f"kinfer bench soak: {error}", file=sys.stderr)
        return 2
    for line in result.lines():
        print(line, flush=True)
    print("the cluster stays up (kinfer cluster down, or make cluster-down, stops it)")
    if args.json:
        print(json.dumps({**asdict(result), "passed": result.passed}))
    return 0 if result.passed else 1


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "soak",
        help="the demo's service under repeated load spikes: 0 failed requests, flat memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--minutes", type=float, default=DEFAULT_MINUTES, help=f"({DEFAULT_MINUTES:g})"
    )
    parser.add_argument(
        "--cycle-s",
        type=float,
        default=DEFAULT_CYCLE_S,
        help=f"one spike and quiet spell ({DEFAULT_CYCLE_S:g}); at least 2 cycles run",
    )
    parser.add_argument(
        "--cold-start-s",
        type=float,
        default=30.0,
        help="each new pod's simulated image pull and model load (30, as the demo)",
    )
    parser.add_argument("--state-dir", type=Path, help="as `kinfer cluster up --state-dir`")
    parser.add_argument("--pod-cidr", help="as `kinfer cluster up --pod-cidr`")
    parser.add_argument("--json", action="store_true", help="also print the result as JSON")
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    if args.minutes <= 0 or args.cycle_s < 30:
        print("kinfer bench soak: --minutes > 0 and --cycle-s >= 30", file=sys.stderr)
        return 2
    return run(args)
