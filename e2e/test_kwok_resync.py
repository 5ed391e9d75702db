"""The local cluster's pod runner syncs a pod's status the way a kubelet does, on a period:
a KWOK Stage dropped on a failed write does not leave the pod stale for good.

KWOK drops a Stage whose write fails with an error it does not retry (a restarting API server
answers some). Here its writes are refused on purpose: a ValidatingAdmissionPolicy denies
KWOK's pod status updates in the test's namespace while the runner reports the model server
ready; the policy then goes, and nothing else changes the pod. The runner must see the pod
stale and bump it (kinfer_dev.localcluster.kwok_watchdog), so KWOK plays the Stage again and
the pod becomes Ready. Local cluster only: kind has a real kubelet.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from e2e.harness import Cluster, Models, Operator, condition, load_sample, wait_for
from kinfer_dev.localcluster.config import ANNOTATION_COLD_START_S, ANNOTATION_SERVER_READY
from kinfer_dev.localcluster.kwok_watchdog import DEFAULT_STALL_S

KWOK_USER = "kinfer-kwok"  # the local cluster's KWOK client certificate (pki.py)


def deny_kwok_status_writes(namespace: str) -> list[dict[str, Any]]:
    name = f"e2e-deny-kwok-{namespace}"
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["UPDATE"],
                            "resources": ["pods/status"],
                        }
                    ],
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": namespace}
                    },
                },
                "validations": [
                    {
                        "expression": f"request.userInfo.username != '{KWOK_USER}'",
                        "message": "e2e: KWOK's pod status writes are refused",
                    }
                ],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {"policyName": name, "validationActions": ["Deny"]},
        },
    ]


def kwok_may_write(cluster: Cluster, namespace: str, pod: str) -> bool:
    """A server-side dry run of a status patch as KWOK's user: is it admitted?"""
    done = cluster.kubectl(
        "-n", namespace, "patch", "pod", pod, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"message": "e2e"}}), "--dry-run=server",
        f"--as={KWOK_USER}", "--as-group=system:masters", check=False,
    )  # fmt: skip
    return done.returncode == 0


def test_a_dropped_kwok_stage_is_played_again(
    cluster: Cluster, operator: Operator, models: Models, namespace: str
) -> None:
    if not cluster.is_local:
        pytest.skip("the local cluster's pod runner and KWOK; kind runs a real kubelet")
    assert cluster.state_dir is not None
    isvc = load_sample("onnxruntime-cpu.yaml", namespace, models)
    isvc["metadata"]["name"] = "resync"
    # Time to refuse KWOK's writes after the pod starts and before its server is ready.
    # 30 s: the policy must be in force before the server is ready, on a busy machine too.
    isvc["metadata"]["annotations"] = {ANNOTATION_COLD_START_S: "30"}
    isvc["spec"]["resources"] = {"cpu": "250m", "memory": "512Mi"}
    cluster.apply(isvc)

    def started() -> str | None:
        pods = cluster.items("pods", "-n", namespace, "-l", "kinfer.dev/inferenceservice=resync")
        running = [p for p in pods if (p.get("status") or {}).get("podIP")]
        return running[0]["metadata"]["name"] if running else None

    pod = wait_for("the pod started by KWOK", started, 120)
    policy = deny_kwok_status_writes(namespace)
    cluster.apply(policy)
    try:
        wait_for("the policy in force", lambda: not kwok_may_write(cluster, namespace, pod), 60)
        annotations = cluster.get("pod", pod, "-n", namespace)["metadata"].get("annotations", {})
        assert annotations.get(ANNOTATION_SERVER_READY) != "true", (
            "the server was ready before the policy was in force: no write was refused"
        )
        wait_for(
            "the runner's ready report",
            lambda: (
                cluster.get("pod", pod, "-n", namespace)["metadata"]
                .get("annotations", {})
                .get(ANNOTATION_SERVER_READY)
                == "true"
            ),
            180,
        )
        kwok_log = cluster.state_dir / "logs" / "kwok.log"
        wait_for(
            "KWOK's refused write of the Ready condition",
            lambda: any(
                pod in line and "failed to apply stage" in line.lower()
                for line in kwok_log.read_text(errors="replace").splitlines()
            ),
            60,
        )
    finally:
        for obj in reversed(policy):
            cluster.kubectl("delete", obj["kind"], obj["metadata"]["name"], check=False)
    wait_for("the policy gone", lambda: kwok_may_write(cluster, namespace, pod), 60)
    # KWOK plays the Stage again on the pod's next change: the runner's bump, or (in a busy
    # run) any other write to the pod. Without the bump nothing may come (checked by hand:
    # with the runner's resync disabled this wait times out).
    wait_for(
        "the pod Ready again (bumped by the runner)",
        lambda: condition(cluster.get("pod", pod, "-n", namespace), "Ready") == "True",
        DEFAULT_STALL_S * 6,
    )
