"""Chaos: a seeded random schedule of spec changes interleaved with faults; everything converges.

Operations (create, spec updates, kubectl scale, pin/unpin a tier, delete, recreate under the
same name) on a few small InferenceServices, interleaved with faults: SIGKILL of the operator
(restarted some operations later), restarts of the kube-apiserver and of Prometheus, and
kills of model servers, some right after a tier switch was asked for. At checkpoints and at
the end every invariant of `problems()` must hold within a generous bound; then a tier switch
under load has zero failed requests and its Event. See docs/reliability.md.

KINFER_CHAOS_SEED replays a schedule (the seed is printed); KINFER_CHAOS_OPERATIONS and
KINFER_CHAOS_SERVICES size it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from e2e.harness import (
    ISVC_LABEL,
    Cluster,
    Models,
    Operator,
    ReadyPodURLs,
    WaitTimeout,
    condition_of,
    infer_body,
    pod_endpoint,
    runnable_here,
    wait_for,
)
from kinfer.api.model import checked
from kinfer.config import RenderOptions
from kinfer.controller.kube import matches
from kinfer.render import render
from kinfer.render.deployment import effective_replicas
from kinfer.runtime.switch import active_version
from kinfer_dev.localcluster.processes import ProcessTable
from kinfer_dev.runtime.loadgen import LoadGenerator

ENV_SEED = "KINFER_CHAOS_SEED"
ENV_OPERATIONS = "KINFER_CHAOS_OPERATIONS"
ENV_SERVICES = "KINFER_CHAOS_SERVICES"
DEFAULT_OPERATIONS = 100
# On another cluster (kind: real containers, a pod start takes longer) make e2e-kind runs fewer.
DEFAULT_OPERATIONS_ELSEWHERE = 30
DEFAULT_SERVICES = 3
CHECKPOINTS = 4  # besides the one at the end
# Generous: pods start as host processes on two busy cores, and an API server restart
# takes tens of seconds there.
CONVERGE_TIMEOUT_S = 600
TIERS = ("fp32", "fp16", "int8")
OWNED_KINDS = "deployments,services,configmaps"

# Operations on one InferenceService, by weight (an absent one is always created).
OPERATION_WEIGHTS = {
    "resources": 2,  # a new pod template: a rollout
    "scale": 4,  # kubectl scale (the scale subresource)
    "scaling": 2,  # autoscaling on (a QPS target, bounds) or off
    "pin": 4,  # spec.precision.pinned: a switch in place
    "unpin": 2,
    "delete": 2,
    "recreate": 1,  # delete, wait until gone, create under the same name
}
# Faults, by weight; one follows an operation with FAULT_PROBABILITY.
FAULT_PROBABILITY = 0.2
FAULT_WEIGHTS = {
    "kill-operator": 4,
    "kill-model-server": 3,
    "kill-model-server-in-switch": 2,
    "restart-prometheus": 1,
    "restart-apiserver": 1,
}
# The local cluster's processes only: on another cluster they are skipped, with this reason.
LOCAL_ONLY_FAULTS = {
    # On kind, e2e/kind/run.sh reaches Prometheus through one port-forward to its pod: a
    # deleted pod would end it for every test after this one.
    "restart-prometheus": "restarts the local cluster's Prometheus process",
    "restart-apiserver": "restarts the local cluster's kube-apiserver process (etcd stays)",
}
# An operator killed by a fault comes back after this many operations (0-3, seeded).
MAX_OPERATOR_DOWN_OPERATIONS = 3


@dataclass
class Chaos:
    """The schedule's state: what ran (the log printed when a check fails), and the counts."""

    cluster: Cluster
    operator: Operator
    models: Models
    namespace: str
    rng: random.Random
    names: list[str]
    local_processes: bool
    seed: int
    log: list[str] = field(default_factory=list)
    operations: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    converge_s: list[float] = field(default_factory=list)
    operator_back_after: int | None = None
    started: float = field(default_factory=time.monotonic)

    def note(self, what: str) -> None:
        self.log.append(f"{time.monotonic() - self.started:7.1f}s {what}")
        print(f"chaos: {self.log[-1]}", flush=True)

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        return self.cluster.kubectl(*args, "-n", self.namespace, stdin=stdin).stdout

    def live(self, name: str) -> dict[str, Any] | None:
        found = self.cluster.items("kisvc", "-n", self.namespace)
        return next((o for o in found if o["metadata"]["name"] == name), None)

    def fault_weights(self) -> dict[str, int]:
        if self.local_processes:
            return FAULT_WEIGHTS
        return {k: w for k, w in FAULT_WEIGHTS.items() if k not in LOCAL_ONLY_FAULTS}


