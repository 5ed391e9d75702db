"""The operator's only door to the API server: get, list, compare-then-apply, status.

Children are written with server-side apply under the `kinfer` field manager,
and only when the live object differs from the desired one, so a resync of an
unchanged InferenceService sends no write at all.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from kinfer.api import constants as c
from kinfer.capacity import parse_quantity, requests_extended_resource
from kinfer.controller.status import merge_owned

log = logging.getLogger(__name__)

# As kopf cuts its Events' messages (the API server takes up to 1 KiB).
EVENT_MESSAGE_MAX = 1024
# Status writes that lost a race with another loop's write: read again and retry.
CONFLICT_RETRIES = 5


# Connections kept open to the API server: one for each thread that may call at once (the
# scheduler's ticks, kopf's handlers, the informers' watches). The client's default, 5 per
# CPU, made every call beyond 10 open a TLS connection and close it again: at a thousand
# services the handshakes were half the operator's CPU, and the API server's too.
API_CONNECTIONS = 64


def release(response: Any) -> None:
    """Put the connection of a response whose body is not wanted (`serialize=False`) back in
    the pool. urllib3 returns a connection once its response is read to the end: unread, the
    connection stayed out of the pool and every write opened a new TLS connection."""
    response.drain_conn()
    response.release_conn()


def load_api_client(
    kubeconfig: str | None = None, connections: int = API_CONNECTIONS
) -> client.ApiClient:
    """The kubeconfig when given, else in-cluster credentials, else the default kubeconfig;
    `connections` kept open for reuse."""
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig)
    else:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = connections
    return client.ApiClient(configuration)


def connection_info(api_client: client.ApiClient) -> dict[str, Any]:
    """kopf's ConnectionInfo fields for the credentials our own client loaded, so kopf
    and kinfer's client always talk to the same cluster as the same user."""
    cfg = api_client.configuration
    header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix(
        "authorization"
    )
    parts = header.split(" ", 1) if header else []
    scheme, token = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0] if parts else None)
    return {
        "server": cfg.host,
        "ca_path": cfg.ssl_ca_cert,
        "insecure": not cfg.verify_ssl,
        "scheme": scheme,
        "token": token,
        "certificate_path": cfg.cert_file,
        "private_key_path": cfg.key_file,
    }


def matches(desired: Any, live: Any) -> bool:
    """True when every field kinfer sets already has that value on the live object.

    Fields the API server adds (defaults, status, managedFields) are ignored;
    quantities compare by value ("1" == "1000m"), scalars by their string form
    (a limit of 1 comes back as "1").
    """
    if isinstance(desired, dict):
        # The API server drops empty lists and maps: absent matches empty.
        return isinstance(live, dict) and all(
            matches(value, live[key]) if key in live else value in ([], {}, None)
            for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(desired) == len(live)
            and all(matches(d, v) for d, v in zip(desired, live, strict=True))
        )
    if str(desired) == str(live):
        return True
    if isinstance(desired, bool) or isinstance(live, bool):
        return False
    quantity = parse_quantity(desired)
    return quantity != 0 and quantity == parse_quantity(live)


# Characters that JSON leaves raw and YAML's reader refuses ("control characters are not
# allowed": DEL, the C1 controls, the byte-order mark, U+FFFE/F) or reads as a line break,
# folding the spaces before it (U+2028, U+2029; NEL is a C1 control).
_YAML_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")


def apply_body(desired: dict[str, Any]) -> bytes:
    """A server-side apply body (content type apply-patch+yaml: the API server parses YAML).

    JSON with its non-ASCII characters as UTF-8: the client's own json.dumps escapes them, and
    YAML refuses the surrogate-pair escapes of a character beyond the BMP ("\\ud83d\\ude00"
    for an emoji in an env value: "found invalid Unicode character escape code"). The BMP
    characters YAML refuses or folds raw are escaped (\\u0085 is valid YAML; a raw U+0085 is
    not)."""
    text = json.dumps(desired, ensure_ascii=False)
    return _YAML_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode()


class OwnWrites:
    """The resourceVersion and conditions of each InferenceService as this operator's last
    write of it left them, until a read shows as new a version. A cache lags the operator's
    own writes by a moment: a conditions patch made on the cached version right after
    another write (a spec.replicas patch, the other loop's status) would conflict, and cost
    a fresh read and a second patch. Safe from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[tuple[str, str], tuple[int, list[dict[str, Any]] | None]] = {}

    def record(self, namespace: str, name: str, written: dict[str, Any]) -> None:
        """What a write's response says the object now is."""
        version = version_number((written.get("metadata") or {}).get("resourceVersion"))
        if version is None:
            return
        conditions = (written.get("status") or {}).get("conditions")
        with self._lock:
            known = self._by_key.get((namespace, name))
            if known is None or known[0] < version:
                self._by_key[(namespace, name)] = (version, conditions)

    def newer(
        self, namespace: str, name: str, version: str, conditions: list[dict[str, Any]] | None
    ) -> tuple[str, list[dict[str, Any]] | None]:
        """The newer of a read (its resourceVersion and conditions) and the last write. A
        read as new as the write ends the write's record."""
        read = version_number(version)
        with self._lock:
            known = self._by_key.get((namespace, name))
            if known is None or read is None:
                return version, conditions
            if known[0] > read:
                return str(known[0]), known[1]
            del self._by_key[(namespace, name)]
        return version, conditions

    def forget(self, namespace: str, name: str) -> None:
        """The object is gone: its record too."""
        with self._lock:
            self._by_key.pop((namespace, name), None)


def version_number(value: Any) -> int | None:
    """A resourceVersion as the number etcd makes it (None: not one). Kubernetes calls them
    opaque; the API server's own watch cache orders them as numbers."""
    try:
        return int(str(value))
    except ValueError:
        return None


