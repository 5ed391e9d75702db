"""kopf registrations: each handler is a few lines around `reconcile`.

Handlers are sync (kopf runs them in its thread pool), so the blocking
Kubernetes client never stalls kopf's event loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from kinfer.api import constants as c
from kinfer.config import RenderOptions
from kinfer.controller import control_loop, scheduler
from kinfer.controller.kube import Kube
from kinfer.controller.reconcile import Outcome, reconcile, refresh_status
from kinfer.controller.status import CONTROL_LOOP_CONDITIONS, RECONCILE_CONDITIONS

log = logging.getLogger(__name__)

# Set once by `kinfer run` before kopf starts (see controller/cli.py).
STATE: dict[str, Any] = {}
RESYNC_INTERVAL_S = 30.0


def _kube() -> Kube:
    return STATE["kube"]


def _options() -> RenderOptions:
    return STATE["render_options"]


def _write(
    body: dict[str, Any], outcome: Outcome, owned: frozenset[str] = RECONCILE_CONDITIONS
) -> None:
    meta = body["metadata"]
    if outcome.status_patch:
        _kube().patch_isvc_status(meta["namespace"], meta["name"], outcome.status_patch, owned)
    for event in outcome.events:
        _kube().post_event(body, event.type, event.reason, event.message, event.action)


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
    settings.networking.request_timeout = 60


@kopf.on.resume(c.GROUP, c.VERSION, c.PLURAL)
@kopf.on.create(c.GROUP, c.VERSION, c.PLURAL)
@kopf.on.update(c.GROUP, c.VERSION, c.PLURAL)
def reconcile_inference_service(body: kopf.Body, **_: Any) -> None:
    obj = dict(body)
    _write(obj, reconcile(obj, _kube(), _options()))


@kopf.on.event("apps", "v1", "deployments", labels={c.LABEL_ISVC: kopf.PRESENT})
def deployment_changed(meta: kopf.Meta, **_: Any) -> None:
    """Keep the parent's status true as its Deployment's pods come and go."""
    name = meta.get("labels", {}).get(c.LABEL_ISVC)
    parent = _kube().get(c.API_VERSION, c.KIND, meta.get("namespace"), name)
    if parent is None or parent["metadata"].get("deletionTimestamp"):
        return
    _write(parent, refresh_status(parent, _kube(), _options()))


def _write_period(body: dict[str, Any], result: control_loop.PeriodResult) -> None:
    meta = body["metadata"]
    if result.replicas is not None:
        # Through spec.replicas, like `kubectl scale`: the update handler rolls it out.
        _kube().patch_isvc_spec(meta["namespace"], meta["name"], {"replicas": result.replicas})
    _write(
        body,
        Outcome(status_patch=result.status_patch, events=result.events),
        CONTROL_LOOP_CONDITIONS,
    )


def _tick(key: tuple[str, str], memory: control_loop.LoopMemory, resync: bool) -> None:
    """One InferenceService's tick: its control loop; with `resync`, a reconcile first
    (heals drift: a child edited or deleted by hand; follows GPU capacity)."""
    namespace, name = key
    body = _kube().get(c.API_VERSION, c.KIND, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return
    if resync:
        _write(body, reconcile(body, _kube(), _options()))
    result = control_loop.run_period(body, _kube(), STATE.get("metrics_reader"), memory)
    _write_period(body, result)


@kopf.on.event(c.GROUP, c.VERSION, c.PLURAL)
def inference_service_seen(type: str | None, body: kopf.Body, **_: Any) -> None:
    """The scheduler's list of InferenceServices follows the watch."""
    _scheduler().observe(type, dict(body))


def _scheduler() -> scheduler.Scheduler:
    if "scheduler" not in STATE:
        STATE["scheduler"] = scheduler.Scheduler(
            tick=_tick, tick_s=control_loop.TICK_S, resync_s=RESYNC_INTERVAL_S
        )
    return STATE["scheduler"]


@kopf.on.startup()
async def start_scheduler(**_: Any) -> None:
    stopped = asyncio.Event()
    STATE["scheduler_stopped"] = stopped
    STATE["scheduler_task"] = asyncio.create_task(_scheduler().run(stopped))


@kopf.on.cleanup()
async def stop_scheduler(**_: Any) -> None:
    if "scheduler_task" in STATE:
        STATE["scheduler_stopped"].set()
        await STATE["scheduler_task"]