def new_service(chaos: Chaos, name: str) -> dict[str, Any]:
    isvc = {
        "apiVersion": "kinfer.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": chaos.namespace},
        "spec": {
            "runtime": "onnxruntime",
            "model": {"name": "mlp"},
            "precision": {
                "tiers": [
                    {"name": t, "storageUri": chaos.models.uri(chaos.models.tiers[t])}
                    for t in TIERS
                ],
                "dwellSeconds": 5,
            },
            "resources": {"cpu": "100m", "memory": "256Mi"},
            "replicas": chaos.rng.choice((0, 1, 1)),
        },
    }
    return runnable_here(chaos.cluster, isvc)


def patch(chaos: Chaos, name: str, spec: dict[str, Any]) -> None:
    body = json.dumps({"spec": spec})
    chaos.kubectl("patch", f"kisvc/{name}", "--type=merge", "-p", body)


# -- operations: each takes the schedule and a name that exists, and says what it did ------


def op_resources(chaos: Chaos, name: str) -> str:
    cpu, memory = chaos.rng.choice((("100m", "256Mi"), ("150m", "256Mi"), ("100m", "320Mi")))
    patch(chaos, name, {"resources": {"cpu": cpu, "memory": memory}})
    return f"resources cpu={cpu} memory={memory}"


def op_scale(chaos: Chaos, name: str) -> str:
    replicas = chaos.rng.choice((0, 1, 1, 2))
    chaos.kubectl("scale", f"kisvc/{name}", f"--replicas={replicas}")
    return f"kubectl scale --replicas={replicas}"


def op_scaling(chaos: Chaos, name: str) -> str:
    if chaos.rng.random() < 0.5:
        patch(chaos, name, {"scaling": None})
        return "autoscaling off"
    low = chaos.rng.choice((0, 1))
    scaling = {
        "minReplicas": low,
        "maxReplicas": max(1, low + chaos.rng.choice((0, 1))),
        "targetQPSPerReplica": 50,
        "periodSeconds": 5,
        "scaleDownStabilizationSeconds": 10,  # no load: a checkpoint sees the scale-in soon
    }
    patch(chaos, name, {"scaling": scaling})
    return f"autoscaling {scaling}"


def op_pin(chaos: Chaos, name: str) -> str:
    tier = chaos.rng.choice(TIERS)
    patch(chaos, name, {"precision": {"pinned": tier}})
    return f"pin {tier}"


def op_unpin(chaos: Chaos, name: str) -> str:
    patch(chaos, name, {"precision": {"pinned": None}})
    return "unpin"


def op_delete(chaos: Chaos, name: str) -> str:
    chaos.kubectl("delete", f"kisvc/{name}", "--wait=false")
    return "delete"


def op_recreate(chaos: Chaos, name: str) -> str:
    chaos.kubectl("delete", f"kisvc/{name}", "--wait=false")
    wait_for(f"{name} gone", lambda: chaos.live(name) is None, CONVERGE_TIMEOUT_S)
    op_create(chaos, name)
    return "recreate"


def op_create(chaos: Chaos, name: str) -> str:
    isvc = new_service(chaos, name)
    chaos.kubectl("create", "-f", "-", stdin=json.dumps(isvc))
    return f"create replicas={isvc['spec']['replicas']}"


