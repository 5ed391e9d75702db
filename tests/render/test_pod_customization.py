"""Pod customization: pull secrets, priority, affinity, topology spread and pod metadata are
validated and rendered, beside kinfer's own GPU placement, labels and annotations."""

from __future__ import annotations

from typing import Any

import pytest

from kinfer.api import constants as c
from kinfer.api.model import parse
from kinfer.api.validation import validate_object
from kinfer.config import Images, RenderOptions
from kinfer.render import render

OPTIONS = RenderOptions(
    images=Images(triton="t", onnxruntime="o", onnxruntime_cuda="o-cuda", storage_initializer="r")
)
AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["infer"]}]}
            ]
        }
    },
    "podAntiAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {
                "weight": 10,
                "podAffinityTerm": {
                    "topologyKey": "kubernetes.io/hostname",
                    "labelSelector": {"matchLabels": {c.LABEL_ISVC: "mlp"}},
                },
            }
        ]
    },
}


def customized(minimal: dict[str, Any]) -> dict[str, Any]:
    minimal["spec"].update(
        imagePullSecrets=["registry-a", "registry-b"],
        priorityClassName="inference-high",
        affinity=AFFINITY,
        topologySpreadConstraints=[
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
            },
            {
                "maxSkew": 2,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"team": "a"}},
            },
        ],
        podMetadata={
            "labels": {"team": "a", "cost-center": "42"},
            "annotations": {"example.com/owner": "team-a", "sidecar.istio.io/inject": "false"},
        },
    )
    return minimal


def template(obj: dict[str, Any]) -> dict[str, Any]:
    [deployment] = [o for o in render(parse(obj), OPTIONS) if o["kind"] == "Deployment"]
    return deployment["spec"]["template"]


def errors(obj: dict[str, Any]) -> dict[str, str]:
    return {error.path: error.message for error in validate_object(obj)}


def test_every_field_reaches_the_pod(minimal: dict[str, Any]) -> None:
    pod = template(customized(minimal))
    spec = pod["spec"]
    assert spec["imagePullSecrets"] == [{"name": "registry-a"}, {"name": "registry-b"}]
    assert spec["priorityClassName"] == "inference-high"
    assert spec["affinity"] == AFFINITY
    zone, host = spec["topologySpreadConstraints"]
    # Without a labelSelector a constraint counts this service's pods; a given one is kept.
    assert zone["labelSelector"] == {"matchLabels": {c.LABEL_ISVC: "mlp"}}
    assert host["labelSelector"] == {"matchLabels": {"team": "a"}}
    assert pod["metadata"]["labels"]["team"] == "a"
    assert pod["metadata"]["labels"]["cost-center"] == "42"
    assert pod["metadata"]["annotations"]["example.com/owner"] == "team-a"


def test_kinfers_labels_and_annotations_stay_beside_the_users(minimal: dict[str, Any]) -> None:
    plain = template(minimal)["metadata"]
    custom = template(customized(minimal))["metadata"]
    assert set(plain["labels"]) == set(c.RESERVED_POD_LABELS)
    assert set(plain["annotations"]) == set(c.RESERVED_POD_ANNOTATIONS)
    for key in ("labels", "annotations"):
        assert plain[key].items() <= custom[key].items()


def test_absent_fields_render_nothing(minimal: dict[str, Any]) -> None:
    spec = template(minimal)["spec"]
    for key in ("imagePullSecrets", "priorityClassName", "affinity", "topologySpreadConstraints"):
        assert key not in spec


def test_gpu_placement_and_the_users_affinity_both_apply(minimal: dict[str, Any]) -> None:
    obj = customized(minimal)
    obj["spec"]["resources"] = {"gpus": 1, "gpuProduct": "NVIDIA-L4"}
    obj["spec"]["nodeSelector"] = {"pool": "infer"}
    obj["spec"]["tolerations"] = [{"key": "dedicated", "operator": "Exists"}]
    spec = template(obj)["spec"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4", "pool": "infer"}
    assert spec["affinity"] == AFFINITY
    assert [t["key"] for t in spec["tolerations"]] == ["nvidia.com/gpu", "dedicated"]


@pytest.mark.parametrize("key", c.RESERVED_POD_LABELS)
def test_pod_labels_may_not_set_kinfers(minimal: dict[str, Any], key: str) -> None:
    minimal["spec"]["podMetadata"] = {"labels": {key: "x"}}
    found = errors(minimal)
    assert list(found) == ["spec.podMetadata.labels"]
    assert key in found["spec.podMetadata.labels"]


@pytest.mark.parametrize("key", c.RESERVED_POD_ANNOTATIONS)
def test_pod_annotations_may_not_set_kinfers(minimal: dict[str, Any], key: str) -> None:
    minimal["spec"]["podMetadata"] = {"annotations": {key: "x"}}
    assert list(errors(minimal)) == ["spec.podMetadata.annotations"]


def test_bad_keys_and_values_name_their_path(minimal: dict[str, Any]) -> None:
    minimal["spec"]["podMetadata"] = {
        "labels": {"-bad": "ok", "good": "not ok!"},
        "annotations": {"Bad Key/x": "any value at all"},
    }
    found = errors(minimal)
    # A bad value is the schema's (the API server's) finding; keys are checked by kinfer after.
    assert "spec.podMetadata.labels.good" in found
    del minimal["spec"]["podMetadata"]["labels"]["good"]
    assert set(errors(minimal)) == {
        "spec.podMetadata.labels[-bad]",
        "spec.podMetadata.annotations[Bad Key/x]",
    }


def test_structural_errors_name_their_path(minimal: dict[str, Any]) -> None:
    minimal["spec"].update(
        imagePullSecrets=["Not_A_Name"],
        priorityClassName="UPPER",
        topologySpreadConstraints=[{"maxSkew": 0, "topologyKey": "zone"}],
    )
    assert {
        "spec.imagePullSecrets[0]",
        "spec.priorityClassName",
        "spec.topologySpreadConstraints[0].maxSkew",
        "spec.topologySpreadConstraints[0].whenUnsatisfiable",
    } <= set(errors(minimal))
