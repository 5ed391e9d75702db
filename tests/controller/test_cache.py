"""Watch caches: what an informer stores, what CachedKube serves from it, and that a
steady-state tick reads nothing from the API server (only writes what changed)."""

from __future__ import annotations

import json
from typing import Any

from kinfer.api import constants as c
from kinfer.api.model import parse
from kinfer.autoscale.metrics import Wanted
from kinfer.autoscale.observation import Observation
from kinfer.config import RenderOptions
from kinfer.controller import handlers
from kinfer.controller.cache import CachedKube, Informer, informers, parse_selector
from kinfer.controller.kube import Kube, OwnWrites
from kinfer.render import render
from tests.conftest import load_sample


class Resource:
    """A dynamic-client resource that records every request made through it."""

    def __init__(self, calls: list[tuple[str, str]], kind: str) -> None:
        self.calls, self.kind = calls, kind
        self.status = self

    def __getattr__(self, verb: str) -> Any:
        def request(*args: Any, **kwargs: Any) -> Empty:
            self.calls.append((verb, self.kind))
            return Empty()

        return request


class Empty:
    """An empty answer: no object, no items."""

    items: list[Any] = []
    data = b"{}"

    def to_dict(self) -> dict[str, Any]:
        return {"items": []}

    # A write's unread answer (urllib3's HTTPResponse): the operator hands its connection back.
    def drain_conn(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


class RecordingAPI:
    """Stands where the dynamic client's resources are: every request is recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.resources = self

    def get(self, api_version: str, kind: str) -> Resource:
        return Resource(self.calls, kind)


def recording_kube() -> tuple[Kube, RecordingAPI]:
    kube = Kube.__new__(Kube)
    api = RecordingAPI()
    kube.dynamic = api
    kube.own_writes = OwnWrites()
    return kube, api


def node(name: str, gpus: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {}},
        "spec": {},
        "status": {
            "allocatable": {"nvidia.com/gpu": str(gpus), "cpu": "8"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def pod(name: str, namespace: str, labels: dict[str, str], gpus: int = 0) -> dict[str, Any]:
    resources = {"requests": {"cpu": "1"}}
    if gpus:
        resources["limits"] = {"nvidia.com/gpu": str(gpus)}
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"nodeName": "gpu-0", "containers": [{"name": "c", "resources": resources}]},
        "status": {"phase": "Running"},
    }


def test_equality_selectors_parse_and_others_do_not():
    assert parse_selector(None) == {}
    assert parse_selector("a=b, c = d") == {"a": "b", "c": "d"}
    for other in ("a!=b", "a==b", "a", "a in (b)", "=b"):
        assert parse_selector(other) is None, other


def test_an_informer_follows_events_and_keeps_only_what_it_should():
    kube, _ = recording_kube()
    pods = next(i for i in informers(kube) if i.kind == "Pod")
    pods.apply("ADDED", pod("web", "apps", {"app": "web"}))  # neither labelled nor a GPU
    pods.apply("ADDED", pod("trainer", "ml", {}, gpus=2))
    pods.apply("ADDED", pod("mlp-1", "team-a", {c.LABEL_ISVC: "mlp"}))
    assert sorted(name for _, name in pods.objects) == ["mlp-1", "trainer"]
    pods.apply("MODIFIED", pod("trainer", "ml", {}, gpus=0))  # no longer holds a GPU
    pods.apply("DELETED", pod("mlp-1", "team-a", {c.LABEL_ISVC: "mlp"}))
    assert pods.objects == {}


def test_a_list_of_one_services_children_reads_its_index_and_agrees_with_a_scan():
    kube, _ = recording_kube()
    pods = next(i for i in informers(kube) if i.kind == "Pod")
    pods.apply("ADDED", pod("mlp-1", "team-a", {c.LABEL_ISVC: "mlp", "tier": "1"}))
    pods.apply("ADDED", pod("mlp-2", "team-a", {c.LABEL_ISVC: "mlp"}))
    pods.apply("ADDED", pod("mlp-3", "team-b", {c.LABEL_ISVC: "mlp"}))  # another namespace
    pods.apply("ADDED", pod("bert-1", "team-a", {c.LABEL_ISVC: "bert"}))
    # Relabelled to another service: it moves in the index.
    pods.apply("MODIFIED", pod("mlp-2", "team-a", {c.LABEL_ISVC: "bert"}))

    def names(namespace: str, labels: dict[str, str]) -> list[str]:
        return sorted(p["metadata"]["name"] for p in pods.list(namespace, labels))

    def scanned(namespace: str, labels: dict[str, str]) -> list[str]:
        return sorted(
            name
            for (ns, name), obj in pods.objects.items()
            if ns == namespace and labels.items() <= obj["metadata"]["labels"].items()
        )

    for labels in (
        {c.LABEL_ISVC: "mlp"},
        {c.LABEL_ISVC: "bert"},
        {c.LABEL_ISVC: "mlp", "tier": "1"},
    ):
        assert names("team-a", labels) == scanned("team-a", labels), labels
    assert names("team-a", {c.LABEL_ISVC: "mlp"}) == ["mlp-1"]
    assert names("team-a", {c.LABEL_ISVC: "bert"}) == ["bert-1", "mlp-2"]
    pods.apply("DELETED", pod("bert-1", "team-a", {c.LABEL_ISVC: "bert"}))
    pods.apply("DELETED", pod("mlp-2", "team-a", {c.LABEL_ISVC: "bert"}))
    assert names("team-a", {c.LABEL_ISVC: "bert"}) == []
    assert ("team-a", "bert") not in pods.by_isvc, "an emptied entry goes"


def test_cached_kube_serves_synced_caches_and_reads_through_the_rest():
    kube, api = recording_kube()
    caches = informers(kube)
    cached = CachedKube(kube, caches)
    isvcs = next(i for i in caches if i.kind == c.KIND)
    isvcs.apply("ADDED", {"metadata": {"name": "mlp", "namespace": "team-a"}})
    # Not synced yet: read through.
    cached.get(c.API_VERSION, c.KIND, "team-a", "mlp")
    assert api.calls == [("get", c.KIND)]
    for cache in caches:
        cache.synced.set()
    found = cached.get(c.API_VERSION, c.KIND, "team-a", "mlp")
    assert found["metadata"]["name"] == "mlp" and found["kind"] == c.KIND
    found["metadata"]["name"] = "changed"  # a copy: the cache is not touched
    assert cached.peek(c.API_VERSION, c.KIND, "team-a", "mlp")["metadata"]["name"] == "mlp"
    assert cached.get(c.API_VERSION, c.KIND, "team-a", "other") is None
    pods = next(i for i in caches if i.kind == "Pod")
    pods.apply("ADDED", pod("mlp-1", "team-a", {c.LABEL_ISVC: "mlp"}))
    selector = f"{c.LABEL_ISVC}=mlp"
    assert [p["metadata"]["name"] for p in cached.list("v1", "Pod", "team-a", selector)] == [
        "mlp-1"
    ]
    assert cached.list("v1", "Pod", "team-b", selector) == []
    # peek_list: the stored objects themselves; list: copies.
    [stored] = cached.peek_list("v1", "Pod", "team-a", selector)
    assert stored is pods.objects[("team-a", "mlp-1")]
    assert cached.list("v1", "Pod", "team-a", selector)[0] is not stored
    pods.apply("ADDED", pod("trainer", "ml", {}, gpus=2))
    _, gpu_pods = cached.gpu_view()
    assert [p["metadata"]["name"] for p in gpu_pods] == ["trainer"]
    calls = len(api.calls)
    # The pod cache is not every pod: a list it cannot answer in full goes to the API server.
    cached.list("v1", "Pod", "apps", "app=web")
    cached.list("v1", "Pod", "team-a", f"{c.LABEL_ISVC}!=mlp")
    cached.list("v1", "Secret", "team-a")
    assert api.calls[calls:] == [("get", "Pod"), ("get", "Pod"), ("get", "Secret")]


def test_namespaced_caches_cover_only_their_namespaces():
    kube, api = recording_kube()
    caches = informers(kube, ["team-a"])
    for cache in caches:
        cache.synced.set()
    cached = CachedKube(kube, caches)
    assert cached.get(c.API_VERSION, c.KIND, "team-a", "x") is None
    assert api.calls == []
    cached.get(c.API_VERSION, c.KIND, "team-b", "x")
    assert api.calls == [("get", c.KIND)]


class Reader:
    def observe_all(self, wanted: list[Wanted]) -> dict:
        return {w.key: Observation(qps=1.0, latency_p95_ms=20.0, pods_reporting=1) for w in wanted}

    def observe(self, *args: Any, **kwargs: Any) -> Observation:
        raise AssertionError("the scheduler reads every decision in one batch")


def test_a_steady_state_tick_sends_no_read_to_the_api_server():
    """A GPU service at its steady state: decisions and resyncs read the InferenceService, its
    children, its pods, the Nodes and the GPU pods from the caches, never from the API."""
    kube, api = recording_kube()
    body = load_sample("triton-gpu.yaml")
    body["metadata"].update(namespace="team-a", uid="u-1", generation=1, resourceVersion="1")
    body["spec"]["scaling"] = {"targetQPSPerReplica": 50, "minReplicas": 1, "maxReplicas": 2}
    body["spec"]["replicas"] = 1
    name = body["metadata"]["name"]
    caches = informers(kube)
    by_kind = {cache.kind: cache for cache in caches}
    by_kind[c.KIND].apply("ADDED", body)
    options = RenderOptions()
    for child in render(parse(body), options):
        child.setdefault("status", {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1})
        by_kind[child["kind"]].apply("ADDED", child)
    by_kind["Pod"].apply("ADDED", pod(f"{name}-1", "team-a", {c.LABEL_ISVC: name}, gpus=1))
    by_kind["Node"].apply("ADDED", node("gpu-0", 4))
    for cache in caches:
        cache.synced.set()
    memo = handlers.operator_memo(CachedKube(kube, caches), options, Reader(), caches)
    memo.scheduler.observe("ADDED", body)
    entry = memo.scheduler.entries[("team-a", name)]

    def tick(resync: bool) -> None:
        entry.memory.last_decision_s = 0.0  # a decision is due every tick
        planned = memo.scheduler.plan(("team-a", name), entry.memory)
        assert planned is not None and planned.wanted is not None
        entry.memory.observation = Reader().observe_all([planned.wanted])[planned.wanted.key]
        memo.scheduler.tick(("team-a", name), entry.memory, resync)

    for resync in (True, False, True, False):
        tick(resync)
    reads = [call for call in api.calls if call[0] in ("get", "list")]
    assert reads == [], f"a steady-state tick read from the API server: {reads}"
    # It did decide and write: the status patches and the Events are the only requests.
    assert api.calls and {verb for verb, _ in api.calls} <= {"patch", "create"}, api.calls


def test_an_informer_error_event_makes_it_list_again():
    kube, _ = recording_kube()
    nodes = Informer(kube, "v1", "Node")
    try:
        nodes.apply("ERROR", {"code": 410, "message": "too old resource version"})
    except Exception as error:
        assert getattr(error, "status", None) == 410
    else:
        raise AssertionError("an ERROR event must end the watch")


def test_a_child_edited_deleted_or_created_makes_its_service_resync_and_status_does_not():
    kube, _ = recording_kube()
    caches = informers(kube)
    memo = handlers.operator_memo(CachedKube(kube, caches), RenderOptions(), None, caches)
    memo.scheduler.observe("ADDED", {"metadata": {"namespace": "team-a", "name": "mlp"}})
    entry = memo.scheduler.entries[("team-a", "mlp")]
    by_kind = {cache.kind: cache for cache in caches}
    assert by_kind["Node"].on_change is None

    def deployment(replicas: int, ready: int, version: str) -> dict[str, Any]:
        meta = {"namespace": "team-a", "name": "mlp", "labels": {c.LABEL_ISVC: "mlp"}}
        return {
            "metadata": {**meta, "resourceVersion": version, "generation": replicas},
            "spec": {"replicas": replicas},
            "status": {"readyReplicas": ready},
        }

    def resync_due(event: str, obj: dict[str, Any]) -> bool:
        entry.next_resync_s = 1e12
        by_kind["Deployment"].apply(event, obj)
        return [w.resync for w in memo.scheduler.due() if w.key == ("team-a", "mlp")] == [True]

    assert resync_due("ADDED", deployment(2, 0, "1"))
    assert not resync_due("MODIFIED", deployment(2, 1, "2")), "status and bookkeeping only"
    assert not resync_due("MODIFIED", deployment(2, 2, "3"))
    assert resync_due("MODIFIED", deployment(5, 2, "4")), "edited by hand"
    assert resync_due("DELETED", deployment(5, 2, "5"))
    # A child of a service the operator does not know is nobody's business.
    other = deployment(1, 1, "6")
    other["metadata"]["labels"] = {c.LABEL_ISVC: "unknown"}
    by_kind["Deployment"].apply("ADDED", other)
    assert ("team-a", "unknown") not in memo.scheduler.entries


def test_a_pod_that_starts_failing_makes_its_service_resync_and_its_other_updates_do_not():
    kube, _ = recording_kube()
    caches = informers(kube)
    memo = handlers.operator_memo(CachedKube(kube, caches), RenderOptions(), None, caches)
    memo.scheduler.observe("ADDED", {"metadata": {"namespace": "team-a", "name": "mlp"}})
    entry = memo.scheduler.entries[("team-a", "mlp")]
    pods = next(cache for cache in caches if cache.kind == "Pod")

    def pod(version: str, waiting: str | None = None, deleting: bool = False) -> dict[str, Any]:
        meta = {"namespace": "team-a", "name": "mlp-1", "labels": {c.LABEL_ISVC: "mlp"}}
        if deleting:
            meta["deletionTimestamp"] = "2026-12-07T00:00:00Z"
        state = {"waiting": {"reason": waiting, "message": "back-off"}} if waiting else {}
        init = [{"name": "fetch-1", "state": state}]
        return {
            "metadata": {**meta, "resourceVersion": version},
            "status": {"initContainerStatuses": init},
        }

    def resync_due(event: str, obj: dict[str, Any]) -> bool:
        entry.next_resync_s = 1e12
        pods.apply(event, obj)
        return [w.resync for w in memo.scheduler.due() if w.key == ("team-a", "mlp")] == [True]

    assert not resync_due("ADDED", pod("1")), "a pod starting"
    assert resync_due("MODIFIED", pod("2", "CreateContainerConfigError")), "its fetch fails"
    assert not resync_due("MODIFIED", pod("3", "CreateContainerConfigError")), "the same failure"
    assert resync_due("MODIFIED", pod("4", "ImagePullBackOff")), "another failure"
    assert not resync_due("DELETED", pod("5", "ImagePullBackOff", deleting=True))


def test_a_deployment_status_change_makes_its_service_report_status_once():
    """Its pods came or went: the service's next tick (not a resync) writes its status, once
    for however many changes came before it; a change of bookkeeping alone is no change."""
    kube, api = recording_kube()
    caches = informers(kube)
    by_kind = {cache.kind: cache for cache in caches}
    body = load_sample("onnxruntime-cpu.yaml")
    body["metadata"].update(namespace="team-a", generation=1, resourceVersion="1")
    body["status"] = {"observedGeneration": 1}
    key = ("team-a", body["metadata"]["name"])
    by_kind[c.KIND].apply("ADDED", body)
    options = RenderOptions()
    [deployment] = [o for o in render(parse(body), options) if o["kind"] == "Deployment"]
    deployment["status"] = {"replicas": 1, "readyReplicas": 0, "updatedReplicas": 1}
    deployment["metadata"]["resourceVersion"] = "10"
    by_kind["Deployment"].apply("ADDED", deployment)
    for cache in caches:
        cache.synced.set()
    memo = handlers.operator_memo(CachedKube(kube, caches), options, None, caches)
    memo.scheduler.observe("ADDED", body)
    entry = memo.scheduler.entries[key]
    entry.next_resync_s = 1e12

    def apply(version: str, ready: int) -> None:
        changed = {**deployment, "metadata": {**deployment["metadata"], "resourceVersion": version}}
        by_kind["Deployment"].apply(
            "MODIFIED", {**changed, "status": {**changed["status"], "readyReplicas": ready}}
        )

    def due() -> list[bool]:
        return [w.resync for w in memo.scheduler.due() if w.key == key]

    apply("11", 0)
    assert due() == [], "bookkeeping only"
    apply("12", 1)
    apply("13", 2)
    assert due() == [False], "one tick for two changes, and not a resync"
    assert entry.memory.status_stale
    memo.scheduler.tick(key, entry.memory, False)
    assert not entry.memory.status_stale
    assert ("patch", c.KIND) in api.calls, "the tick reported the status"
    assert due() == [], "reported: nothing due until the next change"


def test_every_event_of_an_inference_service_makes_the_scheduler_plan_it_again():
    kube, _ = recording_kube()
    caches = informers(kube)
    memo = handlers.operator_memo(CachedKube(kube, caches), RenderOptions(), None, caches)
    meta = {"namespace": "team-a", "name": "mlp"}
    memo.scheduler.observe("ADDED", {"metadata": meta})
    entry = memo.scheduler.entries[("team-a", "mlp")]
    isvcs = next(cache for cache in caches if cache.kind == c.KIND)
    before = entry.changes
    isvcs.apply("MODIFIED", {"metadata": {**meta, "resourceVersion": "2"}, "spec": {}})
    # Status alone counts: a rejected spec (SpecValid=False) is in status.
    isvcs.apply(
        "MODIFIED", {"metadata": {**meta, "resourceVersion": "3"}, "spec": {}, "status": {}}
    )
    assert entry.changes == before + 2


class Listing:
    """A resource whose list answers with `items` (the JSON as the API server sends it)."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def get(self, **_: Any) -> Any:
        data = json.dumps({"metadata": {"resourceVersion": "99"}, "items": self.items})
        return type("Answer", (), {"data": data.encode()})()


def test_a_relist_makes_each_service_whose_children_changed_meanwhile_report_or_resync(
    monkeypatch,
):
    """What a broken watch missed reaches the scheduler when the informer lists again."""
    kube, _ = recording_kube()
    caches = informers(kube)
    by_kind = {cache.kind: cache for cache in caches}
    memo = handlers.operator_memo(CachedKube(kube, caches), RenderOptions(), None, caches)

    def deployment(name: str, ready: int) -> dict[str, Any]:
        meta = {"namespace": "team-a", "name": name, "labels": {c.LABEL_ISVC: name}}
        return {"metadata": meta, "spec": {"replicas": 1}, "status": {"readyReplicas": ready}}

    names = ("same", "ready", "gone")
    for name in names:
        memo.scheduler.observe("ADDED", {"metadata": {"namespace": "team-a", "name": name}})
        memo.scheduler.entries[("team-a", name)].next_resync_s = 1e12
    listing = Listing([deployment(name, 0) for name in names])
    monkeypatch.setattr(by_kind["Deployment"], "_resource", lambda: listing)
    by_kind["Deployment"]._list()
    assert not any(e.memory.status_stale for e in memo.scheduler.entries.values())
    assert memo.scheduler.due() == [], "the first list tells nothing"

    listing.items = [deployment("same", 0), deployment("ready", 1)]
    by_kind["Deployment"]._list()
    due = {w.key[1]: (w.resync, w.entry.memory.status_stale) for w in memo.scheduler.due()}
    assert due == {"ready": (False, True), "gone": (True, False)}
