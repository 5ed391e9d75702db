"""The pod runner: a kubelet for kinfer's pods that runs each model server as a local process.

For every pod labelled kinfer.dev/inferenceservice that KWOK gave a (loopback)
IP, it fetches the model the way the init containers would (rclone), waits the
simulated cold start, starts kinfer-ort-server or the local Triton bound to the
pod IP, and reports through two pod annotations that KWOK's Stages turn into
status: kinfer.dev/server-ready and kinfer.dev/server-restarts. A server that
dies is restarted (and counted); a deleted pod's server is stopped.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kinfer_dev.localcluster import discovery
from kinfer_dev.localcluster.config import (
    ANNOTATION_KWOK_NODE,
    ANNOTATION_SERVER_LAST_EXIT_CODE,
    ANNOTATION_SERVER_LAST_EXIT_MESSAGE,
    ANNOTATION_SERVER_READY,
    ANNOTATION_SERVER_RESTARTS,
    ANNOTATION_SERVER_WAITING,
)
from kinfer_dev.localcluster.container_env import (
    CREATE_CONTAINER_CONFIG_ERROR,
    ContainerConfigError,
    container_env,
)
from kinfer_dev.localcluster.kubelet_logs import KubeletLogServer, LogRequestError, LogSource
from kinfer_dev.localcluster.kwok_watchdog import ANNOTATION_RESYNC, Watchdog
from kinfer_dev.localcluster.podplan import (
    LABEL_ISVC,
    Fetch,
    PodPlan,
    UnsupportedPod,
    local_server_args,
    plan_pod,
)
from kinfer_dev.localcluster.processes import ProcessRecord, _start_ticks, is_alive, stop_process
from kinfer_dev.runtime.process import find_executable

log = logging.getLogger("kinfer.pod-runner")

POLL_INTERVAL_S = 0.5
HEALTH_INTERVAL_S = 1.0
# A server that does not answer /v2/health/ready this long after start is restarted.
READY_TIMEOUT_S = 180.0
FETCH_TIMEOUT_S = 300.0
MAX_BACKOFF_S = 20.0
SERVER_RECORD = "server.json"
SERVER_LOG = "server.log"
PREVIOUS_SERVER_LOG = "server.previous.log"  # the run before the last restart


# How often a failed init container's report is checked (see PodRunner._hold_init_failure).
INIT_FAILURE_RECHECK_S = 3.0


# A kubelet's terminated.message under FallbackToLogsOnError, when the container's message
# file is empty (a local fetch has none): the log's last 80 lines, at most their last 2048
# bytes (kubecontainer.MaxContainerTerminationMessageLogLines and ...LogLength).
TERMINATION_MESSAGE_LOG_LINES = 80
TERMINATION_MESSAGE_LOG_BYTES = 2048


def termination_message_from_log(log: bytes) -> str:
    """What a kubelet writes into terminated.message from a failed container's log."""
    lines = log.splitlines(keepends=True)[-TERMINATION_MESSAGE_LOG_LINES:]
    return b"".join(lines)[-TERMINATION_MESSAGE_LOG_BYTES:].decode(errors="replace")


def rclone_binary(state_dir: Path) -> str | None:
    """The cluster's rclone, built with its other binaries from the pinned Go module (the
    version the storage-initializer image runs), else the one on PATH."""
    from kinfer_dev.localcluster.cluster import STATE_FILE

    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        built = Path(json.loads((state_dir / STATE_FILE).read_text())["bin_dir"]) / "rclone"
        if built.is_file():
            return str(built)
    return shutil.which("rclone")


