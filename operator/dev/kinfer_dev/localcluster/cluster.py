"""Bring the local cluster up, report on it, tear it down: processes by PID, state in one dir."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import ssl
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from kinfer_dev.localcluster import (
    build,
    controlplane,
    discovery,
    nodes,
    pki,
    prometheus,
    stages,
)
from kinfer_dev.localcluster.config import (
    ClusterConfig,
    node_ips,
    node_pod_cidrs,
    validate_pod_cidr,
)
from kinfer_dev.localcluster.processes import (
    ProcessTable,
    StartupError,
    free_port,
    http_ok,
    https_ok,
    is_alive,
    stop_process,
    wait_until,
)

STATE_FILE = "cluster.json"
# Generous: on a loaded 2-core machine the API server alone can take 30 s.
COMPONENT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ClusterState:
    """What a running cluster recorded at `up`: enough for status, down, clients."""

    state_dir: str
    bin_dir: str
    kubeconfig: str
    server: str
    prometheus_url: str
    pod_cidr: str
    nodes: list[str]
    cold_start_s: float
    ports: dict[str, int]
    started_at: float
    # Simulated-pods mode (fleet runs): what runs instead of the pod runner, and the logs a
    # bench counts an operator's requests in. Absent from older state files: defaults.
    simulated_pods: bool = False
    metrics_simulator_url: str | None = None
    audit_log: str | None = None
    prometheus_query_log: str | None = None
    # The simulated GPU power exporter (pod-runner mode only; power_simulator.py).
    power_simulator_port: int | None = None

    @classmethod
    def load(cls, state_dir: Path) -> ClusterState | None:
        path = state_dir / STATE_FILE
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))


class LocalCluster:
    """One local cluster, rooted at `config.state_dir`."""

    def __init__(self, config: ClusterConfig, out: TextIO = sys.stderr) -> None:
        self.config = config
        self.state_dir = config.state_dir
        self.out = out
        self.processes = ProcessTable(self.state_dir)
        self.pki = pki.Pki(self.state_dir / "pki")

    # -- paths ------------------------------------------------------------
    @property
    def kubeconfig_path(self) -> Path:
        return self.state_dir / "kubeconfig"

    def component_kubeconfig(self, stem: str) -> Path:
        return self.state_dir / "kubeconfigs" / f"{stem}.kubeconfig"

    def state(self) -> ClusterState | None:
        return ClusterState.load(self.state_dir)

    def _say(self, message: str) -> None:
        print(message, file=self.out, flush=True)

    # -- status -----------------------------------------------------------
    def is_running(self) -> bool:
        records = self.processes.load()
        return bool(records) and all(is_alive(r) for r in records)

    def status(self) -> dict[str, Any]:
        state = self.state()
        processes = [
            {"name": r.name, "pid": r.pid, "alive": is_alive(r), "log": r.log}
            for r in self.processes.load()
        ]
        return {
            "stateDir": str(self.state_dir),
            "running": bool(processes) and all(p["alive"] for p in processes),
            "kubeconfig": state.kubeconfig if state else None,
            "server": state.server if state else None,
            "prometheus": state.prometheus_url if state else None,
            "podCIDR": state.pod_cidr if state else None,
            "nodes": state.nodes if state else [],
            "simulatedPods": state.simulated_pods if state else False,
            "metricsSimulator": state.metrics_simulator_url if state else None,
            "auditLog": state.audit_log if state else None,
            "processes": processes,
            "modelServers": self._model_servers(),
        }

    def _model_servers(self) -> list[dict[str, Any]]:
        """The pod runner's servers: one per running pod, with its PID and log."""
        from kinfer_dev.localcluster.processes import ProcessRecord
        from kinfer_dev.localcluster.runner import SERVER_RECORD

        servers = []
        for path in sorted((self.state_dir / "pods").glob(f"*/{SERVER_RECORD}")):
            try:
                record = ProcessRecord(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                continue
            entry = {"pod": record.name, "pid": record.pid, "log": record.log}
            servers.append({**entry, "alive": is_alive(record)})
        return servers

    # -- up ---------------------------------------------------------------
    def up(self) -> ClusterState:
        """Start everything (building binaries first if needed); idempotent when already up."""
        if self.is_running():
            state = self.state()
            if state is not None:
                self._say(f"local cluster already running (state in {self.state_dir})")
                return state
        self._check_previous()
        bin_dir = build.ensure_built(self.config.cache_dir, self.out)
        prometheus_bin = prometheus.prometheus_binary()
        _check_pod_cidr_free(self.config.pod_cidr)
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)
        self.state_dir.mkdir(parents=True)
        try:
            return self._start(bin_dir, prometheus_bin)
        except BaseException:
            self._say(f"local cluster failed to start; logs in {self.state_dir / 'logs'}")
            self.processes.stop_all()
            raise

    def _check_previous(self) -> None:
        """Refuse to start over a previous cluster that still has a process running; one whose
        processes are all gone (killed, or the machine rebooted) is cleared by the fresh start."""
        records = self.processes.load()
        if not records:
            return
        alive = [r.name for r in records if is_alive(r)]
        alive += [server["pod"] for server in self._model_servers() if server["alive"]]
        if alive:
            raise StartupError(
                f"a previous local cluster in {self.state_dir} is partly running"
                f" ({', '.join(alive)}); run `kinfer cluster down` first"
            )
        self._say(
            f"a previous local cluster in {self.state_dir} has stopped (none of its processes"
            " runs); starting a new one"
        )

    def _start(self, bin_dir: Path, prometheus_bin: str) -> ClusterState:
        started = time.monotonic()
        simulated = self.config.simulated_pods
        ports = controlplane.Ports(**{name: free_port() for name in _PORT_NAMES})
        server = f"https://127.0.0.1:{ports.apiserver}"
        self._write_pki(server)
        audit = self._audit() if simulated else None
        self._start_control_plane(bin_dir, ports, server, audit)
        self._start_kwok(bin_dir, ports)
        simulator_port = free_port() if simulated else None
        power_port = None if simulated else free_port()
        prometheus_url, query_log = self._start_prometheus(
            prometheus_bin, ports, simulator_port, power_port
        )
        state = ClusterState(
            state_dir=str(self.state_dir),
            bin_dir=str(bin_dir),
            kubeconfig=str(self.kubeconfig_path),
            server=server,
            prometheus_url=prometheus_url,
            pod_cidr=self.config.pod_cidr,
            nodes=[n.name for n in self.config.nodes],
            cold_start_s=self.config.cold_start_s,
            ports=asdict(ports),
            started_at=time.time(),
            simulated_pods=simulated,
            metrics_simulator_url=(
                f"http://127.0.0.1:{simulator_port}" if simulator_port is not None else None
            ),
            audit_log=str(audit.log_file) if audit else None,
            prometheus_query_log=str(query_log) if query_log else None,
            power_simulator_port=power_port,
        )
        (self.state_dir / STATE_FILE).write_text(json.dumps(asdict(state), indent=2))
        if simulator_port is not None:
            self._start_metrics_simulator(simulator_port)
        else:
            self._start_runner()
        if power_port is not None:
            self._start_power_simulator(power_port)
        self._say(
            f"local cluster up in {time.monotonic() - started:.0f}s: "
            f"export KUBECONFIG={self.kubeconfig_path}"
        )
        return state

    def _write_pki(self, server: str) -> None:
        self._say(f"generating certificates and kubeconfigs in {self.state_dir}")
        self.pki = pki.generate(
            self.state_dir / "pki",
            apiserver_ips=("127.0.0.1",),
            kubelet_ips=tuple(node_ips(self.config.pod_cidr, len(self.config.nodes))),
        )
        for stem, _, _ in pki.CLIENTS:
            if stem == "apiserver-kubelet-client":
                continue  # a TLS identity of the API server's, not an API client
            config = pki.kubeconfig(self.pki, stem, server)
            pki.write_kubeconfig(self.component_kubeconfig(stem), config)
        pki.write_kubeconfig(self.kubeconfig_path, pki.kubeconfig(self.pki, "admin", server))

    def _audit(self) -> controlplane.Audit:
        """The operator's requests in an audit log (simulated-pods mode: fleet benches)."""
        audit_dir = self.state_dir / "audit"
        audit_dir.mkdir()
        audit = controlplane.Audit(audit_dir / "policy.yaml", audit_dir / "audit.log")
        audit.policy_file.write_text(yaml.safe_dump(controlplane.audit_policy(), sort_keys=False))
        return audit

    def _start_control_plane(
        self,
        bin_dir: Path,
        ports: controlplane.Ports,
        server: str,
        audit: controlplane.Audit | None,
    ) -> None:
        self._say("starting etcd")
        etcd = self.processes.start(
            "etcd",
            controlplane.etcd_argv(bin_dir / "etcd", self.state_dir / "etcd", ports),
        )
        wait_until(
            "etcd /health",
            lambda: http_ok(f"http://127.0.0.1:{ports.etcd_client}/health"),
            COMPONENT_TIMEOUT_S,
            record=etcd,
        )

        self._say("starting kube-apiserver")
        apiserver = self.processes.start(
            "kube-apiserver",
            controlplane.apiserver_argv(bin_dir / "kube-apiserver", self.pki, ports, audit),
        )
        admin_tls = self._client_tls("admin")
        wait_until(
            "kube-apiserver /readyz",
            lambda: https_ok(f"{server}/readyz", admin_tls),
            COMPONENT_TIMEOUT_S,
            record=apiserver,
        )

        self._say("starting kube-controller-manager and kube-scheduler")
        manager = self.processes.start(
            "kube-controller-manager",
            controlplane.controller_manager_argv(
                bin_dir / "kube-controller-manager",
                self.pki,
                self.component_kubeconfig("controller-manager"),
                ports,
            ),
        )
        scheduler = self.processes.start(
            "kube-scheduler",
            controlplane.scheduler_argv(
                bin_dir / "kube-scheduler", self.component_kubeconfig("scheduler"), ports
            ),
        )
        insecure = _unverified_tls()
        wait_until(
            "kube-controller-manager /healthz",
            lambda: https_ok(f"https://127.0.0.1:{ports.controller_manager}/healthz", insecure),
            COMPONENT_TIMEOUT_S,
            record=manager,
        )
        wait_until(
            "kube-scheduler /healthz",
            lambda: https_ok(f"https://127.0.0.1:{ports.scheduler}/healthz", insecure),
            COMPONENT_TIMEOUT_S,
            record=scheduler,
        )

    def _start_kwok(self, bin_dir: Path, ports: controlplane.Ports) -> None:
        self._say(f"creating {len(self.config.nodes)} nodes and starting KWOK")
        api = self._core_api()
        self._create_nodes(api)
        kwok_dir = self.state_dir / "kwok"
        kwok_dir.mkdir()
        stages_file = kwok_dir / "stages.yaml"
        stages.write_stages(stages_file, simulated_pods=self.config.simulated_pods)
        kwok = self.processes.start(
            "kwok",
            controlplane.kwok_argv(
                bin_dir / "kwok",
                self.component_kubeconfig("kwok"),
                stages_file,
                self.config.pod_cidr,
                ports,
            ),
            # KWOK would also read ~/.kwok/kwok.yaml: keep it to this cluster's files.
            env={**os.environ, "KWOK_WORKDIR": str(kwok_dir)},
        )
        wait_until(
            "every node Ready and untainted (KWOK, node-lifecycle-controller)",
            lambda: _all_nodes_ready(api, [n.name for n in self.config.nodes]),
            COMPONENT_TIMEOUT_S,
            record=kwok,
        )
        manager = self.processes.get("kube-controller-manager")
        wait_until(
            "the default ServiceAccount (controller-manager)",
            lambda: bool(api.read_namespaced_service_account("default", "default")),
            COMPONENT_TIMEOUT_S,
            record=manager,
        )

    def _start_prometheus(
        self,
        prometheus_bin: str,
        ports: controlplane.Ports,
        simulator_port: int | None,
        power_port: int | None = None,
    ) -> tuple[str, Path | None]:
        """Prometheus on the pods (file_sd the runner writes) or, with simulated pods, on the
        metrics simulator; returns its URL and its query log (simulated pods only)."""
        self._say("starting Prometheus")
        prometheus_config = self.state_dir / "prometheus.yml"
        query_log = None
        if simulator_port is not None:
            query_log = self.state_dir / "prometheus-queries.log"
            config = prometheus.simulated_config(
                f"127.0.0.1:{simulator_port}", self.config.scrape_interval_s, query_log
            )
        else:
            discovery.write_targets(self.state_dir / discovery.TARGETS_FILE, [])
            prometheus.clear_operator_target(self.state_dir)
            config = prometheus.local_config(
                self.state_dir / discovery.TARGETS_FILE,
                self.config.scrape_interval_s,
                prometheus.operator_targets_path(self.state_dir),
                power_simulator_address=f"127.0.0.1:{power_port}" if power_port else None,
            )
        prometheus_config.write_text(yaml.safe_dump(config, sort_keys=False))
        prom = self.processes.start(
            "prometheus",
            prometheus.prometheus_argv(
                prometheus_bin, prometheus_config, self.state_dir / "prometheus", ports.prometheus
            ),
        )
        prometheus_url = f"http://127.0.0.1:{ports.prometheus}"
        wait_until(
            "Prometheus /-/ready",
            lambda: http_ok(f"{prometheus_url}/-/ready"),
            COMPONENT_TIMEOUT_S,
            record=prom,
        )
        return prometheus_url, query_log

    def _start_runner(self) -> None:
        self._say("starting the pod runner")
        runner_ready = self.state_dir / "runner" / "ready"
        runner = self.processes.start(
            "pod-runner",
            [
                sys.executable,
                "-m",
                "kinfer_dev.localcluster.runner",
                f"--state-dir={self.state_dir}",
                f"--kubeconfig={self.component_kubeconfig('runner')}",
                f"--cold-start-seconds={self.config.cold_start_s}",
                f"--kubelet-cert={self.pki.kubelet_cert}",
                f"--kubelet-key={self.pki.kubelet_key}",
                f"--client-ca={self.pki.ca_cert}",
            ],
        )
        wait_until("the pod runner", runner_ready.exists, COMPONENT_TIMEOUT_S, record=runner)

    def _start_metrics_simulator(self, port: int) -> None:
        """Simulated pods: no pod runner (no pod runs anything); the metrics simulator serves
        every Ready pod's metrics instead."""
        self._say("starting the metrics simulator (simulated pods: no pod runner)")
        simulator = self.processes.start(
            "metrics-simulator",
            [
                sys.executable,
                "-m",
                "kinfer_dev.localcluster.metrics_simulator",
                f"--kubeconfig={self.component_kubeconfig('metrics-simulator')}",
                f"--port={port}",
            ],
        )
        wait_until(
            "the metrics simulator /healthz",
            lambda: http_ok(f"http://127.0.0.1:{port}/healthz"),
            COMPONENT_TIMEOUT_S,
            record=simulator,
        )

    def _start_power_simulator(self, port: int) -> None:
        """The simulated GPU power exporter: dcgm-exporter's series for the GPU pods, from a
        model of their load (tests the energy read path only)."""
        self._say("starting the simulated GPU power exporter")
        exporter = self.processes.start(
            "power-simulator",
            [
                sys.executable,
                "-m",
                "kinfer_dev.localcluster.power_simulator",
                f"--kubeconfig={self.component_kubeconfig('power-simulator')}",
                f"--port={port}",
            ],
        )
        wait_until(
            "the simulated GPU power exporter /healthz",
            lambda: http_ok(f"http://127.0.0.1:{port}/healthz"),
            COMPONENT_TIMEOUT_S,
            record=exporter,
        )

    # -- down -------------------------------------------------------------
    def down(self) -> None:
        """Stop every recorded process (the runner's model servers too) and remove the state dir."""
        from kinfer_dev.localcluster.runner import stop_recorded_servers

        self.processes.stop_all()
        stop_recorded_servers(self.state_dir)
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)

    # -- helpers ----------------------------------------------------------
    def _client_tls(self, stem: str) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(str(self.pki.client_cert(stem)), str(self.pki.client_key(stem)))
        return context

    def _core_api(self) -> Any:
        from kubernetes import client, config

        api_client = config.new_client_from_config(config_file=str(self.kubeconfig_path))
        return client.CoreV1Api(api_client)

    def _create_nodes(self, api: Any) -> None:
        ips = node_ips(self.config.pod_cidr, len(self.config.nodes))
        cidrs = node_pod_cidrs(self.config.pod_cidr, len(self.config.nodes))
        for node, node_ip, cidr in zip(self.config.nodes, ips, cidrs, strict=True):
            body = nodes.node_object(node, node_ip, cidr)
            api.create_node(body)
            # Status on create is not guaranteed to stick: write it explicitly.
            api.patch_node_status(node.name, {"status": body["status"]})


