"""Operator high availability: leader election on a coordination.k8s.io Lease.

On a local cluster of its own (the session's operator watches every namespace, so it would
act beside the two under test): the elector against the real API server (one holds, the
other waits; a release hands over; resourceVersion conflicts), then two real
`kinfer run --leader-election` processes: only the leader acts, a SIGKILLed leader's Lease
expires and the standby converges everything, a SIGTERMed leader releases at once, and
the intervals in which each acted never overlap.

On kind (KINFER_E2E_OPERATOR=installed): the shipped two-replica Deployment; the active pod
(the Lease's holder) is deleted, gracefully and forced, and the time until the new holder's
first renew and until an InferenceService change is acted on is printed
(docs/high-availability.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from e2e.harness import (
    CRDS,
    ENV_OPERATOR,
    ISVC_LABEL,
    OPERATOR_NAMESPACE,
    OPERATOR_SELECTOR,
    Cluster,
    free_port,
    wait_for,
)
from kinfer.controller import leader

LEASE_NAMESPACE = "kinfer-ha"
WORK_NAMESPACE = "kinfer-ha-work"
LEASE = "kinfer-operator"
TIMING = leader.Timing()
# Bounds on waits (a loaded 2-core machine), never timing goals.
START_S = 180.0
TAKEOVER_S = TIMING.lease_duration_s + 120.0


def _free_pod_cidr() -> str:
    from kinfer_dev.localcluster.cluster import _listening_addresses

    busy = {a.packed[1] for a in _listening_addresses() if a.packed[0] == 127}
    for second in range(100, 150):
        if second not in busy:
            return f"127.{second}.0.0/16"
    raise RuntimeError("no free 127.x.0.0/16 for the leader-election cluster")


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if os.environ.get("KUBECONFIG"):
        pytest.skip("two operators on a local cluster of its own: run without KUBECONFIG")
    from kinfer_dev.localcluster.cluster import LocalCluster
    from kinfer_dev.localcluster.config import ClusterConfig

    state_dir = tmp_path_factory.mktemp("leader-cluster") / "state"
    config = ClusterConfig.from_env(state_dir=state_dir, pod_cidr=_free_pod_cidr())
    local = LocalCluster(config, out=sys.stderr)
    try:
        state = local.up()
        cluster = Cluster(
            Path(state.kubeconfig),
            str(Path(state.bin_dir) / "kubectl"),
            is_local=True,
            prometheus_url=state.prometheus_url,
        )
        cluster.kubectl("apply", "--server-side", "-f", str(CRDS))
        # kubectl wait errs on a CRD whose status has no conditions yet: poll it.
        wait_for(
            "the CRD Established",
            lambda: cluster.kubectl(
                "wait", "--for=condition=Established", "crd/inferenceservices.kinfer.dev",
                check=False,
            ).returncode == 0,
            START_S,
        )  # fmt: skip
        for namespace in (LEASE_NAMESPACE, WORK_NAMESPACE):
            cluster.kubectl("create", "namespace", namespace)
        yield cluster
    finally:
        local.down()


def _lease(
    cluster: Cluster, namespace: str = LEASE_NAMESPACE, name: str = LEASE
) -> dict[str, Any] | None:
    found = cluster.kubectl("get", "lease", name, "-n", namespace, "-o", "json", check=False)
    return json.loads(found.stdout) if found.returncode == 0 else None


def _holder(cluster: Cluster, namespace: str = LEASE_NAMESPACE) -> str:
    record = leader.record_of(_lease(cluster, namespace))
    return record.holder if record else ""


# --- the elector, in this process, against the real API server --------------------------


def _elector(cluster: Cluster, identity: str, lease: str) -> leader.Elector:
    from kinfer.controller.kube import load_api_client

    lock = leader.LeaseLock(
        load_api_client(str(cluster.kubeconfig)), LEASE_NAMESPACE, lease, TIMING.renew_deadline_s
    )
    return leader.Elector(lock, identity, TIMING)


def test_one_elector_holds_the_other_waits_and_takes_over_on_release(
    own_cluster: Cluster,
) -> None:
    async def scenario() -> tuple[float, leader.LeaseRecord | None]:
        first = _elector(own_cluster, "first_1", "elector-handover")
        second = _elector(own_cluster, "second_2", "elector-handover")
        never = asyncio.Event()
        assert await first.acquire(never)
        holding = asyncio.create_task(first.hold())
        waiting = asyncio.create_task(second.acquire(never))
        # The standby has seen the holder and tried again after a retry period or more,
        # while the holder renewed: it still waits.
        while second.observed is None or second.observed.renew_time == first.observed.acquire_time:
            await asyncio.sleep(0.1)
        assert not waiting.done() and second.observed.holder == "first_1"
        holding.cancel()
        released_at = time.monotonic()
        await first.release()
        assert await asyncio.wait_for(waiting, TAKEOVER_S)
        return time.monotonic() - released_at, second.observed

    took_s, record = asyncio.run(scenario())
    assert record is not None and record.holder == "second_2" and record.transitions == 1
    on_server = leader.record_of(_lease(own_cluster, name="elector-handover"))
    assert on_server is not None and on_server.holder == "second_2"
    print(f"handover after release: {took_s:.2f} s (retry period {TIMING.retry_period_s:g} s)")


def test_concurrent_writes_on_one_resource_version_let_exactly_one_win(
    own_cluster: Cluster,
) -> None:
    a = _elector(own_cluster, "a_1", "elector-race").lock
    b = _elector(own_cluster, "b_2", "elector-race").lock
    now = datetime.now(UTC)
    # Both create: the second is refused (409 AlreadyExists), not an error.
    assert a.write(leader.next_record(None, "a_1", now, 15), None)
    assert not b.write(leader.next_record(None, "b_2", now, 15), None)
    record, version = a.get()
    # A renew (a later renewTime: an unchanged object would keep its resourceVersion).
    assert a.write(leader.next_record(record, "a_1", now + timedelta(seconds=1), 15), version)
    # b's update on the read a has since replaced: a conflict, and a still holds it.
    assert not b.write(leader.next_record(record, "b_2", now, 15), version)
    assert a.get()[0].holder == "a_1"


def test_a_leader_that_finds_another_holder_gives_up_at_once(own_cluster: Cluster) -> None:
    async def scenario() -> None:
        elector = _elector(own_cluster, "old_1", "elector-stolen")
        assert await elector.acquire(asyncio.Event())
        record, version = elector.lock.get()
        taken = leader.next_record(record, "new_2", datetime.now(UTC), 15)
        assert elector.lock.write(taken, version)
        with pytest.raises(leader.LeadershipLost, match="held by new_2"):
            await asyncio.wait_for(elector.hold(), TAKEOVER_S)
        assert not leader.still_leader(elector.last_renew_s, time.monotonic(), 0.0)

    asyncio.run(scenario())


# --- two real operators ----------------------------------------------------------------


@dataclass
class Replica:
    """One `kinfer run --leader-election` process, as one pod of the Deployment would run."""

    cluster: Cluster
    pod_name: str
    log_path: Path
    probe_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            sys.executable, "-m", "kinfer", "run", f"--kubeconfig={self.cluster.kubeconfig}",
            "--leader-election", f"--leader-election-namespace={LEASE_NAMESPACE}",
            "-n", WORK_NAMESPACE, "--log-format=json",
            f"--liveness=http://127.0.0.1:{self.probe_port}/healthz",
            f"--metrics-port={self.metrics_port}", "--metrics-address=127.0.0.1",
        ]  # fmt: skip
        if self.cluster.prometheus_url:
            argv.append(f"--prometheus-url={self.cluster.prometheus_url}")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**self.cluster.env, "POD_NAME": self.pod_name},
                start_new_session=True,
            )

    def signal(self, signum: int) -> int:
        assert self.process is not None
        os.killpg(self.process.pid, signum)
        try:
            return self.process.wait(timeout=120)
        finally:
            self.process = None

    def _get(self, path: str, port: int) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def health(self) -> dict[str, Any]:
        return json.loads(self._get("/healthz", self.probe_port)[1])

    def ready(self) -> bool:
        return self._get("/readyz", self.probe_port)[0] == 200

    def metric(self, name: str, **labels: str) -> float:
        text = self._get("/metrics", self.metrics_port)[1].decode()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    def reconciles(self) -> float:
        return self.metric("kinfer_reconciles_total", result="success") + self.metric(
            "kinfer_reconciles_total", result="error"
        )

    def log(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines


def _isvc(name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "kinfer.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": WORK_NAMESPACE},
        "spec": {
            "runtime": "onnxruntime",
            # Never fetched by this test: what it checks is the operator's writes.
            "model": {
                "name": "mlp",
                "format": "onnx",
                "storageUri": "http://127.0.0.1:9/mlp/model.onnx",
            },
            "resources": {"cpu": "100m", "memory": "128Mi"},
            "replicas": replicas,
        },
    }


def _converged(cluster: Cluster, wanted: dict[str, int]) -> bool:
    """Every InferenceService has its Deployment at its replicas and its status observed."""
    deployments = {
        d["metadata"]["labels"][ISVC_LABEL]: d["spec"]["replicas"]
        for d in cluster.items("deployments", "-n", WORK_NAMESPACE, "-l", ISVC_LABEL)
    }
    isvcs = {i["metadata"]["name"]: i for i in cluster.items("kisvc", "-n", WORK_NAMESPACE)}
    return deployments == wanted and all(
        (i.get("status") or {}).get("observedGeneration") == i["metadata"]["generation"]
        for i in isvcs.values()
    )


def _stamp(entry: dict[str, Any]) -> float:
    return datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()


def _acted(replica: Replica) -> list[float]:
    """When this operator acted on an InferenceService: its handlers' log lines."""
    return [_stamp(e) for e in replica.log() if e.get("object") and "Handler" in e["message"]]