class InitContainerFailed(RuntimeError):
    """An init container (the model fetch) exited non-zero, as a kubelet reports it; or, with
    `waiting_reason`, never started (CreateContainerConfigError: a missing Secret or key)."""

    def __init__(
        self,
        container: str,
        exit_code: int,
        output_tail: str,
        log_message: str = "",
        waiting_reason: str | None = None,
    ) -> None:
        self.container = container
        self.exit_code = exit_code
        self.output_tail = output_tail
        # terminated.message under FallbackToLogsOnError (termination_message_from_log).
        self.log_message = log_message
        self.waiting_reason = waiting_reason
        what = waiting_reason or f"exited {exit_code}"
        super().__init__(f"init container {container} {what}: {output_tail}")

    def state(self, message_from_log: bool, now: str) -> dict[str, Any]:
        """The container's state in the pod's status, as a kubelet writes it."""
        if self.waiting_reason:
            return {"waiting": {"reason": self.waiting_reason, "message": self.output_tail}}
        terminated = {"exitCode": self.exit_code, "reason": "Error", "finishedAt": now}
        # As a real kubelet: the log's tail only under FallbackToLogsOnError.
        if message_from_log:
            terminated["message"] = self.log_message
        return {"terminated": terminated}

    def is_reported(self, state: Any) -> bool:
        """Whether a V1ContainerState already shows this failure."""
        if state is None:
            return False
        if self.waiting_reason:
            return state.waiting is not None and state.waiting.reason == self.waiting_reason
        return state.terminated is not None and state.terminated.exit_code == self.exit_code


def output_tail(text: str, limit: int = 800) -> str:
    """The last whole lines of `text` that fit in `limit` characters (the cause is at the end)."""
    lines = text.rstrip().splitlines()
    kept: list[str] = []
    size = 0
    for line in reversed(lines):
        if kept and size + len(line) + 1 > limit:
            break
        kept.append(line[-limit:])
        size += len(line) + 1
    return "\n".join(reversed(kept))


@dataclass
class PodServer:
    """The runner's view of one pod: its plan, its server process and what it last reported."""

    plan: PodPlan
    process: subprocess.Popen | None = None
    restarts: int = 0
    reported_ready: bool | None = None
    reported_restarts: int | None = None
    ready: bool = False
    stopping: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    init_running: str | None = None  # the init container (model fetch) running now
    waiting: str = ""  # CrashLoopBackOff between an exit and the restart
    last_exit: tuple[int, str] | None = None  # (exit code, terminated.message)
    reported_waiting: str | None = None


