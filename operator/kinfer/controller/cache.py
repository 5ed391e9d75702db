"""Watch caches: what the operator reads, mirrored in memory by list-then-watch.

Each `Informer` lists one kind once, then follows its watch (re-listing only when the watch
says its resourceVersion is gone), as client-go's informers do. `CachedKube` serves `get` and
`list` of the cached kinds from them, so in steady state the operator's only requests are its
watches and the writes a decision or a status change needs. Kinds it does not cache, and any
read before a cache has synced, go to the API server as before.

Cached: InferenceServices; the Deployments, Services, ConfigMaps and Pods that carry the
`kinfer.dev/inferenceservice` label; Nodes; and, of all other Pods, only those that request an
extended resource (a GPU): what GPU capacity is computed from.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from kinfer.api import constants as c
from kinfer.capacity import requests_extended_resource
from kinfer.controller.kube import Kube, OwnWrites
from kinfer.controller.pod_failures import pod_failure

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace or "", name)
# Server-side timeout of one watch request; the informer then watches again from where it was.
WATCH_TIMEOUT_S = 300
# After a failed list or watch, wait this long before listing again (doubling, up to the max).
RETRY_S, RETRY_MAX_S = 1.0, 30.0


def has_isvc_label(obj: dict[str, Any]) -> bool:
    return c.LABEL_ISVC in ((obj.get("metadata") or {}).get("labels") or {})


def kept_pod(pod: dict[str, Any]) -> bool:
    return has_isvc_label(pod) or requests_extended_resource(pod)


def parse_selector(selector: str | None) -> dict[str, str] | None:
    """An equality label selector ("a=b,c=d") as a dict; None when it is anything else."""
    if not selector:
        return {}
    wanted = {}
    for term in selector.split(","):
        key, sep, value = term.partition("=")
        if not sep or value.startswith("=") or key.endswith("!") or not key.strip():
            return None
        wanted[key.strip()] = value.strip()
    return wanted


# What a write of the object's owner does not decide: the server's bookkeeping, and status.
_BOOKKEEPING = ("resourceVersion", "managedFields", "generation")


def _content(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _BOOKKEEPING}
    return {**{k: v for k, v in obj.items() if k != "status"}, "metadata": meta}


def content_changed(before: dict[str, Any] | None, after: dict[str, Any]) -> bool:
    """Whether anything but status and the server's bookkeeping differs (None: it is new)."""
    return before is None or _content(before) != _content(after)


def _status_changed(before: dict[str, Any] | None, after: dict[str, Any]) -> bool:
    return before is not None and before.get("status") != after.get("status")


