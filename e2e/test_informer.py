"""The operator's watch caches against a real API server: list, then watch from where the
list left off; a closed watch resumes from its last resourceVersion without listing again."""

from __future__ import annotations

import logging
import threading

import pytest
from kubernetes.client.exceptions import ApiException

from e2e.harness import Cluster, wait_for
from kinfer.api import constants as c
from kinfer.controller import cache
from kinfer.controller.kube import Kube, load_api_client
from kinfer.controller.status import CONTROL_LOOP_CONDITIONS, RECONCILE_CONDITIONS


def _config_map(namespace: str, name: str, value: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {c.LABEL_ISVC: "mlp"}},
        "data": {"value": value},
    }


def test_an_informer_lists_watches_and_resumes_a_closed_watch(
    cluster: Cluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster.apply(_config_map(namespace, "before", "1"))
    # The server closes each watch after 2 s: the informer must watch again from where it was.
    monkeypatch.setattr(cache, "WATCH_TIMEOUT_S", 2)
    kube = Kube(load_api_client(str(cluster.kubeconfig)))
    informer = cache.Informer(kube, "v1", "ConfigMap", namespace, label=c.LABEL_ISVC)
    lists = []
    listing = informer._list
    monkeypatch.setattr(informer, "_list", lambda: lists.append(1) or listing())
    changed: list[str] = []
    informer.on_change = lambda obj: changed.append(obj["metadata"]["name"])
    stop = threading.Event()
    [thread] = cache.start([informer], stop)
    try:
        wait_for("the first list", informer.synced.is_set, 60)
        assert set(informer.objects) == {(namespace, "before")}
        stored = informer.objects[(namespace, "before")]
        assert "managedFields" not in stored["metadata"], "stored slim"
        assert stored["kind"] == "ConfigMap"

        cluster.apply(_config_map(namespace, "after", "1"))
        wait_for("the created one", lambda: (namespace, "after") in informer.objects, 60)
        # Past a few closed watches: the edit and the deletion still arrive, with no new list.
        wait_for("two closed watches", lambda: _watches(informer) >= 3, 60)
        cluster.apply(_config_map(namespace, "after", "2"))
        wait_for(
            "the edit",
            lambda: informer.get(namespace, "after")["data"] == {"value": "2"},
            60,
        )
        cluster.kubectl("delete", "configmap", "before", "-n", namespace)
        wait_for("the deletion", lambda: (namespace, "before") not in informer.objects, 60)
        assert lists == [1], "a watch closed by the server resumes; it does not list again"
        assert changed == ["after", "after", "before"]
        # Handed out copies: changing one leaves the store as it was.
        copy = informer.get(namespace, "after")
        copy["data"]["value"] = "changed here"
        assert informer.objects[(namespace, "after")]["data"] == {"value": "2"}
    finally:
        stop.set()
        thread.join(timeout=10)


def _watches(informer: cache.Informer) -> int:
    return informer.watches


def test_a_list_after_a_broken_watch_tells_what_changed_while_it_was_away(
    cluster: Cluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("stays", "edited", "deleted"):
        cluster.apply(_config_map(namespace, name, "1"))
    kube = Kube(load_api_client(str(cluster.kubeconfig)))
    informer = cache.Informer(kube, "v1", "ConfigMap", namespace, label=c.LABEL_ISVC)
    told: list[str] = []
    informer.on_change = lambda obj: told.append(obj["metadata"]["name"])
    # The first watch breaks (an API server restart) and stays away until `back`: the
    # informer then lists again and has seen none of the events between.
    away, back, watching = threading.Event(), threading.Event(), informer._watch

    def broken_once(version: str, stop: threading.Event) -> str:
        if not away.is_set():
            away.set()
            back.wait(120)
            raise ApiException(status=410, reason="Gone")
        return watching(version, stop)

    monkeypatch.setattr(informer, "_watch", broken_once)
    stop = threading.Event()
    [thread] = cache.start([informer], stop)
    try:
        wait_for("the first list, and the watch gone", away.is_set, 60)
        assert told == [], "the first list tells nothing: the operator starts on every object"
        cluster.apply(_config_map(namespace, "edited", "2"))
        cluster.kubectl("delete", "configmap", "deleted", "-n", namespace)
        cluster.apply(_config_map(namespace, "new", "1"))
        back.set()
        wait_for("the list after the broken watch", lambda: len(told) >= 3, 60)
        assert sorted(told) == ["deleted", "edited", "new"]
        assert informer.get(namespace, "edited")["data"] == {"value": "2"}
        assert set(informer.objects) == {(namespace, n) for n in ("stays", "edited", "new")}
    finally:
        back.set()
        stop.set()
        thread.join(timeout=10)


def test_concurrent_calls_keep_their_connections(
    cluster: Cluster, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    # As many threads as the operator runs at once. A pool smaller than that closes the
    # connections it cannot keep ("Connection pool is full, discarding connection"), and the
    # next calls open new ones: a TLS handshake each.
    api = load_api_client(str(cluster.kubeconfig))
    kube = Kube(api)
    threads = 48
    barrier = threading.Barrier(threads)

    def call() -> None:
        barrier.wait()
        kube.list("v1", "ConfigMap", namespace)

    with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"):
        workers = [threading.Thread(target=call) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
    assert not any(worker.is_alive() for worker in workers)
    pool = api.rest_client.pool_manager.connection_from_url(api.configuration.host)
    assert pool.num_connections > 1, "the calls ran one after another"
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]


def test_writes_give_their_connection_back(cluster: Cluster, namespace: str) -> None:
    # A write whose answer is not read (serialize=False) kept its connection out of the pool,
    # and the next call opened a new one: a TLS handshake per status patch, apply and Event.
    cluster.apply(_config_map(namespace, "written", "0"))
    api = load_api_client(str(cluster.kubeconfig))
    kube = Kube(api)
    kube.get("v1", "ConfigMap", namespace, "written")
    pool = api.rest_client.pool_manager.connection_from_url(api.configuration.host)
    opened = pool.num_connections
    for value in range(1, 6):
        kube.apply(_config_map(namespace, "written", str(value)))
        kube.post_event(
            cluster.get("configmap", "written", "-n", namespace), "Normal", "Written", str(value)
        )
    assert kube.get("v1", "ConfigMap", namespace, "written")["data"] == {"value": "5"}
    assert pool.num_connections == opened, "each write opened a connection of its own"


def _condition(kind: str, status: str = "True") -> dict[str, str]:
    return {"type": kind, "status": status, "reason": "Test", "message": kind}


def test_status_writes_on_a_lagging_cache_build_on_the_operators_own_last_write(
    cluster: Cluster, crd: None, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster.apply(
        {
            "apiVersion": c.API_VERSION,
            "kind": c.KIND,
            "metadata": {"name": "mlp", "namespace": namespace},
            "spec": {
                "runtime": "onnxruntime",
                "model": {"name": "mlp", "storageUri": "http://127.0.0.1:9/model.onnx"},
            },
        }
    )
    kube = Kube(load_api_client(str(cluster.kubeconfig)))
    # A cache that holds the object as created and never hears of a write after.
    isvcs = cache.Informer(kube, c.API_VERSION, c.KIND, namespace)
    isvcs.apply("ADDED", kube.get(c.API_VERSION, c.KIND, namespace, "mlp"))
    isvcs.synced.set()
    cached = cache.CachedKube(kube, [isvcs])
    fresh: list[str] = []
    read_fresh = cached.get_fresh
    monkeypatch.setattr(
        cached, "get_fresh", lambda *args: fresh.append(args[-1]) or read_fresh(*args)
    )
    # When the suite's operator runs, it writes this object too: a conflict may then be its
    # doing. What this test pins is that each first attempt builds on this writer's own last
    # write, which the lagging cache does not have.
    own: list[str] = []
    newer = cached.own_writes.newer

    def counted(namespace: str, name: str, version: str, conditions: list | None) -> tuple:
        found = newer(namespace, name, version, conditions)
        if found[0] != version:
            own.append(found[0])
        return found

    monkeypatch.setattr(cached.own_writes, "newer", counted)

    cached.patch_isvc_status(
        namespace, "mlp", {"conditions": [_condition(c.CONDITION_READY)]}, RECONCILE_CONDITIONS
    )
    cached.patch_isvc_spec(namespace, "mlp", {"replicas": 2})
    loop = [_condition(c.CONDITION_METRICS_AVAILABLE), _condition(c.CONDITION_AUTOSCALING)]
    cached.patch_isvc_status(namespace, "mlp", {"conditions": loop}, CONTROL_LOOP_CONDITIONS)
    assert len(own) >= 1, "the conditions patch after the spec patch built on its answer"
    live = kube.get(c.API_VERSION, c.KIND, namespace, "mlp")
    types = [x["type"] for x in live["status"]["conditions"]]
    assert {c.CONDITION_READY, c.CONDITION_METRICS_AVAILABLE, c.CONDITION_AUTOSCALING} <= set(types)
    assert live["spec"]["replicas"] == 2

    # A write by someone else: the next patch conflicts, reads afresh, and keeps it all.
    cluster.kubectl("annotate", "kisvc/mlp", "-n", namespace, "note=by-hand")
    fresh.clear()
    cached.patch_isvc_status(
        namespace,
        "mlp",
        {"conditions": [_condition(c.CONDITION_READY, "False")]},
        RECONCILE_CONDITIONS,
    )
    assert fresh and set(fresh) == {"mlp"}
    live = kube.get(c.API_VERSION, c.KIND, namespace, "mlp")
    statuses = {x["type"]: x["status"] for x in live["status"]["conditions"]}
    assert statuses[c.CONDITION_METRICS_AVAILABLE] == statuses[c.CONDITION_AUTOSCALING] == "True"
    assert live["metadata"]["annotations"]["note"] == "by-hand"
