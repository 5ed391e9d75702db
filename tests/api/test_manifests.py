"""Install artefacts: kustomize output, RBAC scope, the shipped scrape config."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO

MANIFESTS = REPO / "manifests"


def test_shipped_scrape_config_is_the_local_clusters():
    shipped = (MANIFESTS / "prometheus" / "scrape-config.yaml").read_text()
    local = (
        REPO / "operator/dev/kinfer_dev/localcluster/prometheus/scrape-config.yaml"
    ).read_text()
    assert yaml.safe_load(shipped) == yaml.safe_load(local)


def test_scrape_config_puts_namespace_and_isvc_on_every_series():
    config = yaml.safe_load((MANIFESTS / "prometheus" / "scrape-config.yaml").read_text())
    targets = {r.get("target_label") for r in config["scrape_configs"][0]["relabel_configs"]}
    assert {"namespace", "pod", "inferenceservice", "runtime"} <= targets


def _rules():
    role = yaml.safe_load((MANIFESTS / "rbac" / "cluster_role.yaml").read_text())
    return role["rules"]


def test_rbac_grants_no_wildcards_and_no_delete():
    for rule in _rules():
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert not {"delete", "deletecollection", "escalate", "bind", "impersonate"} & set(
            rule["verbs"]
        )


def test_rbac_cannot_read_secrets():
    assert all("secrets" not in rule["resources"] for rule in _rules())


def test_leader_election_role_is_namespaced_to_the_operators_lease():
    role = yaml.safe_load((MANIFESTS / "rbac" / "leader_election_role.yaml").read_text())
    assert role["kind"] == "Role"
    for rule in role["rules"]:
        assert rule["apiGroups"] == ["coordination.k8s.io"] and rule["resources"] == ["leases"]
        # Only `create` goes without a name: the authorizer cannot know it before the object.
        assert rule.get("resourceNames") == ["kinfer-operator"] or rule["verbs"] == ["create"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomize_builds_the_install():
    out = subprocess.run(
        ["kubectl", "kustomize", str(MANIFESTS)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    kinds = [doc["kind"] for doc in yaml.safe_load_all(out.stdout)]
    assert sorted(kinds) == sorted(
        [
            "Namespace",
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Deployment",
            "PodDisruptionBudget",
        ]
    )
    deployment = next(d for d in yaml.safe_load_all(out.stdout) if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
