"""Status and conditions: true to the Deployment, stable when nothing changes."""

from __future__ import annotations

from kinfer.api.model import parse
from kinfer.api.validation import validate_object
from kinfer.capacity import CapacityReport
from kinfer.controller.kube import matches
from kinfer.controller.status import (
    invalid_spec_conditions,
    merge_conditions,
    service_status,
)

NO_GPU = CapacityReport(None, 0, 0, 0, 0, 0, 1)


def deployment(replicas=1, ready=1, updated=1, generation=1, observed=1):
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "replicas": replicas,
            "readyReplicas": ready,
            "updatedReplicas": updated,
            "observedGeneration": observed,
        },
    }


def conditions_of(isvc, dep, capacity=NO_GPU):
    _, conditions = service_status(
        isvc, dep, capacity, cluster_domain="cluster.local", node_selector={}
    )
    return {cond.type: cond for cond in conditions}


def test_status_fields(minimal):
    fields, _ = service_status(
        parse(minimal), deployment(), NO_GPU, cluster_domain="cluster.local", node_selector={}
    )
    assert fields["observedGeneration"] == 3
    assert fields["selector"] == "kinfer.dev/inferenceservice=mlp"
    assert fields["url"] == "http://mlp.team-a.svc.cluster.local:8000"
    assert (fields["replicas"], fields["readyReplicas"]) == (1, 1)


def test_active_tier_has_one_writer(minimal):
    # One tier: the reconcile says it serves. Switchable tiers: only the control loop does,
    # once the Ready pods serve one (controller.control_loop.tier_period).
    def fields_for(tiers):
        spec = dict(minimal["spec"])
        if tiers:
            spec.update(model={}, precision={"tiers": tiers})
        body = {**minimal, "spec": spec}
        fields, _ = service_status(
            parse(body), deployment(), NO_GPU, cluster_domain="cluster.local", node_selector={}
        )
        return fields

    fp32 = {"name": "fp32", "storageUri": "s3://models/mlp/fp32"}
    int8 = {"name": "int8", "storageUri": "s3://models/mlp/int8"}
    assert fields_for([fp32])["activeTier"] == "fp32"
    assert "activeTier" not in fields_for([fp32, int8])
    assert "activeTier" not in fields_for([])


def test_ready_when_all_replicas_ready_and_rolled_out(minimal):
    ready = conditions_of(parse(minimal), deployment())["Ready"]
    assert (ready.status, ready.reason) == ("True", "Available")


def test_not_ready_while_progressing_or_rolling_out(minimal):
    isvc = parse(minimal)
    assert conditions_of(isvc, deployment(ready=0))["Ready"].reason == "Progressing"
    assert conditions_of(isvc, deployment(generation=2, observed=1))["Ready"].status == "False"
    assert conditions_of(isvc, None)["Ready"].reason == "Creating"


def test_insufficient_gpus_is_said_in_conditions(minimal):
    minimal["spec"]["replicas"] = 3
    isvc = parse(minimal)
    short = CapacityReport("nvidia.com/gpu", 1, 1, 0, 0, 1, 3)
    conds = conditions_of(isvc, deployment(replicas=3, ready=1), short)
    assert conds["GPUCapacityAvailable"].status == "False"
    assert conds["GPUCapacityAvailable"].reason == "InsufficientGPUs"
    assert conds["Ready"].reason == "InsufficientGPUs"


def test_invalid_spec_conditions_carry_the_field_path(minimal):
    minimal["spec"]["resources"] = {"gpus": -3}
    conds = {c.type: c for c in invalid_spec_conditions(validate_object(minimal))}
    assert conds["SpecValid"].status == "False"
    assert "spec.resources.gpus" in conds["Ready"].message


def test_merge_keeps_transition_time_when_status_is_unchanged(minimal):
    isvc = parse(minimal)
    first = merge_conditions(
        None, list(conditions_of(isvc, deployment()).values()), 3, "2026-01-01T00:00:00Z"
    )
    again = merge_conditions(
        first, list(conditions_of(isvc, deployment()).values()), 3, "2026-01-01T00:05:00Z"
    )
    assert again == first
    changed = merge_conditions(
        first, list(conditions_of(isvc, deployment(ready=0)).values()), 3, "2026-01-01T00:09:00Z"
    )
    ready = next(c for c in changed if c["type"] == "Ready")
    assert ready["lastTransitionTime"] == "2026-01-01T00:09:00Z"
    spec_valid = next(c for c in changed if c["type"] == "SpecValid")
    assert spec_valid["lastTransitionTime"] == "2026-01-01T00:00:00Z"


def test_merge_keeps_conditions_owned_by_other_loops():
    other = [{"type": "AutoscalingActive", "status": "True", "reason": "X", "message": "m"}]
    merged = merge_conditions(other, [], None, "t")
    assert merged == other


def test_matches_ignores_server_added_fields_and_normalises_scalars():
    desired = {"spec": {"replicas": 2, "resources": {"limits": {"cpu": "1", "nvidia.com/gpu": 1}}}}
    live = {
        "metadata": {"resourceVersion": "9"},
        "spec": {
            "replicas": 2,
            "progressDeadlineSeconds": 600,
            "resources": {"limits": {"cpu": "1000m", "nvidia.com/gpu": "1"}},
        },
    }
    assert matches(desired, live)
    live["spec"]["replicas"] = 3
    assert not matches(desired, live)
    assert not matches({"a": [1, 2]}, {"a": [1]})
    assert not matches({"a": True}, {"a": "1"})
    # The API server drops empty lists: "env": [] is what it stored.
    assert matches({"spec": {"env": [], "x": 1}}, {"spec": {"x": 1}})
    assert not matches({"spec": {"env": [{"name": "A"}]}}, {"spec": {}})


def test_each_loop_writes_only_its_own_conditions_into_the_live_list():
    from kinfer.controller.status import (
        CONTROL_LOOP_CONDITIONS,
        RECONCILE_CONDITIONS,
        merge_owned,
    )

    live = [
        {"type": "Ready", "status": "True"},
        {"type": "MetricsAvailable", "status": "True", "reason": "MetricsRead"},
    ]
    # The reconcile computed its list from an older read (metrics then unavailable).
    stale = [
        {"type": "Ready", "status": "False", "reason": "Progressing"},
        {"type": "SpecValid", "status": "True"},
        {"type": "MetricsAvailable", "status": "False", "reason": "PrometheusUnavailable"},
    ]
    merged = merge_owned(live, stale, RECONCILE_CONDITIONS)
    assert [(item["type"], item["status"]) for item in merged] == [
        ("Ready", "False"),
        ("SpecValid", "True"),
        ("MetricsAvailable", "True"),
    ]
    assert RECONCILE_CONDITIONS.isdisjoint(CONTROL_LOOP_CONDITIONS)