class PodRunner:
    def __init__(
        self,
        state_dir: Path,
        kubeconfig: Path,
        cold_start_s: float,
        tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        from kubernetes import client, config

        self.state_dir = state_dir
        self.cold_start_s = cold_start_s
        api_client = config.new_client_from_config(config_file=str(kubeconfig))
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.api_client = api_client
        self.pods: dict[str, PodServer] = {}
        self.refused: dict[str, str] = {}
        self.stopping_ips: dict[str, threading.Thread] = {}
        self.stop_event = threading.Event()
        self.tls = tls  # (serving cert, key, client CA) of the nodes' kubelet endpoint
        self.log_servers: list[KubeletLogServer] = []
        self.watchdog = Watchdog()  # pods whose KWOK Stage was dropped

    # -- kubectl logs -----------------------------------------------------
    def serve_logs(self) -> None:
        """Serve `kubectl logs` at every KWOK node's address and kubelet port."""
        if self.tls is None:
            return
        cert, key, client_ca = self.tls
        for node in self.core.list_node().items:
            if (node.metadata.annotations or {}).get(ANNOTATION_KWOK_NODE) != "fake":
                continue
            address = next(
                (a.address for a in node.status.addresses or () if a.type == "InternalIP"), None
            )
            endpoints = node.status.daemon_endpoints
            port = endpoints.kubelet_endpoint.port if endpoints else None
            if not address or not port:
                log.warning(
                    "node %s has no InternalIP or kubelet port: no logs", node.metadata.name
                )
                continue
            server = KubeletLogServer(
                (address, port),
                self.locate_log,
                cert_file=cert,
                key_file=key,
                client_ca_file=client_ca,
            )
            server.start()
            self.log_servers.append(server)
            log.info("serving kubectl logs for node %s on %s:%d", node.metadata.name, address, port)

    def locate_log(
        self, namespace: str, pod: str, container: str, previous: bool = False
    ) -> LogSource:
        """A container's log file, as the kubelet would find it (LogRequestError if none)."""
        key = f"{namespace}/{pod}"
        server = self.pods.get(key)
        if server is None:
            reason = self.refused.get(key)
            if reason:
                raise LogRequestError(400, f"pod {key} is not run locally: {reason}")
            raise LogRequestError(404, f"pod {key} is not run by the local pod runner (yet)")
        plan = server.plan
        logs = plan.work_dir / "logs"
        if container not in (plan.container, *(f.container for f in plan.fetches)):
            raise LogRequestError(400, f"container {container} is not valid for pod {pod}")
        if previous:
            # Only the server restarts (init containers run once): its last run's log.
            path = logs / PREVIOUS_SERVER_LOG
            if container != plan.container or not path.exists():
                raise LogRequestError(
                    400, f'previous terminated container "{container}" in pod "{pod}" not found'
                )
            return LogSource(path, lambda: False)
        if container == plan.container:

            def running() -> bool:
                return self.pods.get(key) is server and not server.stopping.is_set()

            return LogSource(logs / SERVER_LOG, running)
        return LogSource(logs / f"{container}.log", lambda: server.init_running == container)

    # -- the loop ---------------------------------------------------------
    def run(self) -> None:
        ready_file = self.state_dir / "runner" / "ready"
        ready_file.parent.mkdir(parents=True, exist_ok=True)
        while not self.stop_event.is_set():
            try:
                pods = self._list_pods()
            except Exception as error:
                log.warning("listing pods failed: %s", error)
                self.stop_event.wait(2.0)
                continue
            ready_file.touch()
            discovery.write_targets(
                self.state_dir / discovery.TARGETS_FILE, discovery.pod_targets(list(pods.values()))
            )
            self._sync(pods)
            self._resync_stalled(pods)
            self.stop_event.wait(POLL_INTERVAL_S)
        # Signal every server first so they shut down in parallel, then reap.
        for server in self.pods.values():
            server.stopping.set()
            if server.process is not None and server.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(server.process.pid, signal.SIGTERM)
        for key in list(self.pods):
            self._stop_pod(key, wait=True)
        for log_server in self.log_servers:
            log_server.stop()

    def _list_pods(self) -> dict[str, dict[str, Any]]:
        response = self.core.list_pod_for_all_namespaces(
            label_selector=LABEL_ISVC, _preload_content=False
        )
        items = json.loads(response.data)["items"]
        return {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in items}

    def _sync(self, pods: dict[str, dict[str, Any]]) -> None:
        for key in list(self.pods):
            pod = pods.get(key)
            current = self.pods[key]
            if (
                pod is None
                or pod["metadata"].get("deletionTimestamp")
                or (pod["metadata"]["uid"] != current.plan.uid)
            ):
                self._stop_pod(key)
        for key, pod in pods.items():
            if key in self.pods or key in self.refused:
                continue
            if pod["metadata"].get("deletionTimestamp") or not pod["spec"].get("nodeName"):
                continue
            if not (pod.get("status") or {}).get("podIP"):
                continue
            try:
                plan = plan_pod(pod, self.state_dir)
            except UnsupportedPod as error:
                self.refused[key] = str(error)
                log.error("pod %s not run: %s", key, error)
                self._event(pod, "Warning", "LocalRunRefused", str(error))
                continue
            server = PodServer(plan)
            server.thread = threading.Thread(
                target=self._supervise, args=(server, pod), name=f"pod-{key}", daemon=True
            )
            self.pods[key] = server
            server.thread.start()
        # Forget refusals of pods that are gone so a recreated pod is tried again.
        for key in [k for k in self.refused if k not in pods]:
            del self.refused[key]

    def _resync_stalled(self, pods: dict[str, dict[str, Any]]) -> None:
        """Bump each pod whose KWOK Stage was dropped (kwok_watchdog), as a kubelet's status
        sync would write it again."""
        for key, owed in self.watchdog.due(pods, time.monotonic()):
            pod = pods[key]["metadata"]
            patch = {"metadata": {"annotations": {ANNOTATION_RESYNC: str(time.time())}}}
            try:
                self.core.patch_namespaced_pod(pod["name"], pod["namespace"], patch)
            except Exception as error:
                log.warning("pod %s: resync failed: %s", key, error)
                continue
            log.warning(
                "pod %s: KWOK left %s undone for %.0fs; bumped it", key, owed, self.watchdog.stall_s
            )

    # -- one pod ----------------------------------------------------------
    def _supervise(self, server: PodServer, pod: dict[str, Any]) -> None:
        plan = server.plan
        if not self._prepared(server, pod):
            return
        delay = plan.cold_start_s
        if delay is None:
            delay = self._isvc_cold_start(plan, pod)
        if delay > 0:
            log.info("pod %s: simulated cold start %.1fs", plan.key, delay)
            if server.stopping.wait(delay):
                return
        previous = self.stopping_ips.get(plan.pod_ip)
        if previous is not None:
            previous.join(timeout=30)
        backoff = 1.0
        while not server.stopping.is_set():
            started = time.monotonic()
            try:
                self._start_server(server)
            except Exception as error:
                log.error("pod %s: server did not start: %s", plan.key, error)
                self._event(pod, "Warning", "ServerStartFailed", str(error)[:1000])
                server.stopping.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            self._watch_server(server, started)
            if server.stopping.is_set():
                return
            server.restarts += 1
            server.ready = False
            server.waiting, server.last_exit = "CrashLoopBackOff", self._last_exit(server)
            log.warning("pod %s: server exited; restart #%d", plan.key, server.restarts)
            self._event(
                pod, "Warning", "BackOff", f"model server exited; restarting (#{server.restarts})"
            )
            self._report(server, ready=False)
            if server.stopping.wait(backoff):
                return
            backoff = min(backoff * 2, MAX_BACKOFF_S)
            server.waiting = ""
            self._report(server, ready=False)

    def _prepared(self, server: PodServer, pod: dict[str, Any]) -> bool:
        """Prepare the pod (`_prepare`) as a kubelet's pod sync does: a failed init container
        is held in the pod's status; any other failure (the API server away while a
        ConfigMap is read) is tried again, with backoff, until the pod stops. False: the
        server is not to start."""
        backoff = 1.0
        while not server.stopping.is_set():
            try:
                self._prepare(server, pod)
                return True
            except Exception as error:
                log.error("pod %s: preparing failed: %s", server.plan.key, error)
                self._event(pod, "Warning", "FetchFailed", str(error)[:1000])
                self._report(server, ready=False)
                if isinstance(error, InitContainerFailed):
                    self._hold_init_failure(server, error)
                    return False
            if server.stopping.wait(backoff):
                return False
            backoff = min(backoff * 2, MAX_BACKOFF_S)
        return False

    def _last_exit(self, server: PodServer) -> tuple[int, str] | None:
        """A kubelet's lastState.terminated of the server: its exit code (128 + the signal
        when killed) and, under FallbackToLogsOnError, the tail of its log."""
        process = server.process
        if process is None or process.returncode is None:
            return None
        code = process.returncode if process.returncode >= 0 else 128 - process.returncode
        message = ""
        if server.plan.server_message_from_log:
            with contextlib.suppress(OSError):
                log_path = server.plan.work_dir / "logs" / SERVER_LOG
                message = termination_message_from_log(log_path.read_bytes())
        return code, message

    def _prepare(self, server: PodServer, pod: dict[str, Any]) -> None:
        """Volumes, ConfigMaps and the model fetch: what the init containers do."""
        plan = server.plan
        plan.work_dir.mkdir(parents=True, exist_ok=True)
        for volume in pod["spec"].get("volumes") or []:
            if "persistentVolumeClaim" not in volume:
                (plan.work_dir / "volumes" / volume["name"]).mkdir(parents=True, exist_ok=True)
        for configmap, directory in plan.configmap_volumes.items():
            data = self._configmap(plan.namespace, configmap)
            directory.mkdir(parents=True, exist_ok=True)
            for key, value in data.items():
                (directory / key).write_text(value)
        logs = plan.work_dir / "logs"
        logs.mkdir(exist_ok=True)
        for fetch in plan.fetches:
            rclone = rclone_binary(self.state_dir)
            if rclone is None:
                raise RuntimeError("rclone is not installed (kinfer cluster build builds it)")
            env = {**os.environ, **fetch.env, **self._fetch_env(plan, fetch)}
            env.setdefault("RCLONE_CONFIG", str(plan.work_dir / "rclone.conf"))
            server.init_running = fetch.container
            with open(logs / f"{fetch.container}.log", "wb") as out:
                result = subprocess.run(
                    [rclone, *fetch.argv[1:]],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=FETCH_TIMEOUT_S,
                    check=False,
                )
            server.init_running = None
            if result.returncode != 0:
                log_bytes = (logs / f"{fetch.container}.log").read_bytes()
                raise InitContainerFailed(
                    fetch.container,
                    result.returncode,
                    output_tail(log_bytes.decode(errors="replace")),
                    termination_message_from_log(log_bytes),
                )
        for config_file in plan.config_files:
            data = self._configmap(plan.namespace, config_file.configmap)
            if config_file.key not in data:
                raise RuntimeError(
                    f"ConfigMap {config_file.configmap} has no key {config_file.key!r}"
                )
            config_file.path.parent.mkdir(parents=True, exist_ok=True)
            config_file.path.write_text(data[config_file.key])
        if plan.runtime == "triton":
            from kinfer_dev.runtime.local_triton import to_python_backend

            to_python_backend(plan.model_repository)

    def _fetch_env(self, plan: PodPlan, fetch: Fetch) -> dict[str, str]:
        """The fetch's Secrets and $(VAR) references resolved, as a kubelet does; a missing
        Secret or key is the kubelet's CreateContainerConfigError."""

        def read_secret(name: str) -> dict[str, str] | None:
            from kubernetes.client.exceptions import ApiException

            try:
                secret = self.core.read_namespaced_secret(name, plan.namespace)
            except ApiException as error:
                if error.status == 404:
                    return None
                raise
            data = secret.data or {}
            return {key: base64.b64decode(value).decode() for key, value in data.items()}

        try:
            return container_env(plan.namespace, fetch.env_from, fetch.env_entries, read_secret)
        except ContainerConfigError as error:
            raise InitContainerFailed(
                fetch.container, 0, str(error), waiting_reason=CREATE_CONTAINER_CONFIG_ERROR
            ) from None

    def _configmap(self, namespace: str, name: str) -> dict[str, str]:
        return dict(self.core.read_namespaced_config_map(name, namespace).data or {})

    def _isvc_cold_start(self, plan: PodPlan, pod: dict[str, Any]) -> float:
        """The InferenceService's annotation applies to all its pods; else the cluster default."""
        from kinfer_dev.localcluster.config import ANNOTATION_COLD_START_S

        name = (pod["metadata"].get("labels") or {}).get(LABEL_ISVC)
        try:
            isvc = self.custom.get_namespaced_custom_object(
                "kinfer.dev", "v1alpha1", plan.namespace, "inferenceservices", name
            )
            raw = (isvc["metadata"].get("annotations") or {}).get(ANNOTATION_COLD_START_S)
            if raw not in (None, ""):
                return max(0.0, float(raw))
        except Exception as error:
            log.debug("no InferenceService annotation for %s: %s", plan.key, error)
        return self.cold_start_s

    def _start_server(self, server: PodServer) -> None:
        plan = server.plan
        argv, env = server_command(plan)
        logs = plan.work_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        if server.restarts and (logs / SERVER_LOG).exists():
            # As a kubelet keeps the last terminated run: `kubectl logs --previous`.
            os.replace(logs / SERVER_LOG, logs / PREVIOUS_SERVER_LOG)
        with open(logs / SERVER_LOG, "ab") as out:
            server.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=plan.work_dir,
                start_new_session=True,
            )
        record = ProcessRecord(
            plan.key,
            server.process.pid,
            argv,
            str(logs / SERVER_LOG),
            _start_ticks(server.process.pid) or 0,
        )
        (plan.work_dir / SERVER_RECORD).write_text(json.dumps(asdict(record)))
        log.info(
            "pod %s: started %s on %s (pid %d)", plan.key, plan.runtime, plan.pod_ip, record.pid
        )

    def _watch_server(self, server: PodServer, started: float) -> None:
        """Until the process exits or the pod goes: report readiness changes only."""
        plan = server.plan
        url = f"http://{plan.pod_ip}:{plan.ports['http']}/v2/health/ready"
        failures = 0
        while not server.stopping.is_set():
            process = server.process
            if process is None or process.poll() is not None:
                return
            ok = _http_ok(url)
            failures = 0 if ok else failures + 1
            if ok and not server.ready:
                server.ready = True
            elif server.ready and failures >= 3:
                server.ready = False
            elif not server.ready and time.monotonic() - started > READY_TIMEOUT_S:
                log.error("pod %s: not ready after %.0fs; restarting", plan.key, READY_TIMEOUT_S)
                _terminate(process)
                return
            if server.ready or server.reported_ready is not None:
                # Every pass, not only on a change: a report that failed (the API server
                # restarting) is made again, as a kubelet's status sync would (no write when
                # nothing changed).
                self._report(server, ready=server.ready)
            server.stopping.wait(HEALTH_INTERVAL_S)

    def _report(self, server: PodServer, *, ready: bool) -> None:
        """Patch the pod's annotations, only when they change (no writes while nothing does)."""
        if (server.reported_ready, server.reported_restarts, server.reported_waiting) == (
            ready,
            server.restarts,
            server.waiting,
        ):
            return
        plan = server.plan
        annotations = {
            ANNOTATION_SERVER_READY: "true" if ready else "false",
            ANNOTATION_SERVER_RESTARTS: str(server.restarts),
            ANNOTATION_SERVER_WAITING: server.waiting,
        }
        if server.last_exit is not None:
            annotations[ANNOTATION_SERVER_LAST_EXIT_CODE] = str(server.last_exit[0])
            annotations[ANNOTATION_SERVER_LAST_EXIT_MESSAGE] = server.last_exit[1]
        patch = {"metadata": {"annotations": annotations}}
        try:
            self.core.patch_namespaced_pod(plan.name, plan.namespace, patch)
        except Exception as error:
            log.warning("pod %s: annotating failed: %s", plan.key, error)
            return
        server.reported_ready = ready
        server.reported_restarts = server.restarts
        server.reported_waiting = server.waiting

    def _hold_init_failure(self, server: PodServer, error: InitContainerFailed) -> None:
        """Keep the failed init container in the pod's status until the pod goes, as a kubelet
        would. KWOK's own init-container stages may still be under way when a fetch fails
        fast, and one of them can overwrite the report: so check every few seconds and write
        it again (a read each time, a write only when it was lost)."""
        plan = server.plan
        while not server.stopping.is_set():
            try:
                pod = self.core.read_namespaced_pod(plan.name, plan.namespace)
                statuses = pod.status.init_container_statuses or []
                reported = any(
                    s.name == error.container and error.is_reported(s.state) for s in statuses
                )
            except Exception as read_error:
                log.debug("pod %s: reading its status failed: %s", plan.key, read_error)
                reported = False
            if not reported:
                self._report_init_failure(server, error)
            server.stopping.wait(INIT_FAILURE_RECHECK_S)

    def _report_init_failure(self, server: PodServer, error: InitContainerFailed) -> None:
        """Write the failed init container into the pod's status, as a kubelet does, so
        `kubectl get pods` and kinfer's Ready condition see it."""
        plan = server.plan
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        statuses = []
        for fetch in plan.fetches:
            name = fetch.container
            failed = name == error.container
            state = (
                error.state(fetch.message_from_log, now)
                if failed
                else {"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": now}}
            )
            statuses.append(
                {"name": name, "ready": not failed, "restartCount": 0, "image": "", "imageID": "",
                 "state": state}
            )  # fmt: skip
        try:
            self.core.patch_namespaced_pod_status(
                plan.name, plan.namespace, {"status": {"initContainerStatuses": statuses}}
            )
        except Exception as report_error:
            log.warning("pod %s: reporting the init failure failed: %s", plan.key, report_error)

    def _stop_pod(self, key: str, wait: bool = False) -> None:
        """Stop a pod's server in the background (a slow shutdown must not hold up the loop):
        after its preStop sleep, as a kubelet, unless the runner itself is stopping (`wait`)."""
        server = self.pods.pop(key)
        server.stopping.set()
        drain_s = 0.0 if wait else server.plan.prestop_sleep_s
        stopper = threading.Thread(
            target=self._finish_stop, args=(key, server, drain_s), name=f"stop-{key}", daemon=True
        )
        # KWOK may hand the freed pod IP to a new pod: its server waits for this one.
        self.stopping_ips[server.plan.pod_ip] = stopper
        stopper.start()
        if wait:
            stopper.join(timeout=30)

    def _finish_stop(self, key: str, server: PodServer, drain_s: float = 0.0) -> None:
        if server.process is not None and server.process.poll() is None and drain_s > 0:
            log.info("pod %s: preStop sleep %.0fs, then SIGTERM", key, drain_s)
            self.stop_event.wait(drain_s)
        if server.process is not None:
            _terminate(server.process)
        if server.thread is not None:
            server.thread.join(timeout=15)
        shutil.rmtree(server.plan.work_dir, ignore_errors=True)
        if self.stopping_ips.get(server.plan.pod_ip) is threading.current_thread():
            del self.stopping_ips[server.plan.pod_ip]
        log.info("pod %s: stopped and cleaned up", key)

    def _event(self, pod: dict[str, Any], kind: str, reason: str, message: str) -> None:
        from kubernetes import client

        meta = pod["metadata"]
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(
                generate_name=f"{meta['name']}.", namespace=meta["namespace"]
            ),
            involved_object=client.V1ObjectReference(
                kind="Pod",
                api_version="v1",
                name=meta["name"],
                namespace=meta["namespace"],
                uid=meta["uid"],
            ),
            reason=reason,
            message=message,
            type=kind,
            source=client.V1EventSource(component="kinfer-pod-runner"),
            first_timestamp=now,
            last_timestamp=now,
            count=1,
        )
        try:
            self.core.create_namespaced_event(meta["namespace"], body)
        except Exception as error:
            log.warning("event for %s/%s failed: %s", meta["namespace"], meta["name"], error)