def _acquired(replica: Replica) -> list[float]:
    return [_stamp(e) for e in replica.log() if "acquired the Lease" in e["message"]]


def test_only_the_leader_acts_and_the_standby_converges_after_a_crash(
    own_cluster: Cluster, tmp_path: Path
) -> None:
    a, b = (Replica(own_cluster, name, tmp_path / f"{name}.log") for name in ("op-a", "op-b"))
    c = Replica(own_cluster, "op-c", tmp_path / "op-c.log")
    try:
        a.start()
        wait_for("op-a to lead", lambda: a.health()["leader"], START_S)
        b.start()
        wait_for("op-b to stand by, Ready", lambda: b.health()["identity"] and b.ready(), START_S)
        assert b.health()["leader"] is False
        wanted = {f"svc-{i}": 1 for i in range(3)}
        own_cluster.apply([_isvc(name, n) for name, n in wanted.items()])
        wait_for("op-a to converge", lambda: _converged(own_cluster, wanted), START_S)
        # Only the leader acted; the standby's loop ran nothing.
        assert a.reconciles() > 0 and b.reconciles() == 0
        assert (a.metric("kinfer_operator_leader"), b.metric("kinfer_operator_leader")) == (1, 0)
        assert _holder(own_cluster).startswith("op-a_")

        # A crash mid-work: SIGKILL, no release. The changes land while no one leads.
        killed_at = time.time()
        assert a.signal(signal.SIGKILL) == -signal.SIGKILL
        wanted = {"svc-0": 2, "svc-1": 1, "svc-2": 1, "svc-3": 1}
        own_cluster.apply([_isvc(name, n) for name, n in wanted.items()])
        wait_for("op-b to take the expired Lease", lambda: b.health()["leader"], TAKEOVER_S)
        wait_for("op-b to converge", lambda: _converged(own_cluster, wanted), START_S)
        assert b.reconciles() > 0 and b.metric("kinfer_operator_leader") == 1
        record = leader.record_of(_lease(own_cluster))
        assert record.holder.startswith("op-b_") and record.transitions == 1

        # Never two actors: op-a acted only before its death, op-b only after it took over.
        (b_acquired,) = _acquired(b)
        assert _acted(a) and max(_acted(a)) <= killed_at < b_acquired <= min(_acted(b))
        print(f"takeover after SIGKILL: {b_acquired - killed_at:.1f} s")

        # A graceful stop releases the Lease: a new standby takes it at its next try.
        c.start()
        wait_for("op-c to stand by", lambda: c.ready() and not c.health()["leader"], START_S)
        stopped_at = time.time()
        assert b.signal(signal.SIGTERM) == 0
        # Released on the way out (an expired Lease would still name op-b).
        assert leader.record_of(_lease(own_cluster)).holder in ("", c.health()["identity"])
        wait_for("op-c to take the released Lease", lambda: c.health()["leader"], TAKEOVER_S)
        (c_acquired,) = _acquired(c)
        print(f"takeover after SIGTERM: {c_acquired - stopped_at:.1f} s")
        wanted["svc-1"] = 3
        own_cluster.apply([_isvc(name, n) for name, n in wanted.items()])
        wait_for("op-c to converge", lambda: _converged(own_cluster, wanted), START_S)
        assert max(_acted(b)) <= c_acquired <= min(_acted(c))
    finally:
        for replica in (a, b, c):
            if replica.process is not None:
                replica.signal(signal.SIGKILL)