# What `restart` can bring back, and the health check each must pass before it returns.
RESTARTABLE = ("kube-apiserver", "prometheus")


def restart(state_dir: Path, name: str, timeout_s: float = COMPONENT_TIMEOUT_S) -> None:
    """Stop one running component (SIGTERM, then SIGKILL) and start it again with the same
    flags, returning once it answers its health check: a crash or upgrade restart. Everything
    else, etcd's data included, stays as it is (chaos tests: e2e/test_chaos.py)."""
    if name not in RESTARTABLE:
        raise ValueError(f"cannot restart {name!r}: one of {', '.join(RESTARTABLE)}")
    state = ClusterState.load(state_dir)
    table = ProcessTable(state_dir)
    record = table.get(name)
    if state is None or record is None:
        raise StartupError(f"no running local cluster with a {name} in {state_dir}")
    url = (
        f"{state.server}/readyz" if name == "kube-apiserver" else f"{state.prometheus_url}/-/ready"
    )
    tls = _admin_tls(state_dir) if name == "kube-apiserver" else None
    stop_process(record)
    started = table.start(name, record.argv)
    wait_until(
        f"{name} healthy after a restart",
        lambda: https_ok(url, tls) if tls else http_ok(url),
        timeout_s,
        record=started,
    )


def _admin_tls(state_dir: Path) -> ssl.SSLContext:
    keys = pki.Pki(state_dir / "pki")
    context = ssl.create_default_context(cafile=str(keys.ca_cert))
    context.load_cert_chain(str(keys.client_cert("admin")), str(keys.client_key("admin")))
    return context