def server_command(plan: PodPlan) -> tuple[list[str], dict[str, str]]:
    """The local command and environment of the pod's model server."""
    env = {**os.environ, **plan.env}
    args = local_server_args(plan)
    if plan.runtime == "triton":
        from kinfer_dev.runtime import local_triton

        backends = local_triton.prepare_backend_dir(plan.work_dir)
        argv = [
            str(local_triton.tritonserver_binary()),
            *args,
            f"--backend-directory={backends}",
            f"--cache-directory={plan.work_dir / 'caches'}",
        ]
        return argv, local_triton.triton_env(env)
    command = find_executable("kinfer-ort-server")
    if not command:
        raise RuntimeError(
            "kinfer-ort-server is not installed (pip install -e runtime_images/onnxruntime)"
        )
    return [command, *args], env


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _terminate(process: subprocess.Popen, timeout_s: float = 10.0) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout_s)
    except ProcessLookupError:
        pass


def stop_recorded_servers(state_dir: Path) -> None:
    """Stop model servers a dead runner left behind (used by `kinfer cluster down`)."""
    for record_path in (state_dir / "pods").glob(f"*/{SERVER_RECORD}"):
        try:
            record = ProcessRecord(**json.loads(record_path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if is_alive(record):
            stop_process(record)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kinfer-pod-runner", description=__doc__)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--cold-start-seconds", type=float, default=0.0)
    parser.add_argument("--kubelet-cert", type=Path, help="serving cert for `kubectl logs`")
    parser.add_argument("--kubelet-key", type=Path)
    parser.add_argument("--client-ca", type=Path, help="CA of the API server's client cert")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    # A previous runner of this cluster that died left its servers bound to
    # the pod IPs; stop them so this one can start the pods afresh.
    stop_recorded_servers(args.state_dir)
    tls = None
    if args.kubelet_cert and args.kubelet_key and args.client_ca:
        tls = (args.kubelet_cert, args.kubelet_key, args.client_ca)
    runner = PodRunner(args.state_dir, args.kubeconfig, args.cold_start_seconds, tls)
    runner.serve_logs()
    signal.signal(signal.SIGTERM, lambda *_: runner.stop_event.set())
    signal.signal(signal.SIGINT, lambda *_: runner.stop_event.set())
    log.info(
        "pod runner started (state %s, cold start %.1fs)", args.state_dir, args.cold_start_seconds
    )
    runner.run()
    log.info("pod runner stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
