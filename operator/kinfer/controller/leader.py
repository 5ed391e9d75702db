"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.

One operator replica acts (kopf, its scheduler, every write); the others stand by, polling
the Lease every retry period, and take it once its holder released it or stopped renewing
for a whole lease duration, measured on the standby's own clock from the moment it last
saw the Lease change (so clock skew between nodes does not matter). A leader that cannot
renew within the renew deadline (shorter than the lease duration) exits the process at
once, non-zero, before any standby may take over: never two actors. On a graceful stop
the leader releases the Lease (holder emptied), so a standby takes it within its retry
period. Every write is an update on the read's resourceVersion: of two replicas racing
for the Lease, the API server lets one win.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from prometheus_client import Gauge

if TYPE_CHECKING:
    from kubernetes import client

log = logging.getLogger(__name__)

DEFAULT_LEASE_NAME = "kinfer-operator"
DEFAULT_NAMESPACE = "kinfer-system"
# client-go's and controller-runtime's defaults.
DEFAULT_LEASE_DURATION_S = 15.0
DEFAULT_RENEW_DEADLINE_S = 10.0
DEFAULT_RETRY_PERIOD_S = 2.0
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# The Lease's MicroTime, as the API server writes it.
MICROTIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
READINESS_PATH = "/readyz"

LEADER = Gauge(
    "kinfer_operator_leader",
    "1 on the operator replica that acts (holds the Lease, or runs without leader"
    " election), 0 on a standby.",
)


@dataclass(frozen=True)
class Timing:
    """How long a Lease holds, how long a leader keeps trying to renew, how often to try."""

    lease_duration_s: float = DEFAULT_LEASE_DURATION_S
    renew_deadline_s: float = DEFAULT_RENEW_DEADLINE_S
    retry_period_s: float = DEFAULT_RETRY_PERIOD_S

    def __post_init__(self) -> None:
        if not 0 < self.retry_period_s < self.renew_deadline_s < self.lease_duration_s:
            raise ValueError(
                "leader election needs 0 < retry period < renew deadline < lease duration, got"
                f" {self.retry_period_s:g} s, {self.renew_deadline_s:g} s,"
                f" {self.lease_duration_s:g} s"
            )


@dataclass(frozen=True)
class LeaseRecord:
    """A Lease's spec: holder ("" when free), its duration, times (MicroTime text), changes."""

    holder: str = ""
    lease_duration_s: int = int(DEFAULT_LEASE_DURATION_S)
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0

    def spec(self) -> dict[str, Any]:
        return {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.lease_duration_s,
            "acquireTime": self.acquire_time,
            "renewTime": self.renew_time,
            "leaseTransitions": self.transitions,
        }


def record_of(lease: dict[str, Any] | None) -> LeaseRecord | None:
    """The record in a Lease object (None: no Lease)."""
    if lease is None:
        return None
    spec = lease.get("spec") or {}
    return LeaseRecord(
        holder=spec.get("holderIdentity") or "",
        lease_duration_s=int(spec.get("leaseDurationSeconds") or 0),
        acquire_time=spec.get("acquireTime"),
        renew_time=spec.get("renewTime"),
        transitions=int(spec.get("leaseTransitions") or 0),
    )


def observed_since(
    previous: LeaseRecord | None, previous_at_s: float, record: LeaseRecord | None, now_s: float
) -> float:
    """When this replica first saw `record` as it is: a record that changed is seen now."""
    return previous_at_s if record == previous else now_s


def may_acquire(
    record: LeaseRecord | None, identity: str, observed_at_s: float, now_s: float
) -> bool:
    """May `identity` take (or renew) the Lease? Yes when there is none, it is free, it is
    ours, or it has not changed for its whole duration since we first saw it so."""
    if record is None or not record.holder or record.holder == identity:
        return True
    return now_s >= observed_at_s + record.lease_duration_s


def next_record(
    record: LeaseRecord | None, identity: str, now: datetime, lease_duration_s: float
) -> LeaseRecord:
    """The record `identity` writes to take or renew the Lease at `now`."""
    stamp = now.strftime(MICROTIME_FORMAT)
    if record is not None and record.holder == identity:
        return replace(record, renew_time=stamp, lease_duration_s=int(lease_duration_s))
    return LeaseRecord(
        holder=identity,
        lease_duration_s=int(lease_duration_s),
        acquire_time=stamp,
        renew_time=stamp,
        transitions=0 if record is None else record.transitions + 1,
    )


def released_record(record: LeaseRecord, now: datetime) -> LeaseRecord:
    """The record a leader writes on a graceful stop: no holder (client-go's release)."""
    stamp = now.strftime(MICROTIME_FORMAT)
    return replace(record, holder="", lease_duration_s=1, acquire_time=stamp, renew_time=stamp)


def still_leader(last_renew_s: float, now_s: float, renew_deadline_s: float) -> bool:
    """A leader may act only while its last successful renew is within the renew deadline
    (counted from when that renew was sent)."""
    return now_s - last_renew_s < renew_deadline_s


