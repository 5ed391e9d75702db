"""kopf registrations: each handler is a few lines around `reconcile`.

Handlers are sync (kopf runs them in its thread pool), so the blocking
Kubernetes client never stalls kopf's event loop. What they share (the API
client, render options, metrics reader, scheduler) is kopf's `memo`, made once
by `kinfer run` (`operator_memo`); kopf hands each object's handlers a shallow
copy, so the objects in it are the operator's own.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import threading
import time
from typing import Any

import kopf

from kinfer.api import constants as c
from kinfer.autoscale import energy, metrics
from kinfer.config import RenderOptions
from kinfer.controller import cache, control_loop, heap, scheduler, telemetry
from kinfer.controller.kube import Kube
from kinfer.controller.reconcile import Outcome, reconcile, refresh_status
from kinfer.controller.status import CONTROL_LOOP_CONDITIONS, RECONCILE_CONDITIONS

log = logging.getLogger(__name__)

# Every object is reconciled this often whatever happened (what no watch event says: GPU
# capacity freed elsewhere). A child edited or deleted by hand is put right at once: its
# watch event makes its InferenceService's next tick a resync (cache.on_child_change).
RESYNC_INTERVAL_S = 120.0
# How often the scheduler looks for due work: a decision is at most this late, plus its read.
WAKE_S = 0.5
# kopf's thread pool for the sync handlers. Its default (CPUs + 4: 6 on two cores) queued the
# creation of a thousand services' children behind six API round trips at a time.
HANDLER_WORKERS = 16
# glibc's malloc arenas: one per contending thread up to 8 x CPUs, each keeping freed memory.
# The handlers' and the scheduler's threads mostly wait on I/O; two arenas serve them.
MALLOC_ARENAS = 2


def operator_memo(
    kube: Kube,
    render_options: RenderOptions,
    metrics_reader: control_loop.MetricsReader | None,
    caches: list[cache.Informer] | None = None,
) -> kopf.Memo:
    """What every handler gets as `memo`: kube (reading through `caches` where given),
    render_options, metrics_reader, the caches and the scheduler."""
    limit_malloc_arenas(MALLOC_ARENAS)
    memo = kopf.Memo(
        kube=kube,
        render_options=render_options,
        metrics_reader=metrics_reader,
        caches=caches,
        # GPU energy per inference, through the metrics reader's Prometheus.
        energy_reader=(
            energy.EnergyReader(metrics_reader)
            if isinstance(metrics_reader, metrics.PrometheusReader)
            else None
        ),
    )
    read = getattr(metrics_reader, "observe_all", None)
    memo.scheduler = scheduler.Scheduler(
        tick=functools.partial(_tick, memo),
        plan=functools.partial(_plan, memo),
        read=_counted(read) if read is not None else None,
        wake_s=WAKE_S,
        resync_s=RESYNC_INTERVAL_S,
    )
    if caches:
        cache.on_child_change(caches, memo.scheduler.resync_soon, memo.scheduler.refresh_soon)
        cache.on_isvc_change(caches, memo.scheduler.changed)
    return memo


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas for the threads started from now on (mallopt M_ARENA_MAX, as
    MALLOC_ARENA_MAX does at exec). False where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


M_ARENA_MAX = -8  # glibc's malloc.h


def _counted(read: Any) -> Any:
    def counted(wanted: list[Any]) -> Any:
        telemetry.METRIC_READS.inc(len({(w.runtime, w.window_s) for w in wanted}))
        return read(wanted)

    return counted


def _write(
    kube: Kube,
    body: dict[str, Any],
    outcome: Outcome,
    owned: frozenset[str] = RECONCILE_CONDITIONS,
) -> None:
    meta = body["metadata"]
    try:
        if outcome.status_patch:
            kube.patch_isvc_status(meta["namespace"], meta["name"], outcome.status_patch, owned)
    finally:
        # What was done (a scale, a tier switch) is told even when the status write fails
        # (conflicts past its retries): the next tick writes status again, not the Events.
        for event in outcome.events:
            kube.post_event(body, event.type, event.reason, event.message, event.action)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # kopf's own bookkeeping under kinfer's prefix; no "handler succeeded" Events
    # (they would be an API write per handling), our Events are posted explicitly.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=c.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=c.GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.execution.max_workers = HANDLER_WORKERS
    settings.networking.request_timeout = 60


@kopf.on.resume(c.GROUP, c.VERSION, c.PLURAL)
@kopf.on.create(c.GROUP, c.VERSION, c.PLURAL)
@kopf.on.update(c.GROUP, c.VERSION, c.PLURAL)
def reconcile_inference_service(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    obj = dict(body)
    _reconcile(memo, obj)


def _reconcile(memo: kopf.Memo, body: dict[str, Any]) -> None:
    try:
        _write(memo.kube, body, reconcile(body, memo.kube, memo.render_options))
    except Exception:
        telemetry.RECONCILES.labels("error").inc()
        raise
    telemetry.RECONCILES.labels("success").inc()


def _write_period(kube: Kube, body: dict[str, Any], result: control_loop.PeriodResult) -> None:
    meta = body["metadata"]
    if result.replicas is not None:
        # Through spec.replicas, like `kubectl scale`: the update handler rolls it out.
        kube.patch_isvc_spec(meta["namespace"], meta["name"], {"replicas": result.replicas})
    _write(
        kube,
        body,
        Outcome(status_patch=result.status_patch, events=result.events),
        CONTROL_LOOP_CONDITIONS,
    )


def _plan(
    memo: kopf.Memo, key: tuple[str, str], memory: control_loop.LoopMemory
) -> control_loop.Plan | None:
    """What is due for one InferenceService, from the cache (None: not known, or the cache
    has not synced yet)."""
    body = memo.kube.peek(c.API_VERSION, c.KIND, *key)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None
    return control_loop.plan(body, memory, time.time())


def _tick(
    memo: kopf.Memo, key: tuple[str, str], memory: control_loop.LoopMemory, resync: bool
) -> None:
    """One InferenceService's tick: its control loop; with `resync`, a reconcile first
    (heals drift: a child edited or deleted by hand; follows GPU capacity); else, when its
    Deployment's status changed (`memory.status_stale`), its status reported again."""
    namespace, name = key
    kube: Kube = memo.kube
    # Taken before the reads: a child that changes during this tick makes it stale again.
    stale, memory.status_stale = memory.status_stale, False
    # A tick that only decides reads the cached object itself (it builds patches, never
    # changes what it reads); a reconcile gets its own copy.
    read = kube.get if resync or stale else kube.peek
    body = read(c.API_VERSION, c.KIND, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return
    if resync:
        _reconcile(memo, body)
    elif stale:
        _write(kube, body, refresh_status(body, kube, memo.render_options))
    result = control_loop.run_period(body, kube, memo.metrics_reader, memory)
    isvc = memory.isvc(body)
    if isvc is not None:
        control_loop.add_energy(isvc, result, memory, memo.get("energy_reader"))
    _write_period(kube, body, result)
    _record(key, body, result, memory)


def _record(
    key: tuple[str, str],
    body: dict[str, Any],
    result: control_loop.PeriodResult,
    memory: control_loop.LoopMemory,
) -> None:
    """The tick into the operator's metrics."""
    decision = result.decision
    reason = None if decision is None else decision.reason.value
    desired = None if decision is None else decision.desired_replicas
    failed = decision is not None and not decision.metrics_available
    telemetry.record_tick(*key, body, reason, desired, failed)
    if memory.lag_s is not None:
        telemetry.DECISION_LAG.observe(memory.lag_s)
        memory.lag_s = None
    _record_service(key, body, result, memory)
    tiers = [
        t.get("name") for t in ((body.get("spec") or {}).get("precision") or {}).get("tiers") or []
    ]
    if len(tiers) > 1:
        now = time.monotonic()
        elapsed = now - memory.tier_clock_s if memory.tier_clock_s else 0.0
        memory.tier_clock_s = now
        telemetry.record_tier(*key, tiers, (body.get("status") or {}).get("activeTier"), elapsed)


def _record_service(
    key: tuple[str, str],
    body: dict[str, Any],
    result: control_loop.PeriodResult,
    memory: control_loop.LoopMemory,
) -> None:
    """The service's SLO facts, alert inputs and changes into the operator's metrics."""
    isvc = memory.isvc(body)
    if isvc is None:
        return
    status = {**(body.get("status") or {}), **result.status_patch}
    target_ms = isvc.spec.scaling.target_latency_p95_ms
    tiers = isvc.spec.precision.tier_names()
    active = status.get("activeTier")
    capacity = [
        cond
        for cond in status.get("conditions") or []
        if cond.get("type") == c.CONDITION_GPU_CAPACITY
    ]
    decision = result.decision
    telemetry.record_service(
        *key,
        target_s=None if target_ms is None else target_ms / 1000.0,
        slo_le=(
            metrics.slo_bucket(target_ms)
            if target_ms is not None and isvc.spec.runtime == metrics.RUNTIME_ONNXRUNTIME
            else None
        ),
        on_lower_tier=len(tiers) > 1 and active is not None and active != tiers[0],
        fail_static=memory.fail_static(decision),
        capacity_insufficient=any(cond.get("status") == "False" for cond in capacity),
        tiers=tiers,
        joules=memory.energy,
    )
    scale = None
    if result.replicas is not None:
        scale = "out" if result.replicas > isvc.spec.replicas else "in"
    telemetry.record_changes(*key, scale, result.tier_switch)


@kopf.on.event(c.GROUP, c.VERSION, c.PLURAL)
async def inference_service_seen(
    type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    """The scheduler's list of InferenceServices follows the watch. On the event loop, as the
    scheduler itself, not queued behind the handlers' threads. A late event of an older
    incarnation of the name forgets nothing of the new one."""
    current = memo.scheduler.observe(type, dict(body))
    if type == "DELETED" and current:
        key = (body["metadata"].get("namespace"), body["metadata"].get("name"))
        telemetry.forget(*key)
        memo.kube.own_writes.forget(*key)


# Startup and cleanup get the operator's memo itself (not an object's copy), so what
# one sets the other finds.
@kopf.on.startup()
async def start_scheduler(memo: kopf.Memo, **_: Any) -> None:
    if memo.caches:
        memo.caches_stopped = threading.Event()
        cache.start(memo.caches, memo.caches_stopped)
    memo.scheduler_stopped = asyncio.Event()
    memo.scheduler_task = asyncio.create_task(memo.scheduler.run(memo.scheduler_stopped))
    memo.heap_task = asyncio.create_task(heap.keep_frozen(memo.scheduler_stopped))


@kopf.on.cleanup()
async def stop_scheduler(memo: kopf.Memo, **_: Any) -> None:
    if "scheduler_task" in memo:
        memo.scheduler_stopped.set()
        await memo.scheduler_task
        await memo.heap_task
    if "caches_stopped" in memo:
        memo.caches_stopped.set()