def _slim(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without its managedFields: the operator never reads them, and they are often
    the larger part of an object (memory, and every copy of it)."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return obj


def _copy(value: Any) -> Any:
    """A deep copy of JSON data (dicts, lists, scalars): what the caches hand out, so that no
    caller changes the stored object. Several times faster than copy.deepcopy on such data."""
    if type(value) is dict:
        return {k: _copy(v) for k, v in value.items()}
    if type(value) is list:
        return [_copy(v) for v in value]
    return value


def _isvc_of(obj: dict[str, Any]) -> Key | None:
    """(namespace, the kinfer.dev/inferenceservice label) of a child; None without the label."""
    meta = obj.get("metadata") or {}
    owner = (meta.get("labels") or {}).get(c.LABEL_ISVC)
    return None if owner is None else (meta.get("namespace") or "", owner)


def _key(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta["name"])


@dataclass
class Informer:
    """One kind, listed once and then watched.

    label: only objects carrying this label are listed and watched. keep: of those, only what
    it accepts is stored. complete_for: a list asking for this label is answered in full from
    the store even with `keep` (every object with the label is kept).
    """

    kube: Kube
    api_version: str
    kind: str
    # None: every namespace (and cluster-scoped kinds).
    namespace: str | None = None
    label: str | None = None
    keep: Callable[[dict[str, Any]], bool] | None = None
    complete_for: str | None = None
    # Called (from the informer's thread) with an object whose content other than its status
    # changed, that appeared, or that went: what an owner of it may have to put right.
    on_change: Callable[[dict[str, Any]], None] | None = None
    # Which changes of a stored object call `on_change` (before: None when it is new).
    changed: Callable[[dict[str, Any] | None, dict[str, Any]], bool] = field(
        default=lambda before, after: content_changed(before, after)
    )
    # Called (from the informer's thread) with a stored object whose status changed, when
    # `on_change` was not called for it.
    on_status: Callable[[dict[str, Any]], None] | None = None
    objects: dict[Key, dict[str, Any]] = field(default_factory=dict)
    # The stored objects by (namespace, their kinfer.dev/inferenceservice label): what a list of
    # one service's children reads, without scanning every object.
    by_isvc: dict[Key, dict[Key, dict[str, Any]]] = field(default_factory=dict)
    # Watch requests sent (each resumes where the last ended).
    watches: int = 0
    synced: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, stop: threading.Event) -> None:
        """List, then watch from where the list (then the last event) left off, until `stop`.
        A failure, or a watch whose resourceVersion is gone, waits (bounded backoff; none for
        410 Gone) and lists again."""
        retry_s = RETRY_S
        version: str | None = None
        while not stop.is_set():
            try:
                if version is None:
                    version = self._list()
                version = self._watch(version, stop)
                retry_s = RETRY_S
            except Exception as error:  # the API server away, a 410 Gone: list again
                version = None
                if isinstance(error, ApiException) and error.status == 410:
                    continue
                log.warning("%s informer: %s; listing again in %.0f s", self.kind, error, retry_s)
                stop.wait(retry_s)
                retry_s = min(retry_s * 2, RETRY_MAX_S)

    def _resource(self) -> Any:
        return self.kube._resource(self.api_version, self.kind)

    def _list(self) -> str:
        """Store what the API server lists. A list after the first (the watch broke, or its
        resourceVersion was gone) tells the callbacks what changed meanwhile, as the events
        missed would have: what went, what came, what changed."""
        # The JSON as it comes (serialize=False): no ResourceInstance built around each object.
        response = self._resource().get(
            namespace=self.namespace, label_selector=self.label, serialize=False
        )
        listed = json.loads(response.data)
        objects = {}
        for item in listed.get("items") or []:
            item.setdefault("apiVersion", self.api_version)
            item.setdefault("kind", self.kind)
            if self.keep is None or self.keep(item):
                objects[_key(item)] = _slim(item)
        with self.lock:
            before, self.objects = self.objects, objects
            self.by_isvc = {}
            for key, obj in objects.items():
                self._index(key, obj)
        if self.synced.is_set():
            for key, gone in before.items():
                if key not in objects:
                    self._tell(gone, gone, kept=False)
            for key, obj in objects.items():
                self._tell(before.get(key), obj, kept=True)
        self.synced.set()
        return str((listed.get("metadata") or {}).get("resourceVersion") or "")

    def _watch(self, version: str, stop: threading.Event) -> str:
        """Follow the watch from `version` until the server closes it (its timeout); returns
        the last resourceVersion seen (bookmarks included), to watch again from."""
        self.watches += 1
        events = watch.Watch().stream(
            self._resource().get,
            namespace=self.namespace,
            label_selector=self.label,
            resource_version=version,
            serialize=False,
            timeout_seconds=WATCH_TIMEOUT_S,
            allow_watch_bookmarks=True,
        )
        for event in events:
            if stop.is_set():
                break
            obj = event.get("raw_object") or {}
            event_type = str(event.get("type"))
            if event_type != "ERROR":
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if event_type != "BOOKMARK":
                self.apply(event_type, obj)
        return version

    def apply(self, event_type: str, obj: dict[str, Any]) -> None:
        """One watch event into the store (also what tests drive)."""
        if event_type == "ERROR":
            status = obj.get("code") or 0
            raise ApiException(status=status, reason=str(obj.get("message")))
        if not (obj.get("metadata") or {}).get("name"):
            return
        obj.setdefault("apiVersion", self.api_version)
        obj.setdefault("kind", self.kind)
        obj = _slim(obj)
        key = _key(obj)
        with self.lock:
            before = self.objects.pop(key, None)
            self._unindex(key, before)
            kept = event_type != "DELETED" and (self.keep is None or self.keep(obj))
            if kept:
                self.objects[key] = obj
                self._index(key, obj)
        self._tell(before, obj, kept)

    def _tell(self, before: dict[str, Any] | None, obj: dict[str, Any], kept: bool) -> None:
        """The callbacks for one stored object: `before` it, `obj` now (kept: still stored)."""
        if self.on_change is not None and (not kept or self.changed(before, obj)):
            self.on_change(obj)
        elif self.on_status is not None and kept and _status_changed(before, obj):
            self.on_status(obj)

    def _index(self, key: Key, obj: dict[str, Any]) -> None:
        owner = _isvc_of(obj)
        if owner is not None:
            self.by_isvc.setdefault(owner, {})[key] = obj

    def _unindex(self, key: Key, obj: dict[str, Any] | None) -> None:
        owner = None if obj is None else _isvc_of(obj)
        if owner is not None and owner in self.by_isvc:
            self.by_isvc[owner].pop(key, None)
            if not self.by_isvc[owner]:
                del self.by_isvc[owner]

    def get(self, namespace: str | None, name: str) -> dict[str, Any] | None:
        with self.lock:
            found = self.objects.get((namespace or "", name))
        return _copy(found) if found is not None else None

    def list(
        self,
        namespace: str | None,
        labels: dict[str, str],
        where: Callable[[dict[str, Any]], bool] | None = None,
        copy: bool = True,
    ) -> list[dict[str, Any]]:
        """The matching objects (and `where` them), copied; with copy=False the stored objects
        themselves, for a caller that only reads them."""
        with self.lock:
            if namespace is not None and c.LABEL_ISVC in labels:
                items = list(self.by_isvc.get((namespace, labels[c.LABEL_ISVC]), {}).values())
            else:
                items = list(self.objects.values())
        return [
            _copy(obj) if copy else obj
            for obj in items
            if (namespace is None or obj["metadata"].get("namespace") == namespace)
            and all(((obj["metadata"].get("labels") or {}).get(k)) == v for k, v in labels.items())
            and (where is None or where(obj))
        ]


