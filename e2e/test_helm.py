"""The Helm chart on the kind cluster: docs/install.md's install and uninstall commands, run
as written for a second release beside the installed operator.

The second release must not fight the kustomize install (`make kind-up`): `--skip-crds`
(the CRD exists; Helm would leave an existing CRD untouched anyway, and never deletes one),
its own namespace, release-prefixed names for the cluster-scoped objects, and
`watchNamespaces` limited to an empty namespace. Runs only where the operator is installed
in a cluster of real containers (`make e2e-kind`); elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from e2e.harness import ENV_OPERATOR, Cluster, wait_for
from kinfer_dev import chart

pytestmark = pytest.mark.skipif(
    os.environ.get(ENV_OPERATOR) != "installed",
    reason="needs the kind cluster with kinfer installed (make e2e-kind), where helm installs "
    "a second release",
)

CRD = "inferenceservices.kinfer.dev"
DOC_RELEASE = "kinfer"
DOC_NAMESPACE = "kinfer-system"


def documented_commands(section: str, release: str, namespace: str, watched: str) -> list[str]:
    """docs/install.md's block, with this test's release, namespace and isolation; each
    substitution must apply, so a changed doc fails here rather than running something else."""
    substitutions = [
        (f"helm install {DOC_RELEASE} ", f"helm install {release} "),
        (f"helm uninstall {DOC_RELEASE} ", f"helm uninstall {release} "),
        (f"deployment/{DOC_RELEASE}-operator", f"deployment/{release}-operator"),
        (DOC_NAMESPACE, namespace),
        # Only the watched namespace's InferenceServices: the cluster is shared.
        ("--all --all-namespaces", f"--all --namespace {watched}"),
    ]
    block = "\n".join(chart.documented_block(section))
    for old, new in substitutions:
        if old in block:
            block = block.replace(old, new)
    assert DOC_NAMESPACE not in block and "--all-namespaces" not in block, block
    isolation = f" --skip-crds --set watchNamespaces={{{watched}}} --wait --timeout 5m"
    return [
        line + isolation if line.startswith(f"helm install {release} ") else line
        for line in block.splitlines()
    ]


def run_documented(cluster: Cluster, commands: list[str]) -> None:
    """Each line in bash, as a user types it, with the pinned helm and the cluster's kubectl."""
    path = (
        f"{chart.helm_binary().parent}:{Path(cluster.kubectl_binary).parent}:{os.environ['PATH']}"
    )
    env = {**os.environ, **cluster.env, "PATH": path}
    for command in commands:
        out = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command],
            cwd=chart.REPO, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert out.returncode == 0, f"{command}\n{out.stdout}\n{out.stderr}"


def live_objects(cluster: Cluster, release: str, namespace: str) -> list[dict[str, Any]]:
    """What of the release is in the cluster, found by Helm's instance label."""
    selector = f"app.kubernetes.io/instance={release}"
    kinds = "serviceaccounts,deployments,roles,rolebindings,poddisruptionbudgets"
    found = cluster.items(kinds, "-n", namespace, "-l", selector)
    return found + cluster.items("clusterroles,clusterrolebindings", "-l", selector)


def assert_live_is_rendered(
    cluster: Cluster, rendered: list[dict[str, Any]], namespace: str
) -> None:
    for obj in rendered:
        kind, name = obj["kind"], obj["metadata"]["name"]
        scope = ["-n", namespace] if "namespace" in obj["metadata"] else []
        live = cluster.get(f"{kind.lower()}.{obj['apiVersion'].split('/')[0]}"
                           if "/" in obj["apiVersion"] else kind.lower(), name, *scope)  # fmt: skip
        assert live["metadata"]["labels"] == obj["metadata"]["labels"], (kind, name)
        for field in ("rules", "subjects", "roleRef"):
            assert live.get(field) == obj.get(field), (kind, name, field)
    [deployment] = [o for o in rendered if o["kind"] == "Deployment"]
    live = cluster.get("deployment", deployment["metadata"]["name"], "-n", namespace)
    [want] = deployment["spec"]["template"]["spec"]["containers"]
    [have] = live["spec"]["template"]["spec"]["containers"]
    for field in ("image", "args", "resources", "securityContext"):
        assert have[field] == want[field], field
    # The API server fills in defaults (fieldRef's apiVersion, a port's protocol).
    assert [(e["name"], e.get("value"), e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath"))
            for e in have["env"]] == [
        (e["name"], e.get("value"), e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath"))
        for e in want["env"]
    ]  # fmt: skip
    assert [(p["name"], p["containerPort"]) for p in have["ports"]] == [
        (p["name"], p["containerPort"]) for p in want["ports"]
    ]
    assert have["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_helm_install_and_uninstall_a_second_release_as_docs_install_md_says(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    release = f"kinfer-e2e-{uuid.uuid4().hex[:6]}"
    release_namespace = release  # created by `helm install --create-namespace`
    install = documented_commands("Install with Helm", release, release_namespace, namespace)
    uninstall = documented_commands("Uninstalling", release, release_namespace, namespace)
    crd_before = cluster.get("crd", CRD)["metadata"]["uid"]
    try:
        run_documented(cluster, install)
        # The objects are the chart's render for these values.
        rendered = chart.render(
            tmp_path, {"watchNamespaces": [namespace]}, release, release_namespace, False
        )
        live = live_objects(cluster, release, release_namespace)
        assert sorted((o["kind"], o["metadata"]["name"]) for o in live) == sorted(
            (o["kind"], o["metadata"]["name"]) for o in rendered
        )
        assert_live_is_rendered(cluster, rendered, release_namespace)
        deployment = cluster.get("deployment", f"{release}-operator", "-n", release_namespace)
        assert deployment["status"].get("availableReplicas") == deployment["spec"]["replicas"]
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert f"--namespace={namespace}" in args
        if "--leader-election" in args:
            holder = wait_for(
                "the release's operator to hold its Lease",
                lambda: cluster.get("lease", "kinfer-operator", "-n", release_namespace)[
                    "spec"
                ].get("holderIdentity"),
                120,
            )
            assert holder.startswith(f"{release}-operator-")
        # The installed operator still acts on its own (kinfer-system's Deployment untouched).
        assert cluster.get("deployment", "kinfer-operator", "-n", DOC_NAMESPACE)["status"].get(
            "availableReplicas"
        )

        run_documented(cluster, uninstall)
        assert live_objects(cluster, release, release_namespace) == []
        # No release in any state, and no release record (Helm keeps them in Secrets).
        states = ("--deployed", "--failed", "--pending", "--superseded", "--uninstalled",
                  "--uninstalling")  # fmt: skip
        helm_list = chart.helm("list", *states, "-n", release_namespace, "-o", "json",
                               "--kubeconfig", str(cluster.kubeconfig)).stdout  # fmt: skip
        assert json.loads(helm_list) == []
        assert (
            cluster.items("secrets", "-n", release_namespace, "-l", f"owner=helm,name={release}")
            == []
        )
        # Helm keeps CRDs: the one the kustomize install owns is the same object as before.
        assert cluster.get("crd", CRD)["metadata"]["uid"] == crd_before
    finally:
        chart.helm("uninstall", release, "-n", release_namespace, "--ignore-not-found",
                   "--kubeconfig", str(cluster.kubeconfig), check=False)  # fmt: skip
        cluster.delete_namespace(release_namespace)