_PORT_NAMES = (
    "etcd_client",
    "etcd_peer",
    "apiserver",
    "controller_manager",
    "scheduler",
    "kwok",
    "prometheus",
)


def _unverified_tls() -> ssl.SSLContext:
    # The controller-manager and scheduler serve /healthz with self-signed
    # certificates they generate; only liveness is checked, on 127.0.0.1.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _all_nodes_ready(api: Any, names: list[str]) -> bool:
    """Ready (KWOK) and schedulable: the not-ready taint lifted (node-lifecycle-controller)."""
    ready = set()
    for node in api.list_node().items:
        taints = {t.key for t in node.spec.taints or []}
        if "node.kubernetes.io/not-ready" in taints:
            continue
        for condition in node.status.conditions or []:
            if condition.type == "Ready" and condition.status == "True":
                ready.add(node.metadata.name)
    return set(names) <= ready


def _listening_addresses() -> list[ipaddress.IPv4Address]:
    addresses = []
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        local, state = fields[1], fields[3]
        if state != "0A":  # LISTEN
            continue
        hex_ip = local.split(":")[0]
        addresses.append(ipaddress.IPv4Address(bytes.fromhex(hex_ip)[::-1]))
    return addresses


def _check_pod_cidr_free(pod_cidr: str) -> None:
    """Two clusters on one pod CIDR would hand out the same pod IPs: refuse early."""
    network = validate_pod_cidr(pod_cidr)
    busy = sorted({str(a) for a in _listening_addresses() if a in network})
    if busy:
        raise StartupError(
            f"pod CIDR {pod_cidr} is in use (listeners on {', '.join(busy[:5])}); another local "
            "cluster may be running: stop it or choose another range with --pod-cidr "
            "(e.g. 127.2.0.0/16)"
        )
