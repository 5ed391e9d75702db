"""`checked`: validation and parsing once per distinct content, never a stale answer."""

from __future__ import annotations

import copy

from kinfer.api.model import checked, parse
from tests.conftest import load_sample


def test_the_same_content_is_checked_once_and_a_copy_hits_the_cache():
    body = load_sample("onnxruntime-cpu.yaml")
    body["metadata"].update(namespace="team-a", uid="u-1", generation=1)
    errors, isvc = checked(body)
    assert errors == [] and isvc == parse(body)
    again = checked(copy.deepcopy(body))
    assert again[1] is isvc, "an equal object (a later watch event) reuses the parsed model"


def test_any_change_that_parsing_reads_is_checked_afresh_even_under_the_same_uid():
    body = load_sample("onnxruntime-cpu.yaml")
    body["metadata"].update(namespace="team-a", uid="u-2", generation=1)
    _, before = checked(body)
    renamed = copy.deepcopy(body)
    renamed["metadata"]["name"] = "other"
    assert checked(renamed)[1].name == "other"
    annotated = copy.deepcopy(body)
    annotated["metadata"]["annotations"] = {"kinfer.dev/note": "x"}
    assert checked(annotated)[1].annotations == {"kinfer.dev/note": "x"}
    body["status"] = {"readyReplicas": 3}
    body["metadata"]["resourceVersion"] = "99"
    assert checked(body)[1] is before, "status or other metadata do not matter"


def test_an_invalid_spec_gives_its_errors_and_no_model_every_time():
    body = load_sample("onnxruntime-cpu.yaml")
    body["metadata"].update(namespace="team-a", uid="u-3", generation=2)
    body["spec"]["replicas"] = -1
    for _ in range(2):
        errors, isvc = checked(body)
        assert isvc is None
        assert any("replicas" in e.path for e in errors)


def test_a_body_that_is_not_json_shaped_is_still_validated():
    errors, isvc = checked({"metadata": {"name": object()}, "spec": {}})
    assert isvc is None and errors
