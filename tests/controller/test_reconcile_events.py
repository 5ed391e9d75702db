"""A reconcile's Events: one per action, naming every child it created or updated."""

from __future__ import annotations

from kinfer.config import RenderOptions
from kinfer.controller.cache import CachedKube, informers
from kinfer.controller.reconcile import reconcile
from tests.conftest import load_sample
from tests.controller.test_cache import recording_kube


def test_creating_the_children_is_one_event_that_names_them_all():
    kube, api = recording_kube()
    caches = informers(kube)
    for cache in caches:
        cache.synced.set()  # empty: every child is new
    body = load_sample("onnxruntime-cpu.yaml")
    body["metadata"].update(namespace="team-a", uid="u-1", generation=1)
    name = body["metadata"]["name"]
    outcome = reconcile(body, CachedKube(kube, caches), RenderOptions())
    applies = [kind for verb, kind in api.calls if verb == "server_side_apply"]
    assert sorted(applies) == ["ConfigMap", "Deployment", "Service"]
    created = [e for e in outcome.events if e.reason == "Created"]
    assert len(created) == 1, outcome.events
    for kind in applies:
        assert f"{kind} {name}" in created[0].message
    assert created[0].message.startswith("created ")