# --- kind: the shipped two-replica Deployment ------------------------------------------


def _micro(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@pytest.fixture
def installed_operator(request: pytest.FixtureRequest) -> Cluster:
    if os.environ.get(ENV_OPERATOR) != "installed":
        pytest.skip("the shipped Deployment's failover runs on kind: e2e/kind/run.sh")
    return request.getfixturevalue("cluster")


def _both_ready(cluster: Cluster) -> bool:
    deployment = cluster.get("deployment", "kinfer-operator", "-n", OPERATOR_NAMESPACE)
    status = deployment["status"]
    return (
        deployment["spec"]["replicas"] == 2
        and status.get("readyReplicas") == 2
        and status.get("updatedReplicas") == 2
        and status.get("replicas") == 2
    )


@pytest.mark.parametrize("deletion", ["graceful", "forced"])
def test_the_shipped_deployment_fails_over_when_the_active_pod_is_deleted(
    installed_operator: Cluster, deletion: str, request: pytest.FixtureRequest
) -> None:
    cluster = installed_operator
    namespace = request.getfixturevalue("namespace")
    wait_for("both operator replicas Ready", lambda: _both_ready(cluster), START_S)
    before = leader.record_of(_lease(cluster, OPERATOR_NAMESPACE))
    assert before is not None and before.holder, "no operator holds the Lease"
    pod = before.holder.rsplit("_", 1)[0]
    assert pod in {
        p["metadata"]["name"]
        for p in cluster.items("pods", "-n", OPERATOR_NAMESPACE, "-l", OPERATOR_SELECTOR)
    }
    extra = ["--grace-period=0", "--force"] if deletion == "forced" else []
    deleted_at = time.time()
    cluster.kubectl("delete", "pod", pod, "-n", OPERATOR_NAMESPACE, "--wait=false", *extra)
    # A change made while the Lease changes hands: the new leader must act on it.
    cluster.apply(
        {**_isvc("failover", 0), "metadata": {"name": "failover", "namespace": namespace}}
    )

    def renewed_by_another() -> leader.LeaseRecord | None:
        record = leader.record_of(_lease(cluster, OPERATOR_NAMESPACE))
        moved = record and record.holder not in ("", before.holder)
        return record if moved and record.renew_time != record.acquire_time else None

    after = wait_for("a new holder's first renew", renewed_by_another, TAKEOVER_S, 0.2)
    wait_for(
        "the new leader to act on the change",
        lambda: cluster.items("deployments", "-n", namespace, "-l", f"{ISVC_LABEL}=failover"),
        TAKEOVER_S,
        0.2,
    )
    acted_at = time.time()
    assert after.transitions == before.transitions + 1
    print(
        f"failover ({deletion} delete): Lease acquired after"
        f" {_micro(after.acquire_time) - deleted_at:.1f} s, first renew after"
        f" {_micro(after.renew_time) - deleted_at:.1f} s, the change acted on after"
        f" {acted_at - deleted_at:.1f} s"
    )
    wait_for("both operator replicas Ready again", lambda: _both_ready(cluster), START_S)