class Kube:
    """A thin, synchronous wrapper of the dynamic client (kopf runs sync handlers in threads)."""

    # "All": child applies are server-side dry runs (validated and defaulted, never stored).
    dry_run: str | None = None

    def __init__(self, api_client: client.ApiClient) -> None:
        self.dynamic = DynamicClient(api_client)
        self.own_writes = OwnWrites()

    def _resource(self, api_version: str, kind: str) -> Any:
        return self.dynamic.resources.get(api_version=api_version, kind=kind)

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict | None:
        try:
            return self._resource(api_version, kind).get(name=name, namespace=namespace).to_dict()
        except NotFoundError:
            return None

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        result = self._resource(api_version, kind).get(
            namespace=namespace, label_selector=label_selector
        )
        return [item.to_dict() for item in result.items]

    def peek_list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        """A list that must not cost a copy when a cache serves it (do not modify it)."""
        return self.list(api_version, kind, namespace, label_selector)

    def peek(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict | None:
        """A read that must not cost a request when a cache serves it (do not modify it)."""
        return self.get(api_version, kind, namespace, name)

    def get_fresh(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict | None:
        """A read from the API server itself (a cache may lag a write by a moment)."""
        return self.get(api_version, kind, namespace, name)

    def gpu_view(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(every Node, every Pod that requests an extended resource): GPU capacity's input."""
        pods = [p for p in self.list("v1", "Pod") if requests_extended_resource(p)]
        return self.list("v1", "Node"), pods

    def apply(self, desired: dict[str, Any]) -> str:
        """Create or update one child; returns "created", "updated" or "unchanged"."""
        meta = desired["metadata"]
        live = self.get(desired["apiVersion"], desired["kind"], meta.get("namespace"), meta["name"])
        if live is not None and matches(desired, live):
            return "unchanged"
        unread = self._resource(desired["apiVersion"], desired["kind"]).server_side_apply(
            body=apply_body(desired),
            name=meta["name"],
            namespace=meta.get("namespace"),
            field_manager=c.FIELD_MANAGER,
            force_conflicts=True,
            serialize=False,
            **({"dry_run": self.dry_run} if self.dry_run else {}),
        )
        release(unread)
        return "created" if live is None else "updated"

    def patch_isvc_status(
        self,
        namespace: str,
        name: str,
        status: dict[str, Any],
        owned_conditions: frozenset[str] | None = None,
    ) -> None:
        """Merge-patch status. With `owned_conditions`, a merge patch would replace the whole
        conditions list with one computed from a possibly older read, undoing what another
        loop wrote since; so only those types are taken from `status`, the rest from a fresh
        read, and the patch is made on that read's resourceVersion (retried on a conflict)."""
        resource = self._resource(c.API_VERSION, c.KIND).status
        if owned_conditions is None or "conditions" not in status:
            self._patch_isvc(resource, namespace, name, {"status": status})
            return
        for attempt in range(CONFLICT_RETRIES):
            # First from a cache where there is one, or this operator's own last write when
            # that is newer; after a conflict, from the API server.
            live = self._isvc_conditions(namespace, name, fresh=attempt > 0)
            if live is None:
                return
            version, current = live
            conditions = merge_owned(current, status["conditions"], owned_conditions)
            body = {
                "metadata": {"resourceVersion": version},
                "status": {**status, "conditions": conditions},
            }
            try:
                self._patch_isvc(resource, namespace, name, body)
                return
            except ApiException as error:
                if error.status != 409 or attempt == CONFLICT_RETRIES - 1:
                    raise

    def _isvc_conditions(
        self, namespace: str, name: str, fresh: bool
    ) -> tuple[str, list[dict[str, Any]] | None] | None:
        """An InferenceService's resourceVersion and conditions (None: it is gone)."""
        read = self.get_fresh if fresh else self.get
        live = read(c.API_VERSION, c.KIND, namespace, name)
        if live is None:
            return None
        version = live["metadata"]["resourceVersion"]
        conditions = (live.get("status") or {}).get("conditions")
        return self.own_writes.newer(namespace, name, version, conditions)

    def _patch_isvc(self, resource: Any, namespace: str, name: str, body: dict) -> None:
        """A merge patch of an InferenceService (or its status); its response is recorded in
        `own_writes`."""
        response = resource.patch(
            body=body,
            name=name,
            namespace=namespace,
            content_type="application/merge-patch+json",
            serialize=False,
        )
        try:
            written = json.loads(response.data)
        finally:
            release(response)
        self.own_writes.record(namespace, name, written)

    def patch_isvc_spec(self, namespace: str, name: str, spec: dict[str, Any]) -> None:
        self._patch_isvc(self._resource(c.API_VERSION, c.KIND), namespace, name, {"spec": spec})

    def post_event(
        self,
        obj: dict[str, Any],
        type_: str,
        reason: str,
        message: str,
        action: str | None = None,
    ) -> None:
        """A core/v1 Event on `obj` (what `kubectl describe` and `get events` show).

        Best effort, like a kubelet's or kopf's: a failed post is logged, never raised.
        """
        meta = obj["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", c.API_VERSION),
                "kind": obj.get("kind", c.KIND),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:EVENT_MESSAGE_MAX],
            "source": {"component": c.FIELD_MANAGER},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        if action is not None:
            event["action"] = action
        try:
            release(
                self._resource("v1", "Event").create(
                    body=event, namespace=meta["namespace"], serialize=False
                )
            )
        except ApiException as error:
            log.warning(
                "event %s on %s/%s failed: %s", reason, meta["namespace"], meta["name"], error
            )