def default_namespace(
    environ: dict[str, str] | None = None, service_account_file: Path = SERVICE_ACCOUNT_NAMESPACE
) -> str:
    """The pod's namespace: the service account's, else $POD_NAMESPACE, else kinfer-system."""
    with contextlib.suppress(OSError):
        found = service_account_file.read_text().strip()
        if found:
            return found
    environ = os.environ if environ is None else environ
    return environ.get("POD_NAMESPACE") or DEFAULT_NAMESPACE


def make_identity(pod_name: str | None = None) -> str:
    """$POD_NAME (else the host name) and a random suffix: a restarted container is a new
    holder, never mistaken for the one before it."""
    base = pod_name if pod_name is not None else os.environ.get("POD_NAME")
    return f"{base or socket.gethostname()}_{secrets.token_hex(4)}"


def _api_errors() -> tuple[type[Exception], ...]:
    """What a failed API call raises (the kubernetes client is imported on first use: `kinfer
    --help` does not pay for it)."""
    from kubernetes.client.exceptions import ApiException

    return (ApiException, OSError, ValueError)


class LeaseLock:
    """The Lease on the API server: read, create, update on a resourceVersion (sync)."""

    def __init__(
        self, api_client: client.ApiClient, namespace: str, name: str, timeout_s: float
    ) -> None:
        from kubernetes import client

        self.api = client.CoordinationV1Api(api_client)
        self.namespace = namespace
        self.name = name
        self.timeout_s = timeout_s

    def get(self) -> tuple[LeaseRecord | None, str | None]:
        """(record, resourceVersion); (None, None) when there is no Lease yet."""
        from kubernetes.client.exceptions import ApiException

        try:
            response = self.api.read_namespaced_lease(
                self.name, self.namespace, _preload_content=False, _request_timeout=self.timeout_s
            )
        except ApiException as error:
            if error.status == 404:
                return None, None
            raise
        lease = json.loads(response.data)
        return record_of(lease), lease["metadata"]["resourceVersion"]

    def write(self, record: LeaseRecord, resource_version: str | None) -> bool:
        """Create (no resourceVersion) or update; False when another replica wrote first."""
        from kubernetes.client.exceptions import ApiException

        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": record.spec(),
        }
        try:
            if resource_version is None:
                self.api.create_namespaced_lease(
                    self.namespace, body, _request_timeout=self.timeout_s
                )
            else:
                body["metadata"]["resourceVersion"] = resource_version
                self.api.replace_namespaced_lease(
                    self.name, self.namespace, body, _request_timeout=self.timeout_s
                )
        except ApiException as error:
            # 409: created by another, or updated since our read (optimistic concurrency).
            if error.status == 409:
                return False
            raise
        return True


class LeadershipLost(Exception):
    """Another replica holds the Lease, or the renew deadline passed."""


