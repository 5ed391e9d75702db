"""manifests/helm/kinfer/ with the real helm (pinned, go/helm): the default render is the
kustomize install, lint --strict passes, other values render as asked, and the values
schema rejects a bad value with helm's own error."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kinfer_dev import chart

# Values that turn every option on (helm lint and the structural checks use them).
ALL_ON: dict[str, Any] = {
    "replicas": 3,
    "image": {"tag": "9.9.9", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "registry-a"}, {"name": "registry-b"}],
    "nodeSelector": {"kubernetes.io/os": "linux", "pool": "system"},
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "system", "effect": "NoSchedule"}
    ],
    "watchNamespaces": ["team-a", "team-b"],
    "logFormat": "plain",
    "prometheus": {"url": "https://prometheus.example.internal:9090"},
    "hfEndpoint": "https://hf-mirror.example.internal",
    "dataPlaneImages": {
        "triton": "registry.internal/tritonserver:24.10-py3",
        "ortServerCuda": "registry.internal/kinfer-ort-server:cuda12",
    },
    "podMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True, "labels": {"release": "monitoring"}},
}


@pytest.fixture(scope="module")
def helm() -> Path:
    return chart.helm_binary()


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def test_the_default_render_is_the_kustomize_install(helm: Path, tmp_path: Path) -> None:
    rendered = chart.normalise(chart.render(tmp_path))
    installed = chart.normalise(
        obj
        for obj in chart.kustomize()
        if obj["kind"] != "Namespace"  # --create-namespace
    )
    # crds/ is never templated, so the chart's CRD lacks the part-of label kustomize adds.
    installed[("CustomResourceDefinition", "inferenceservices.kinfer.dev")]["metadata"].pop(
        "labels"
    )
    assert sorted(rendered) == sorted(installed)
    for key, obj in installed.items():
        assert rendered[key] == obj, f"{key} differs between the chart and manifests/"


def test_the_prometheus_objects_are_the_kustomize_ones(helm: Path, tmp_path: Path) -> None:
    values = {"podMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}
    kinds = ("PodMonitor", "PrometheusRule")
    rendered = chart.normalise(o for o in chart.render(tmp_path, values) if o["kind"] in kinds)
    installed = chart.normalise(chart.kustomize(chart.MANIFESTS / "prometheus"))
    assert sorted(rendered) == sorted(installed)
    for key, obj in installed.items():
        assert rendered[key] == obj, f"{key} differs between the chart and manifests/prometheus/"


def test_kube_prometheus_stack_selects_the_monitors_and_rules_by_default(
    helm: Path, tmp_path: Path
) -> None:
    values = {"podMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}
    monitoring = [
        o for o in chart.render(tmp_path, values) if o["kind"] in ("PodMonitor", "PrometheusRule")
    ]
    assert len(monitoring) == 3
    for obj in monitoring:
        assert obj["metadata"]["labels"]["release"] == "kube-prometheus-stack"


@pytest.mark.parametrize("values", [None, ALL_ON], ids=["defaults", "every-option-on"])
def test_helm_lint_strict_passes(helm: Path, tmp_path: Path, values: dict | None) -> None:
    flags = chart.value_flags(values, tmp_path)
    out = chart.helm("lint", "--strict", str(chart.CHART), *flags, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


def test_other_values_render_as_asked(helm: Path, tmp_path: Path) -> None:
    objects = chart.render(tmp_path, ALL_ON, include_crds=False)
    [deployment] = by_kind(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert deployment["spec"]["replicas"] == 3
    assert pod["imagePullSecrets"] == [{"name": "registry-a"}, {"name": "registry-b"}]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux", "pool": "system"}
    assert pod["tolerations"] == ALL_ON["tolerations"]
    assert container["image"] == "ghcr.io/kinfer-dev/kinfer-operator:9.9.9"
    assert container["imagePullPolicy"] == "Always"
    assert container["args"][-3:] == [
        "--log-format=plain",
        "--namespace=team-a",
        "--namespace=team-b",
    ]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KINFER_PROMETHEUS_URL"] == "https://prometheus.example.internal:9090"
    assert env["KINFER_TRITON_IMAGE"] == "registry.internal/tritonserver:24.10-py3"
    assert env["KINFER_ORT_SERVER_CUDA_IMAGE"] == "registry.internal/kinfer-ort-server:cuda12"
    assert env["HF_ENDPOINT"] == "https://hf-mirror.example.internal"
    # The data-plane images keep the chart's version: only the operator's tag was set.
    version = chart.project_version()
    assert env["KINFER_ORT_SERVER_IMAGE"] == f"ghcr.io/kinfer-dev/kinfer-ort-server:{version}"
    assert len(by_kind(objects, "PodMonitor")) == 2
    [rule] = by_kind(objects, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "monitoring"
    assert not by_kind(objects, "CustomResourceDefinition")


def test_the_defaults_leave_the_optional_objects_out(helm: Path, tmp_path: Path) -> None:
    objects = chart.render(tmp_path, include_crds=False)
    kinds = sorted(obj["kind"] for obj in objects)
    assert kinds == sorted(
        ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
         "Deployment", "PodDisruptionBudget"]
    )  # fmt: skip
    env = {
        e["name"]
        for e in by_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0][
            "env"
        ]
    }
    assert "KINFER_TRITON_IMAGE" not in env  # the operator's own default
    assert "HF_ENDPOINT" not in env  # the operator's own default, the hub
    values = {"podDisruptionBudget": {"enabled": False, "minAvailable": 1}}
    assert not by_kind(chart.render(tmp_path, values), "PodDisruptionBudget")


def test_a_second_release_shares_no_name_with_the_kustomize_install(
    helm: Path, tmp_path: Path
) -> None:
    """Cluster-scoped objects carry the release's prefix; namespaced ones sit in its namespace."""
    installed = {
        (o["kind"], o["metadata"]["name"], o["metadata"].get("namespace"))
        for o in chart.kustomize()
        if o["kind"] != "CustomResourceDefinition"
    }
    second = chart.render(
        tmp_path, release="kinfer-e2e", namespace="kinfer-e2e", include_crds=False
    )
    names = {(o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")) for o in second}
    assert not names & installed
    cluster_scoped = [o for o in second if o["kind"].startswith("Cluster")]
    assert cluster_scoped and all(
        o["metadata"]["name"] == "kinfer-e2e-operator" for o in cluster_scoped
    )
    [binding] = by_kind(second, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "kinfer-e2e-operator", "namespace": "kinfer-e2e"}
    ]


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"replicas": "two"}, "replicas"),
        ({"replicas": 0}, "replicas"),
        ({"logFormat": "xml"}, "logFormat"),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"prometheus": {"url": "prometheus:9090"}}, "url"),
        ({"hfEndpoint": "huggingface.co"}, "hfEndpoint"),
        ({"watchNamespaces": ["Team_A"]}, "watchNamespaces"),
        ({"podMonitor": {"enabled": "yes"}}, "enabled"),
        ({"replica": 2}, "replica"),  # a typo: no such value
    ],
)
def test_the_values_schema_rejects_a_bad_value(
    helm: Path, tmp_path: Path, values: dict[str, Any], field: str
) -> None:
    flags = chart.value_flags(copy.deepcopy(values), tmp_path)
    out = chart.helm("template", "kinfer", str(chart.CHART), *flags, check=False)
    assert out.returncode != 0
    assert "values don't meet the specifications of the schema" in out.stderr, out.stderr
    assert field in out.stderr, out.stderr


def test_the_crds_folder_is_the_generated_crd() -> None:
    """crds/ links to crds/kinfer.dev_inferenceservices.yaml (`make crds`), so it cannot drift."""
    link = chart.CHART / "crds" / "kinfer.dev_inferenceservices.yaml"
    assert link.resolve() == (chart.REPO / "crds" / "kinfer.dev_inferenceservices.yaml").resolve()


def test_the_chart_packages_with_the_crd_inside(helm: Path, tmp_path: Path) -> None:
    """`helm package` follows the crds/ link: the archive carries the CRD itself."""
    chart.helm("package", str(chart.CHART), "--destination", str(tmp_path))
    [archive] = tmp_path.glob("kinfer-*.tgz")
    listing = subprocess.run(
        ["tar", "-tzf", str(archive)], capture_output=True, text=True, check=True
    )
    assert "kinfer/crds/kinfer.dev_inferenceservices.yaml" in listing.stdout.split()
    crd = subprocess.run(
        ["tar", "-xzOf", str(archive), "kinfer/crds/kinfer.dev_inferenceservices.yaml"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert yaml.safe_load(crd)["kind"] == "CustomResourceDefinition"