OPERATIONS: dict[str, Callable[[Chaos, str], str]] = {
    "resources": op_resources,
    "scale": op_scale,
    "scaling": op_scaling,
    "pin": op_pin,
    "unpin": op_unpin,
    "delete": op_delete,
    "recreate": op_recreate,
}


# -- faults ------------------------------------------------------------------------------


def model_server_pids(chaos: Chaos, name: str | None = None) -> list[tuple[str, int]]:
    """(pod, PID) of the pod runner's live model servers in the namespace (of `name`)."""
    from kinfer_dev.localcluster.processes import ProcessRecord, is_alive
    from kinfer_dev.localcluster.runner import SERVER_RECORD

    assert chaos.cluster.state_dir is not None
    found = []
    for path in sorted((chaos.cluster.state_dir / "pods").glob(f"*/{SERVER_RECORD}")):
        try:
            record = ProcessRecord(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        namespace, _, pod = record.name.partition("/")
        if namespace != chaos.namespace or (name and not pod.startswith(f"{name}-")):
            continue
        if is_alive(record):
            found.append((record.name, record.pid))
    return found


def serving(chaos: Chaos) -> list[str]:
    """The services that keep at least one pod (autoscaling cannot take them to zero)."""
    names = []
    for name in chaos.names:
        obj = chaos.live(name)
        errors, parsed = checked(obj) if obj else ([], None)
        if obj is None or obj["metadata"].get("deletionTimestamp") or errors or parsed is None:
            continue
        scaling = parsed.spec.scaling
        if effective_replicas(parsed)[0] > 0 and (not scaling.enabled or scaling.min_replicas):
            names.append(name)
    return names


def running_victim(chaos: Chaos) -> str | None:
    """A service that keeps a pod, once that pod's server runs (bounded wait; None: none)."""
    candidates = serving(chaos)
    if not candidates:
        return None
    name = chaos.rng.choice(candidates)
    if not chaos.local_processes:
        return name
    try:
        wait_for(f"a model server of {name}", lambda: model_server_pids(chaos, name), 180)
    except WaitTimeout:
        return None
    return name


def kill_model_server(chaos: Chaos, name: str) -> str:
    """Locally SIGKILL one of its server processes (the pod runner restarts it, as a kubelet
    would a container); elsewhere delete one of its pods."""
    if chaos.local_processes:
        servers = model_server_pids(chaos, name)
        if not servers:
            return f"no model server of {name} running"
        pod, pid = chaos.rng.choice(servers)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            return f"{pod} exited meanwhile"
        return f"SIGKILL {pod} (pid {pid})"
    pods = chaos.cluster.items("pods", "-n", chaos.namespace, "-l", f"{ISVC_LABEL}={name}")
    if not pods:
        return f"no pod of {name}"
    pod = chaos.rng.choice(sorted(p["metadata"]["name"] for p in pods))
    chaos.kubectl("delete", "pod", pod, "--wait=false")
    return f"deleted pod {pod}"


def fault_on_server(chaos: Chaos, in_switch: bool) -> str:
    """Kill a running model server; `in_switch`: right after asking its service for another
    tier than the one it serves."""
    name = running_victim(chaos)
    if name is None:
        return "no service keeps a running pod"
    switched = ""
    if in_switch:
        active = ((chaos.live(name) or {}).get("status") or {}).get("activeTier")
        tier = chaos.rng.choice([t for t in TIERS if t != active])
        patch(chaos, name, {"precision": {"pinned": tier}})
        switched = f"pin {tier} (from {active}), then "
    return f"{name}: {switched}{kill_model_server(chaos, name)}"


def inject(chaos: Chaos, fault: str) -> str:
    from kinfer_dev.localcluster import cluster as local

    if fault == "kill-operator":
        chaos.operator.kill()
        chaos.operator_back_after = chaos.rng.randint(0, MAX_OPERATOR_DOWN_OPERATIONS)
        return f"operator SIGKILLed, back after {chaos.operator_back_after} operations"
    if fault in ("kill-model-server", "kill-model-server-in-switch"):
        return fault_on_server(chaos, in_switch=fault.endswith("in-switch"))
    assert chaos.cluster.state_dir is not None
    component = {"restart-prometheus": "prometheus", "restart-apiserver": "kube-apiserver"}[fault]
    local.restart(chaos.cluster.state_dir, component)
    return f"{component} restarted"


def operator_up(chaos: Chaos) -> None:
    if not chaos.operator.alive():
        chaos.operator.start()
        chaos.note("operator started")
    chaos.operator_back_after = None


# -- invariants ----------------------------------------------------------------------------


def pod_tiers(cluster: Cluster, pods: list[dict[str, Any]]) -> list[str | None]:
    """The tier each Ready pod serves, asked of the server itself (version k+1 is tier k)."""
    tiers = []
    for pod in pods:
        with pod_endpoint(cluster, pod) as (_, grpc_url):
            version = active_version(grpc_url, "mlp")
        tiers.append(TIERS[version - 1] if version else None)
    return tiers


def service_problems(
    cluster: Cluster, isvc: dict[str, Any], children: list[dict[str, Any]]
) -> list[str]:
    """What is not yet as this InferenceService's spec says (empty: converged)."""
    meta, status = isvc["metadata"], isvc.get("status") or {}
    name = meta["name"]
    errors, parsed = checked(isvc)
    if errors or parsed is None:
        return [f"{name}: invalid spec {errors}"]
    found = []
    if status.get("observedGeneration") != meta.get("generation"):
        found.append(f"{name}: observedGeneration {status.get('observedGeneration')}")
    by_kind = {o["kind"]: o for o in children}
    for desired in render(parsed, RenderOptions()):
        live = by_kind.get(desired["kind"])
        if live is None or not matches(desired, live):
            found.append(f"{name}: {desired['kind']} missing or not as rendered")
    desired_replicas, _ = effective_replicas(parsed)
    deployment_status = (by_kind.get("Deployment") or {}).get("status") or {}
    ready = deployment_status.get("readyReplicas", 0)
    if ready != desired_replicas or deployment_status.get("replicas", 0) != desired_replicas:
        found.append(f"{name}: {ready} ready of {desired_replicas} desired")
    for key, value in (("replicas", desired_replicas), ("readyReplicas", ready)):
        if status.get(key, 0) != value:
            found.append(f"{name}: status.{key} {status.get(key)} != {value}")
    expect_ready = "True" if desired_replicas > 0 else "False"
    if (condition_of(isvc, "Ready") or {}).get("status") != expect_ready:
        found.append(f"{name}: Ready is not {expect_ready}: {condition_of(isvc, 'Ready')}")
    if desired_replicas > 0 and not found:
        found += tier_problems(cluster, isvc, parsed.spec.precision.pinned)
    return found


def tier_problems(cluster: Cluster, isvc: dict[str, Any], pinned: str | None) -> list[str]:
    """The tier in status is the pinned one (if any) and the one every Ready pod serves."""
    name, status = isvc["metadata"]["name"], isvc.get("status") or {}
    active = status.get("activeTier")
    if (condition_of(isvc, "TierConverged") or {}).get("status") != "True":
        return [f"{name}: TierConverged {condition_of(isvc, 'TierConverged')}"]
    if pinned and active != pinned:
        return [f"{name}: activeTier {active}, pinned {pinned}"]
    served = pod_tiers(cluster, cluster.ready_pods(isvc["metadata"]["namespace"], name))
    if set(served) != {active}:
        return [f"{name}: status.activeTier {active}, the pods serve {served}"]
    return []


def problems(chaos: Chaos) -> list[str]:
    """Every invariant that does not hold now (empty: converged)."""
    cluster, namespace = chaos.cluster, chaos.namespace
    services = cluster.items("kisvc", "-n", namespace)
    children = cluster.items(OWNED_KINDS, "-n", namespace, "-l", ISVC_LABEL)
    pods = cluster.items("pods", "-n", namespace, "-l", ISVC_LABEL)
    live = {o["metadata"]["uid"]: o for o in services}
    found = [
        f"{o['metadata']['name']} stuck in Terminating"
        for o in services
        if o["metadata"].get("deletionTimestamp")
    ]
    mine: dict[str, list[dict[str, Any]]] = {uid: [] for uid in live}
    for child in children + pods:
        owner = owner_uid(child, live, pods)
        what = f"{child['kind']} {child['metadata']['name']}"
        if owner is None:
            found.append(f"orphan {what}")
        elif child["kind"] != "Pod":
            mine[owner].append(child)
    for uid, isvc in live.items():
        kinds = Counter(o["kind"] for o in mine[uid])
        found += [f"{isvc['metadata']['name']}: {n} {k}s" for k, n in kinds.items() if n > 1]
        if not isvc["metadata"].get("deletionTimestamp"):
            found += service_problems(cluster, isvc, mine[uid])
    return found


def owner_uid(
    child: dict[str, Any], live: dict[str, dict[str, Any]], pods: list[dict[str, Any]]
) -> str | None:
    """The live InferenceService a child belongs to (a pod through its ReplicaSet's
    Deployment: its ISVC label and an owner that still exists); None: an orphan."""
    meta = child["metadata"]
    if child["kind"] == "Pod":
        name = (meta.get("labels") or {}).get(ISVC_LABEL)
        owners = [o for o in live.values() if o["metadata"]["name"] == name]
        terminating = bool(meta.get("deletionTimestamp"))
        return owners[0]["metadata"]["uid"] if owners and not terminating else None
    for ref in meta.get("ownerReferences") or []:
        if ref.get("uid") in live:
            return str(ref["uid"])
    return None


def checkpoint(chaos: Chaos, label: str) -> None:
    """Wait (bounded, on conditions) until every invariant holds; fail with the log."""
    operator_up(chaos)
    started = time.monotonic()
    last: list[str] = []
    first: list[str] | None = None  # what was still to converge at the checkpoint

    def converged() -> bool:
        nonlocal last, first
        last = problems(chaos)
        first = last if first is None else first
        return not last

    try:
        wait_for(f"convergence at {label}", converged, CONVERGE_TIMEOUT_S, interval_s=2)
    except WaitTimeout as error:
        raise AssertionError(
            f"{error}\nstill wrong: {last}\n{schedule_report(chaos)}\n"
            f"--- operation log ---\n"
            + "\n".join(chaos.log)
            + "\n"
            + pod_report(chaos)
            + "\n"
            + operator_report(chaos, last)
        ) from None
    chaos.converge_s.append(time.monotonic() - started)
    chaos.note(f"checkpoint {label}: converged in {chaos.converge_s[-1]:.1f}s; was {first}")


def pod_report(chaos: Chaos) -> str:
    """Each pod's phase, Ready condition and server annotations, and (locally) the pod
    runner's and KWOK's log lines that name it: which component a stuck pod waits on."""
    lines = ["--- pods ---"]
    pods = chaos.cluster.items("pods", "-n", chaos.namespace)
    for pod in pods:
        meta, status = pod["metadata"], pod.get("status") or {}
        ready = condition_of(pod, "Ready") or {}
        server = {
            k.removeprefix("kinfer.dev/"): v
            for k, v in (meta.get("annotations") or {}).items()
            if k.startswith("kinfer.dev/server-")
        }
        owners = [
            f"{o.get('kind')}/{o.get('name')} uid {o.get('uid')}"
            for o in meta.get("ownerReferences") or []
        ]
        lines.append(
            f"{meta['name']} rv {meta.get('resourceVersion')} created"
            f" {meta.get('creationTimestamp')} owners {owners} phase {status.get('phase')} "
            f"deleting {meta.get('deletionTimestamp')} Ready {ready.get('status')} "
            f"at {ready.get('lastTransitionTime')} {server}"
        )
    # An orphan pod's owner chain: which link the garbage collector did not follow.
    for rs in chaos.cluster.items("replicasets", "-n", chaos.namespace):
        meta = rs["metadata"]
        lines.append(
            f"ReplicaSet {meta['name']} uid {meta.get('uid')} deleting"
            f" {meta.get('deletionTimestamp')} owners"
            f" {[(o.get('name'), o.get('uid')) for o in meta.get('ownerReferences') or []]}"
        )
    log_dir = chaos.cluster.state_dir / "logs" if chaos.cluster.state_dir else None
    names = [p["metadata"]["name"] for p in pods]
    for component in ("pod-runner", "kwok", "kube-controller-manager"):
        path = log_dir / f"{component}.log" if log_dir else None
        if path is None or not path.exists() or not names:
            continue
        text = path.read_text(errors="replace").splitlines()
        named = [line for line in text if any(name in line for name in names)]
        lines.append(f"--- {path} (lines naming them, last 60) ---")
        lines += named[-60:]
    return "\n".join(lines)


def operator_report(chaos: Chaos, still_wrong: list[str]) -> str:
    """What a local operator says of the services still wrong: its metrics series for them
    (what its last tick read; none: it does not tick them) and its log lines naming them."""
    names = sorted({problem.split(":")[0].split()[-1] for problem in still_wrong})
    lines = [f"--- operator on {names} ---"]
    operator = chaos.operator
    if operator.metrics_port:
        try:
            url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as answer:
                text = answer.read().decode(errors="replace")
            lines += [
                line
                for line in text.splitlines()
                if any(f'inferenceservice="{name}"' in line for name in names)
            ]
        except OSError as error:
            lines.append(f"metrics: {error}")
    if operator.log_path.exists():
        text = operator.log_path.read_text(errors="replace").splitlines()
        lines += [line for line in text if any(name in line for name in names)][-60:]
    return "\n".join(lines)


def schedule_report(chaos: Chaos) -> str:
    return (
        f"{ENV_SEED}={chaos.seed} operations {dict(chaos.operations)} faults {dict(chaos.faults)}"
    )


# -- the schedule --------------------------------------------------------------------------


def step(chaos: Chaos, index: int) -> None:
    name = chaos.rng.choice(chaos.names)
    if chaos.live(name) is None:
        kind, what = "create", op_create(chaos, name)
    else:
        kind = weighted(chaos.rng, OPERATION_WEIGHTS)
        what = OPERATIONS[kind](chaos, name)
    chaos.operations[kind] += 1
    chaos.note(f"#{index} {name}: {what}")
    if chaos.operator_back_after is not None:
        if chaos.operator_back_after == 0:
            operator_up(chaos)
        else:
            chaos.operator_back_after -= 1
    if chaos.rng.random() < FAULT_PROBABILITY:
        fault = weighted(chaos.rng, chaos.fault_weights())
        chaos.faults[fault] += 1
        chaos.note(f"   fault {fault}: {inject(chaos, fault)}")


def weighted(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def switch_under_load(chaos: Chaos) -> str:
    """A tier switch through which a load generator runs: zero failed requests, and the
    switch's Event."""
    name = chaos.names[0]
    cluster, namespace = chaos.cluster, chaos.namespace
    if chaos.live(name) is None:
        op_create(chaos, name)
    # Autoscaling on, held at one replica: the pin is the scaling decision's, with its Event.
    scaling = {"minReplicas": 1, "maxReplicas": 1, "targetQPSPerReplica": 1000, "periodSeconds": 5}
    patch(chaos, name, {"replicas": 1, "scaling": scaling, "precision": {"pinned": "fp32"}})
    checkpoint(chaos, "before the switch under load")
    with ReadyPodURLs(cluster, namespace, name) as urls:
        load = LoadGenerator(
            urls, "mlp", infer_body(), rate_qps=10, max_duration_s=300, max_requests=3000
        )
        with load:
            wait_for("load on the pod", lambda: load.result.ok >= 20, timeout_s=120)
            patch(chaos, name, {"precision": {"pinned": "int8"}})
            checkpoint(chaos, "after the switch under load")
            served = load.result.ok
            wait_for("load after the switch", lambda: load.result.ok >= served + 20, 120)
    result = load.result
    assert result.failed == 0, f"{result.failed} failed requests, e.g. {result.errors[:3]}"
    uid = chaos.live(name)["metadata"]["uid"]  # type: ignore[index]
    events = cluster.items(
        "events", "-n", namespace, "--field-selector", f"involvedObject.uid={uid}"
    )
    switches = [e for e in events if e.get("action") == "SwitchTier"]
    assert any(e["reason"] == "TierPinned" and "int8" in e["message"] for e in switches), [
        (e["reason"], e["message"]) for e in events
    ]
    return f"{result.ok} requests through the switch to int8, 0 failed"


def change_has_its_event(chaos: Chaos) -> str:
    """Free of faults, a change of the spec is applied and its Event names the child."""
    name = chaos.names[0]
    obj = chaos.live(name)
    assert obj is not None
    uid = obj["metadata"]["uid"]

    def updates() -> int:
        events = chaos.cluster.items(
            "events", "-n", chaos.namespace, "--field-selector", f"involvedObject.uid={uid}"
        )
        return sum(
            e.get("count") or 1
            for e in events
            if e["reason"] == "Updated" and f"Deployment {name}" in e["message"]
        )

    before = updates()
    cpu = "150m" if obj["spec"]["resources"]["cpu"] != "150m" else "100m"
    patch(chaos, name, {"resources": {"cpu": cpu}})
    checkpoint(chaos, f"after resources.cpu {cpu}")
    wait_for("the change's Event", lambda: updates() > before, 60)
    return f"resources.cpu {cpu}: Deployment updated, and its Event"


@pytest.mark.disruptive
def test_random_operations_and_faults_converge(
    cluster: Cluster, operator: Operator, models: Models, namespace: str
) -> None:
    chaos_seed = int(os.environ.get(ENV_SEED) or random.SystemRandom().randrange(2**31))
    local_processes = (
        cluster.state_dir is not None and ProcessTable(cluster.state_dir).path.exists()
    )
    default = DEFAULT_OPERATIONS if local_processes else DEFAULT_OPERATIONS_ELSEWHERE
    count = int(os.environ.get(ENV_OPERATIONS) or default)
    services = int(os.environ.get(ENV_SERVICES) or DEFAULT_SERVICES)
    print(f"\nchaos: {ENV_SEED}={chaos_seed} {ENV_OPERATIONS}={count} {ENV_SERVICES}={services}")
    if not local_processes:
        for fault, why in LOCAL_ONLY_FAULTS.items():
            print(f"chaos: fault {fault} skipped: it {why}, and this cluster is not one")
    chaos = Chaos(
        cluster,
        operator,
        models,
        namespace,
        random.Random(chaos_seed),
        [f"chaos-{chr(ord('a') + i)}" for i in range(services)],
        local_processes,
        chaos_seed,
    )
    every = max(1, count // (CHECKPOINTS + 1))
    for index in range(1, count + 1):
        step(chaos, index)
        if index % every == 0 and index < count:
            checkpoint(chaos, f"operation {index}")
    checkpoint(chaos, "the end")
    chaos.note(switch_under_load(chaos))
    chaos.note(change_has_its_event(chaos))
    report = (
        f"chaos: {schedule_report(chaos)}; converged at {len(chaos.converge_s)} checkpoints, "
        f"p50 {statistics.median(chaos.converge_s):.1f}s, max {max(chaos.converge_s):.1f}s; "
        f"{time.monotonic() - chaos.started:.0f}s in all"
    )
    print(report)
    results = os.environ.get("KINFER_CHAOS_RESULTS")
    if results:
        Path(results).write_text(
            json.dumps(
                {
                    "seed": chaos_seed,
                    "operations": dict(chaos.operations),
                    "faults": dict(chaos.faults),
                    "converge_s": chaos.converge_s,
                }
            )
        )