def informers(kube: Kube, namespaces: list[str] | None = None) -> list[Informer]:
    """The caches the operator keeps (see the module docstring): the namespaced kinds in each
    of `namespaces` (None: all); Pods and Nodes cluster-wide, for GPU capacity."""
    child = c.LABEL_ISVC
    caches = []
    for namespace in namespaces or [None]:
        caches += [
            Informer(kube, c.API_VERSION, c.KIND, namespace),
            Informer(kube, "apps/v1", "Deployment", namespace, label=child, complete_for=child),
            Informer(kube, "v1", "Service", namespace, label=child, complete_for=child),
            Informer(kube, "v1", "ConfigMap", namespace, label=child, complete_for=child),
        ]
    caches.append(Informer(kube, "v1", "Pod", keep=kept_pod, complete_for=child))
    caches.append(Informer(kube, "v1", "Node"))
    return caches


class CachedKube(Kube):
    """Kube whose reads of cached kinds come from the informers once they have synced.

    A cache that has not synced yet (the operator is starting) is read through, from the API
    server: nothing is decided on a half-filled cache.
    """

    def __init__(self, kube: Kube, caches: Iterable[Informer]) -> None:
        self.dynamic = kube.dynamic
        # One record of the operator's own writes, whichever wrapper wrote.
        own_writes = getattr(kube, "own_writes", None)
        self.own_writes = own_writes if own_writes is not None else OwnWrites()
        self.caches = list(caches)

    def _cache(self, api_version: str, kind: str, namespace: str | None = None) -> Informer | None:
        """The synced cache of this kind that covers `namespace` (None: every namespace)."""
        for cache in self.caches:
            if (cache.api_version, cache.kind) != (api_version, kind):
                continue
            if cache.namespace is None or cache.namespace == namespace:
                return cache if cache.synced.is_set() else None
        return None

    def peek(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict | None:
        """The cached object itself, not a copy (None before the cache has synced)."""
        cache = self._cache(api_version, kind, namespace)
        if cache is None:
            return None
        with cache.lock:
            return cache.objects.get((namespace or "", name))

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict | None:
        cache = self._cache(api_version, kind, namespace)
        if cache is None:
            return super().get(api_version, kind, namespace, name)
        return cache.get(namespace, name)

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        return self._list(api_version, kind, namespace, label_selector, copy=True)

    def peek_list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        """The cached objects themselves, not copies (do not modify them)."""
        return self._list(api_version, kind, namespace, label_selector, copy=False)

    def _list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        label_selector: str | None,
        copy: bool,
    ) -> list[dict[str, Any]]:
        cache = self._cache(api_version, kind, namespace)
        labels = parse_selector(label_selector)
        if cache is None or labels is None or not _complete(cache, labels):
            return super().list(api_version, kind, namespace, label_selector)
        return cache.list(namespace, labels, copy=copy)

    def gpu_view(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(every Node, every Pod that requests an extended resource), from the caches."""
        nodes, pods = self._cache("v1", "Node"), self._cache("v1", "Pod")
        if nodes is None or pods is None:
            return super().gpu_view()
        # Filtered before the copy: every Pod of the cluster is cached, few hold a GPU.
        return nodes.list(None, {}), pods.list(None, {}, where=requests_extended_resource)

    def get_fresh(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict | None:
        return super().get(api_version, kind, namespace, name)


def _complete(cache: Informer, labels: dict[str, str]) -> bool:
    """Whether the store holds every object such a list would return."""
    if cache.complete_for is not None and cache.complete_for in labels:
        return True
    return cache.label is None and cache.keep is None


def on_child_change(
    caches: list[Informer],
    owner_changed: Callable[[Key], None],
    status_changed: Callable[[Key], None] | None = None,
) -> None:
    """Tell `owner_changed` the InferenceService of every Deployment, Service or ConfigMap of
    it that is edited, created or deleted: a reconcile puts it right in seconds. Of its pods,
    those that fail (a fetch or server failure, pod_failures): Ready=False says why in
    seconds, not at the next resync. A pod that recovers changes its Deployment's status.
    Tell `status_changed` the InferenceService whose Deployment's status changed (its pods
    came or went): its status follows."""
    for cache in caches:
        if cache.label == c.LABEL_ISVC and cache.kind != "Pod":
            cache.on_change = lambda obj: _notify(obj, owner_changed)
            if cache.kind == "Deployment" and status_changed is not None:
                cache.on_status = lambda obj: _notify(obj, status_changed)
        elif cache.kind == "Pod":
            cache.changed = failure_changed
            cache.on_change = lambda obj: _notify_failing(obj, owner_changed)


def on_isvc_change(caches: list[Informer], changed: Callable[[Key], None]) -> None:
    """Tell `changed` every InferenceService the cache stores anew (any event, its status
    included), once the cache holds it."""
    for cache in caches:
        if cache.kind == c.KIND:
            cache.changed = lambda before, after: True
            cache.on_change = lambda obj: changed(_key(obj))


def _notify_failing(pod: dict[str, Any], owner_changed: Callable[[Key], None]) -> None:
    # Also called when a pod goes: one that was deleted (deletionTimestamp) is no failure.
    if has_isvc_label(pod) and pod_failure([pod]) is not None:
        _notify(pod, owner_changed)


def failure_changed(before: dict[str, Any] | None, after: dict[str, Any]) -> bool:
    """Whether a pod of an InferenceService fails now, and differently than before (a status
    change: not every update of a crash-looping pod)."""
    if not has_isvc_label(after):
        return False
    failure = pod_failure([after])
    return failure is not None and (before is None or pod_failure([before]) != failure)


def _notify(obj: dict[str, Any], owner_changed: Callable[[Key], None]) -> None:
    owner = _isvc_of(obj)
    if owner is not None:
        owner_changed(owner)


def start(caches: list[Informer], stop: threading.Event) -> list[threading.Thread]:
    threads = [
        threading.Thread(target=cache.run, args=(stop,), name=f"informer-{cache.kind}", daemon=True)
        for cache in caches
    ]
    for thread in threads:
        thread.start()
    return threads