class Elector:
    """One replica's side of the election: acquire, hold (renew), release."""

    def __init__(
        self,
        lock: LeaseLock,
        identity: str,
        timing: Timing,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lock = lock
        self.identity = identity
        self.timing = timing
        self.clock = clock
        self.is_leader = False
        self.last_renew_s = 0.0
        # The API server's last answer (readiness): None until the first.
        self.last_contact_s: float | None = None
        self.observed: LeaseRecord | None = None
        self.observed_at_s = 0.0
        # The Lease's own thread: handlers busy in the default pool never delay a renew.
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lease")

    @property
    def lease(self) -> str:
        return f"{self.lock.namespace}/{self.lock.name}"

    def try_acquire_or_renew(self) -> bool:
        """One attempt (blocking). Raises LeadershipLost when a leader finds another holder."""
        sent_s = self.clock()
        record, resource_version = self.lock.get()
        # A change is seen when the read returns, after the holder's write landed (never
        # earlier: the expiry a standby waits out starts no sooner than the holder's).
        read_s = self.last_contact_s = self.clock()
        self.observed_at_s = observed_since(self.observed, self.observed_at_s, record, read_s)
        self.observed = record
        if not may_acquire(record, self.identity, self.observed_at_s, read_s):
            if self.is_leader:
                raise LeadershipLost(f"the Lease is held by {record.holder if record else None}")
            return False
        wanted = next_record(record, self.identity, datetime.now(UTC), self.timing.lease_duration_s)
        if not self.lock.write(wanted, resource_version):
            return False
        self.last_contact_s = self.clock()
        self.observed, self.observed_at_s = wanted, self.last_contact_s
        self.last_renew_s = sent_s
        if not self.is_leader:
            log.info(
                "leader election: acquired the Lease %s as %s (transitions %d)",
                self.lease,
                self.identity,
                wanted.transitions,
            )
        self._lead(True)
        return True

    def _lead(self, leading: bool) -> None:
        self.is_leader = leading
        LEADER.set(1 if leading else 0)

    async def _attempt(self, timeout_s: float | None = None) -> bool:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self.try_acquire_or_renew)
        return await asyncio.wait_for(future, timeout_s)

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Try every retry period until this replica leads (True) or `stop` is set (False)."""
        self._lead(False)
        log.info("leader election: standing by for the Lease %s as %s", self.lease, self.identity)
        holder = None
        while not stop.is_set():
            try:
                if await self._attempt():
                    return True
            except _api_errors() as error:
                log.warning("leader election: reading the Lease %s failed: %s", self.lease, error)
            if self.observed is not None and self.observed.holder != holder:
                holder = self.observed.holder
                shown = holder or "no one (released)"
                log.info("leader election: the Lease %s is held by %s", self.lease, shown)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.timing.retry_period_s)
        return False

    async def hold(self) -> None:
        """Renew every retry period; raise LeadershipLost once this replica may no longer act
        (another holder, or no successful renew within the renew deadline)."""
        while True:
            deadline_s = self.last_renew_s + self.timing.renew_deadline_s
            with contextlib.suppress(TimeoutError, *_api_errors()):
                await self._attempt(max(0.0, deadline_s - self.clock()))
            if not still_leader(self.last_renew_s, self.clock(), self.timing.renew_deadline_s):
                raise LeadershipLost(
                    f"no renew of the Lease {self.lease} within the renew deadline"
                    f" ({self.timing.renew_deadline_s:g} s)"
                )
            wait_s = min(self.timing.retry_period_s, deadline_s - self.clock())
            await asyncio.sleep(max(0.0, wait_s))

    async def release(self) -> None:
        """Empty the holder (a graceful stop): a standby takes the Lease at its next try."""
        if not self.is_leader:
            return
        self._lead(False)

        def release() -> bool:
            record, resource_version = self.lock.get()
            if record is None or record.holder != self.identity:
                return False
            return self.lock.write(released_record(record, datetime.now(UTC)), resource_version)

        loop = asyncio.get_running_loop()
        try:
            released = await loop.run_in_executor(self._executor, release)
        except _api_errors() as error:
            log.warning("leader election: releasing the Lease %s failed: %s", self.lease, error)
            return
        if released:
            log.info("leader election: released the Lease %s", self.lease)

    def health(self) -> dict[str, Any]:
        """The probes' body: who this replica is, whether it leads, the API server's last answer."""
        age = None if self.last_contact_s is None else self.clock() - self.last_contact_s
        return {
            "leader": self.is_leader,
            "identity": self.identity,
            "lease": self.lease,
            "apiServerAnsweredSecondsAgo": None if age is None else round(age, 3),
        }

    def ready(self) -> bool:
        """Connected: the API server answered within the lease duration."""
        return (
            self.last_contact_s is not None
            and self.clock() - self.last_contact_s < self.timing.lease_duration_s
        )


def exit_lost(error: LeadershipLost) -> None:
    """Stop acting at once, as controller-runtime does: the process exits non-zero (its
    Deployment starts it again, as a standby). Threads mid-handler are not waited for."""
    log.error("leader election: leadership lost, exiting: %s", error)
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    sys.stderr.flush()
    os._exit(1)


async def serve_probes(url: str, elector: Elector) -> Any:
    """The liveness URL (always 200 while the loop answers) and /readyz on its host and port
    (200 while the API server answers, else 503), both with `Elector.health()` as body:
    a standby answers too."""
    from aiohttp import web

    parts = urlsplit(url)

    async def liveness(_: web.Request) -> web.Response:
        return web.json_response(elector.health())

    async def readiness(_: web.Request) -> web.Response:
        return web.json_response(elector.health(), status=200 if elector.ready() else 503)

    app = web.Application()
    app.router.add_get(parts.path or "/", liveness)
    if (parts.path or "/") != READINESS_PATH:
        app.router.add_get(READINESS_PATH, readiness)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, parts.hostname, parts.port or 80).start()
    return runner


async def run_elected(
    elector: Elector,
    operate: Callable[[asyncio.Event], Awaitable[None]],
    liveness_url: str | None,
    on_lost: Callable[[LeadershipLost], None] = exit_lost,
) -> None:
    """Serve the probes, wait for the Lease, then run `operate(stop)` (kopf) while renewing
    it; release it when `operate` returns. SIGTERM/SIGINT set `stop`: standing by, this
    returns at once; leading, `operate` is expected to return on it."""
    runner = await serve_probes(liveness_url, elector) if liveness_url else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # kopf installs its own handlers once it runs (they stop it too).
        loop.add_signal_handler(signum, stop.set)
    try:
        if not await elector.acquire(stop):
            return
        holding = asyncio.create_task(_hold(elector, on_lost))
        try:
            await operate(stop)
        finally:
            holding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await holding
            await elector.release()
    finally:
        if runner is not None:
            await runner.cleanup()


async def _hold(elector: Elector, on_lost: Callable[[LeadershipLost], None]) -> None:
    try:
        await elector.hold()
    except LeadershipLost as error:
        on_lost(error)
