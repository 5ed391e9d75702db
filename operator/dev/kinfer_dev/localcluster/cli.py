"""`kinfer cluster up|down|status|kubeconfig|build|demo`: the local cluster's command line."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path


def kinfer_command() -> str:
    """How to run this kinfer from the user's shell: `kinfer` when that is on PATH and is this
    one, else this executable's path (relative to the current directory when inside it, as
    `.venv/bin/kinfer` after `make demo`)."""
    this = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    on_path = shutil.which("kinfer")
    if this is None or this.name != "kinfer":
        return "kinfer"
    if on_path and Path(on_path).resolve() == this:
        return "kinfer"
    try:
        return os.fspath(Path(sys.argv[0]).absolute().relative_to(Path.cwd()))
    except ValueError:
        return os.fspath(Path(sys.argv[0]).absolute())


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "cluster",
        help="a local Kubernetes cluster with simulated GPU nodes (no Docker needed)",
        description=(
            "A real control plane (etcd, kube-apiserver, controller-manager, scheduler) built "
            "from pinned Go modules, KWOK nodes with simulated GPUs, a pod runner that runs "
            "model servers as local processes on loopback pod IPs, and Prometheus."
        ),
    )
    sub = parser.add_subparsers(dest="cluster_command", metavar="CLUSTER_COMMAND", required=True)

    up = sub.add_parser("up", help="start the local cluster (builds the binaries the first time)")
    _common(up)
    up.add_argument(
        "--pod-cidr",
        help="loopback range for pod and node IPs (env KINFER_CLUSTER_POD_CIDR; default "
        "127.1.0.0/16)",
    )
    up.add_argument(
        "--nodes-file",
        type=Path,
        help="YAML file with `nodes: [...]` replacing the default nodes (env KINFER_CLUSTER_NODES)",
    )
    up.add_argument(
        "--cold-start-seconds",
        type=float,
        help="simulated image pull + model load before each pod's server starts "
        "(env KINFER_CLUSTER_COLD_START_SECONDS; per InferenceService: annotation "
        "kinfer.dev/simulated-cold-start-seconds)",
    )
    up.add_argument(
        "--simulated-pods",
        action="store_true",
        default=None,
        help="fleet runs: kinfer's pods become Ready without a model server, and a metrics "
        "simulator serves their metrics from each InferenceService's annotation "
        "kinfer.dev/simulated-load (env KINFER_CLUSTER_SIMULATED_PODS=1; see "
        "docs/local-cluster.md)",
    )
    up.set_defaults(handler=_up)

    down = sub.add_parser("down", help="stop every process of the local cluster, remove its state")
    _common(down)
    down.set_defaults(handler=_down)

    status = sub.add_parser("status", help="show what runs")
    _common(status)
    status.add_argument("--json", action="store_true", help="one JSON object on stdout")
    status.set_defaults(handler=_status)

    kubeconfig = sub.add_parser(
        "kubeconfig",
        help="print the admin kubeconfig's path: export KUBECONFIG=$(kinfer cluster kubeconfig)",
    )
    _common(kubeconfig)
    kubeconfig.set_defaults(handler=_kubeconfig)

    build = sub.add_parser("build", help="build the cluster's binaries into the cache (idempotent)")
    _common(build)
    build.add_argument(
        "--set",
        choices=("local", "kind", "helm"),
        default="local",
        help="local: the local cluster's binaries (default); kind: also those of the kind "
        "node image and its cluster (kubelet, kubeadm, kube-proxy, CoreDNS, crictl, "
        "Prometheus, kind); helm: helm alone, in a folder of its own (the chart's tests)",
    )
    build.set_defaults(handler=_build)

    demo = sub.add_parser(
        "demo",
        help="bring up the local cluster (or use KUBECONFIG), install kinfer, serve a tiered, "
        "autoscaled model, send inference requests, then a load spike (timeline PNG, SLO)",
    )
    _common(demo)
    demo.add_argument(
        "--timeout-seconds",
        type=float,
        default=600.0,
        help="limit for the InferenceService to become Ready",
    )
    demo.add_argument(
        "--no-spike",
        dest="spike",
        action="store_false",
        help="skip the load spike (make demo SPIKE=0): a quick check that kinfer installs and "
        "serves",
    )
    demo.set_defaults(handler=_demo)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="where the cluster keeps its state (env KINFER_CLUSTER_DIR; default "
        "${XDG_STATE_HOME:-~/.local/state}/kinfer/cluster)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="where built binaries are cached (env KINFER_CACHE_DIR; default "
        "${XDG_CACHE_HOME:-~/.cache}/kinfer)",
    )


def _config(args: argparse.Namespace):  # -> ClusterConfig
    from kinfer_dev.localcluster.config import ClusterConfig, load_nodes

    nodes = load_nodes(args.nodes_file) if getattr(args, "nodes_file", None) else None
    return ClusterConfig.from_env(
        state_dir=args.state_dir,
        cache_dir=args.cache_dir,
        pod_cidr=getattr(args, "pod_cidr", None),
        nodes=nodes,
        cold_start_s=getattr(args, "cold_start_seconds", None),
        simulated_pods=getattr(args, "simulated_pods", None),
    )


def _cluster(args: argparse.Namespace):  # -> LocalCluster
    from kinfer_dev.localcluster.cluster import LocalCluster

    return LocalCluster(_config(args))


def _fail(message: str) -> int:
    print(f"kinfer cluster: {message}", file=sys.stderr)
    return 1


def _up(args: argparse.Namespace) -> int:
    from kinfer_dev.localcluster.build import BuildError
    from kinfer_dev.localcluster.processes import StartupError

    try:
        cluster = _cluster(args)
        state = cluster.up()
    except (BuildError, StartupError, FileNotFoundError, ValueError) as error:
        return _fail(str(error))
    print(f"kubeconfig: {state.kubeconfig}")
    print(f"API server: {state.server}")
    print(f"Prometheus: {state.prometheus_url}")
    print(f"nodes:      {', '.join(state.nodes)}")
    if state.simulated_pods:
        print(f"simulated:  pods run nothing; metrics from {state.metrics_simulator_url}/metrics")
    kinfer = kinfer_command()
    print(f"use it:     export KUBECONFIG=$({kinfer} cluster kubeconfig)")
    print(f"stop it:    {kinfer} cluster down")
    return 0


def _down(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    had_state = cluster.state_dir.exists()
    cluster.down()
    print("local cluster stopped" if had_state else f"no local cluster in {cluster.state_dir}")
    return 0


def _status(args: argparse.Namespace) -> int:
    status = _cluster(args).status()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0 if status["running"] else 3
    if not status["processes"]:
        print(f"no local cluster in {status['stateDir']} (start one: kinfer cluster up)")
        return 3
    overall = "running" if status["running"] else "DEGRADED"
    print(f"local cluster in {status['stateDir']}: {overall}")
    print(f"  kubeconfig  {status['kubeconfig']}")
    print(f"  API server  {status['server']}")
    print(f"  Prometheus  {status['prometheus']}")
    print(f"  pod CIDR    {status['podCIDR']}")
    print(f"  nodes       {', '.join(status['nodes'])}")
    if status["simulatedPods"]:
        print(f"  simulated   pods run nothing; metrics simulator {status['metricsSimulator']}")
        print(f"  audit log   {status['auditLog']} (the operator user's requests)")
    for process in status["processes"]:
        state = "running" if process["alive"] else "DEAD"
        print(f"  {process['name']:<24} pid {process['pid']:<8} {state:<8} {process['log']}")
    if status["modelServers"]:
        print("  model servers (one per pod, run by the pod runner):")
    for server in status["modelServers"]:
        state = "running" if server["alive"] else "exited"
        print(f"    {server['pod']:<40} pid {server['pid']:<8} {state:<8} {server['log']}")
    return 0 if status["running"] else 3


def _kubeconfig(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    if not cluster.kubeconfig_path.exists():
        return _fail(f"no local cluster in {cluster.state_dir}; start one: kinfer cluster up")
    print(cluster.kubeconfig_path)
    return 0


def _build(args: argparse.Namespace) -> int:
    from kinfer_dev.localcluster import build

    try:
        directory = build.ensure_built(
            _config(args).cache_dir, binaries=build.BINARY_SETS[args.set]
        )
    except build.BuildError as error:
        return _fail(str(error))
    print(directory)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from kinfer_dev.localcluster import demo

    return demo.run(_config(args), timeout_s=args.timeout_seconds, spike=args.spike)
