"""`kinfer bench operator --services N`: the operator's cost at fleet scale, on the local cluster
with simulated pods.

It starts a local cluster with --simulated-pods (or reuses a running one), installs the CRD,
runs the operator as a local process under its own API user, applies N InferenceServices
(services.py), times them to all children created and all Ready, waits until its replicas hold, then
measures over a window: the operator's CPU and RSS (/proc), its API requests by kind (the API
server's audit log, else the operator's kinfer_api_requests_total), its Prometheus queries per
period (Prometheus' query log, else kinfer_metric_reads_total) and its decision lag (the
kinfer_decision_lag_seconds histogram). It prints the figures next to issue 20's targets,
adds the row to docs/bench/operator.{json,md,png}, and deletes what it applied and stops what
it started.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kinfer_dev.fleet import measure, report, services
from kinfer_dev.localcluster.cluster import ClusterState, LocalCluster
from kinfer_dev.localcluster.pki import OPERATOR_USER
from kinfer_dev.localcluster.processes import (
    ProcessRecord,
    StartupError,
    free_port,
    http_ok,
    is_alive,
    log_tail,
    wait_until,
)

OPERATOR_PROCESS = "bench-operator"
LABEL_ISVC = "kinfer.dev/inferenceservice"
CHILD_KINDS = ("ConfigMap", "Service", "Deployment")
POLL_S = 2.0
SAMPLE_S = 5.0
# The audit backend writes as requests complete: wait this long after the window for its last.
AUDIT_FLUSH_S = 2.0
NAMESPACE_GONE_TIMEOUT_S = 300.0


class BenchError(RuntimeError):
    """The bench could not measure; the message says what failed."""


@dataclass
class Session:
    """What one bench run holds, so that cleanup stops exactly what it started."""

    cluster: LocalCluster
    state: ClusterState
    started_cluster: bool
    api_client: Any = None
    operator: ProcessRecord | None = None
    metrics_url: str | None = None
    applied: bool = False
    notes: list[str] = field(default_factory=list)


# -- pure helpers ----------------------------------------------------------------------
def default_operator_command() -> str:
    return f"{shlex.quote(sys.executable)} -m kinfer run"


def operator_argv(
    command: str, kubeconfig: str, prometheus_url: str, metrics_port: int | None
) -> list[str]:
    """The operator's command line: `command` plus where it runs and reads (and, when it has
    them, where it serves its own metrics)."""
    argv = [*shlex.split(command), f"--kubeconfig={kubeconfig}"]
    argv.append(f"--prometheus-url={prometheus_url}")
    if metrics_port:
        argv.append(f"--metrics-port={metrics_port}")
    return argv


def settled(isvc: dict[str, Any]) -> bool:
    """Ready for this generation, or (spec.replicas 0) reported as scaled to zero."""
    generation = (isvc.get("metadata") or {}).get("generation")
    for condition in (isvc.get("status") or {}).get("conditions") or []:
        if condition.get("type") != "Ready":
            continue
        current = condition.get("observedGeneration") in (None, generation)
        ready = condition.get("status") == "True" or condition.get("reason") == "ScaledToZero"
        return bool(current and ready)
    return False


def default_out() -> Path:
    """docs/bench of the checkout kinfer runs from (the bench runs from one)."""
    import kinfer

    return Path(kinfer.__file__).resolve().parents[2] / "docs" / "bench"


# What a row's operator label watches for uncommitted changes.
CODE_PATHS = ("operator", "pyproject.toml")


def checkout_commit() -> str:
    """The commit this checkout's operator runs from (+dirty with uncommitted changes to its
    code: operator/ or pyproject.toml; the bench's own output in docs/ does not count)."""
    root = default_out().parents[1]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "-C",
                str(root),
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                *CODE_PATHS,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown commit"
    return f"{head}+dirty" if dirty else head


def _crd_dir() -> Path:
    from kinfer_dev.localcluster.demo import crd_path

    return crd_path()


# -- the cluster -----------------------------------------------------------------------
def open_cluster(args: argparse.Namespace) -> Session:
    """Reuse a running simulated-pods cluster, or start one sized for the fleet."""
    from kinfer_dev.localcluster.config import ClusterConfig

    config = ClusterConfig.from_env(
        state_dir=args.state_dir,
        pod_cidr=args.pod_cidr,
        nodes=services.fleet_nodes(args.services, args.moving_share),
        simulated_pods=True,
    )
    cluster = LocalCluster(config, out=sys.stdout)
    state = cluster.state()
    if cluster.is_running() and state is not None:
        if not state.simulated_pods:
            raise BenchError(
                f"the local cluster in {cluster.state_dir} runs without simulated pods: stop it"
                " (kinfer cluster down) or give the bench another --state-dir"
            )
        print(f"reusing the running local cluster in {cluster.state_dir} (simulated pods)")
        return Session(cluster, state, started_cluster=False)
    print(
        f"starting a local cluster with simulated pods in {cluster.state_dir}"
        f" ({len(config.nodes)} nodes of {services.PODS_PER_NODE} pods)"
    )
    return Session(cluster, cluster.up(), started_cluster=True)


def _kubectl(session: Session, *args: str, timeout_s: float = 300) -> str:
    binary = str(Path(session.state.bin_dir) / "kubectl")
    result = subprocess.run(
        [binary, f"--kubeconfig={session.state.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if result.returncode != 0:
        raise BenchError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def prepare(session: Session, namespace: str) -> None:
    """The CRD installed, and an empty namespace for the fleet."""
    from kubernetes import config

    session.api_client = config.new_client_from_config(config_file=session.state.kubeconfig)
    _kubectl(session, "apply", "--server-side", "--force-conflicts", "-f", str(_crd_dir()))
    _kubectl(session, "wait", "--for=condition=Established", "crd/inferenceservices.kinfer.dev")
    if _namespace_exists(session, namespace):
        print(f"deleting the namespace {namespace} a previous run left")
        delete_namespace(session, namespace)
    _kubectl(session, "create", "namespace", namespace)


def _namespace_exists(session: Session, namespace: str) -> bool:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        client.CoreV1Api(session.api_client).read_namespace(namespace)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def delete_namespace(session: Session, namespace: str) -> None:
    _kubectl(session, "delete", "namespace", namespace, "--wait=false", "--ignore-not-found")
    deadline = time.monotonic() + NAMESPACE_GONE_TIMEOUT_S
    while _namespace_exists(session, namespace):
        if time.monotonic() > deadline:
            raise BenchError(f"namespace {namespace} still terminating after 300 s")
        time.sleep(POLL_S)


# -- the operator ------------------------------------------------------------------------
def has_metrics_port(command: str) -> bool:
    """Whether this operator build serves its own metrics (kinfer run --metrics-port)."""
    result = subprocess.run(
        [*shlex.split(command), "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    return "--metrics-port" in result.stdout


def start_operator(session: Session, command: str) -> None:
    metrics_port = free_port() if has_metrics_port(command) else None
    kubeconfig = str(session.cluster.component_kubeconfig("operator"))
    argv = operator_argv(command, kubeconfig, session.state.prometheus_url, metrics_port)
    # KUBECONFIG too: an operator whose kopf logs in by itself reads it from the environment.
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    record = session.cluster.processes.start(OPERATOR_PROCESS, argv, env=env)
    session.operator = record
    print(f"operator started (pid {record.pid}, log {record.log})")
    if metrics_port is None:
        session.notes.append("the operator serves no metrics: lag n/a, API and queries from logs")
        time.sleep(5.0)
        if not is_alive(record):
            raise BenchError(
                f"the operator exited; last lines of {record.log}:\n{log_tail(record.log)}"
            )
        return
    session.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    wait_until("the operator's /metrics", lambda: http_ok(session.metrics_url), 120, record=record)


def scrape_operator(session: Session) -> measure.Samples:
    if session.metrics_url is None:
        return {}
    with urllib.request.urlopen(session.metrics_url, timeout=10) as response:
        return measure.parse_metrics(response.read().decode())


# -- the fleet -----------------------------------------------------------------------------
def apply_fleet(session: Session, items: list[dict[str, Any]]) -> float:
    """Create every InferenceService (4 at a time); returns when the first was sent."""
    from kubernetes import client

    custom = client.CustomObjectsApi(session.api_client)

    def create(body: dict[str, Any]) -> None:
        meta = body["metadata"]
        custom.create_namespaced_custom_object(
            "kinfer.dev", "v1alpha1", meta["namespace"], "inferenceservices", body
        )

    began = time.monotonic()
    session.applied = True
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(create, items))
    print(f"applied {len(items)} InferenceServices in {time.monotonic() - began:.1f} s")
    return began


def _count_children(session: Session, namespace: str) -> int:
    """ConfigMaps, Services and Deployments that carry the InferenceService label."""
    from kubernetes import client

    core, apps = client.CoreV1Api(session.api_client), client.AppsV1Api(session.api_client)
    calls = (
        core.list_namespaced_config_map,
        core.list_namespaced_service,
        apps.list_namespaced_deployment,
    )
    total = 0
    for call in calls:
        listed = call(namespace, label_selector=LABEL_ISVC, _preload_content=False)
        total += len(json.loads(listed.data)["items"])
    return total


def _count_settled(session: Session, namespace: str) -> int:
    from kubernetes import client

    listed = client.CustomObjectsApi(session.api_client).list_namespaced_custom_object(
        "kinfer.dev", "v1alpha1", namespace, "inferenceservices", _preload_content=False
    )
    return sum(settled(item) for item in json.loads(listed.data)["items"])


def wait_for_fleet(
    session: Session, namespace: str, count: int, began: float, timeout_s: float
) -> tuple[float | None, float | None]:
    """Seconds from the first apply to every child created, and to every service settled."""
    children_s = ready_s = None
    wanted_children = count * len(CHILD_KINDS)
    while ready_s is None or children_s is None:
        elapsed = time.monotonic() - began
        if children_s is None and _count_children(session, namespace) >= wanted_children:
            children_s = elapsed
            print(f"all {wanted_children} children created after {elapsed:.0f} s")
        settled_now = _count_settled(session, namespace)
        if ready_s is None and settled_now >= count:
            ready_s = elapsed
            print(f"all {count} InferenceServices Ready (or scaled to zero) after {elapsed:.0f} s")
        if elapsed > timeout_s:
            session.notes.append(f"not settled after {timeout_s:.0f} s ({settled_now}/{count})")
            print(f"timed out after {timeout_s:.0f} s: {settled_now}/{count} settled")
            break
        if ready_s is None or children_s is None:
            time.sleep(POLL_S)
    return children_s, ready_s


def _total_replicas(session: Session, namespace: str) -> int:
    from kubernetes import client

    listed = client.CustomObjectsApi(session.api_client).list_namespaced_custom_object(
        "kinfer.dev", "v1alpha1", namespace, "inferenceservices", _preload_content=False
    )
    return sum(
        int((item.get("spec") or {}).get("replicas") or 0)
        for item in json.loads(listed.data)["items"]
    )


def wait_until_steady(
    session: Session, namespace: str, quiet_s: float, timeout_s: float
) -> float | None:
    """Wait until the fleet's spec.replicas, summed, has not changed for `quiet_s`: the moving
    services have scaled out to what they hold (a scale-down waits out its stabilization
    window, longer than a load cycle). Returns the seconds waited (None: timed out)."""
    start = time.monotonic()
    total, changed = _total_replicas(session, namespace), start
    print(f"waiting for the fleet's replicas to hold for {quiet_s:.0f} s (now {total})")
    while time.monotonic() - changed < quiet_s:
        if time.monotonic() - start > timeout_s:
            session.notes.append(f"replicas still changing after {timeout_s:.0f} s ({total})")
            print(f"timed out after {timeout_s:.0f} s: replicas still changing ({total})")
            return None
        time.sleep(POLL_S)
        now = _total_replicas(session, namespace)
        if now != total:
            print(f"replicas {total} -> {now}")
            total, changed = now, time.monotonic()
    waited = time.monotonic() - start
    print(f"replicas held at {total} for {quiet_s:.0f} s (after {waited:.0f} s)")
    return waited


# -- the window ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mark:
    """What is read at each end of the window."""

    wall_s: float
    monotonic_s: float
    process: measure.ProcessSample
    metrics: measure.Samples
    audit_offset: int
    query_offset: int


def _mark(session: Session) -> Mark:
    assert session.operator is not None
    return Mark(
        wall_s=time.time(),
        monotonic_s=time.monotonic(),
        process=measure.sample_tree(session.operator.pid),
        metrics=scrape_operator(session),
        audit_offset=measure.size_of(_path(session.state.audit_log)),
        query_offset=measure.size_of(_path(session.state.prometheus_query_log)),
    )


def _path(text: str | None) -> Path | None:
    return Path(text) if text else None


def measure_window(session: Session, window_s: float) -> tuple[Mark, Mark, int]:
    """Marks at both ends of the window, and the peak RSS sampled within it."""
    assert session.operator is not None
    print(f"measuring for {window_s:.0f} s")
    start = _mark(session)
    peak_rss = start.process.rss_bytes
    while time.monotonic() - start.monotonic_s < window_s:
        time.sleep(min(SAMPLE_S, max(0.0, window_s - (time.monotonic() - start.monotonic_s))))
        peak_rss = max(peak_rss, measure.sample_tree(session.operator.pid).rss_bytes)
        if not is_alive(session.operator):
            raise BenchError(f"the operator exited during the window; see {session.operator.log}")
    end = _mark(session)
    time.sleep(AUDIT_FLUSH_S)
    return start, end, max(peak_rss, end.process.rss_bytes)


def api_figures(session: Session, start: Mark, end: Mark) -> tuple[dict[str, float] | None, str]:
    """Requests by kind (reads, writes, watches) over the window, and their source."""
    audit_log = _path(session.state.audit_log)
    if audit_log is not None and audit_log.exists():
        lines = measure.read_from(audit_log, start.audit_offset)
        verbs = measure.audit_verbs(lines, OPERATOR_USER, start.wall_s, end.wall_s)
        return measure.requests_by_kind(verbs), "audit log"
    if measure.has_metric(end.metrics, "kinfer_api_requests_total"):
        verbs = measure.delta(start.metrics, end.metrics, "kinfer_api_requests_total", by="verb")
        return measure.requests_by_kind(verbs), "kinfer_api_requests_total"
    return None, ""


def query_figures(session: Session, start: Mark, end: Mark) -> tuple[float | None, str]:
    """Prometheus queries over the window, and their source."""
    query_log = _path(session.state.prometheus_query_log)
    if query_log is not None and query_log.exists():
        lines = measure.read_from(query_log, start.query_offset)
        return float(measure.logged_queries(lines, start.wall_s, end.wall_s)), "query log"
    if measure.has_metric(end.metrics, "kinfer_metric_reads_total"):
        reads = measure.delta(start.metrics, end.metrics, "kinfer_metric_reads_total")
        return reads.get("", 0.0), "kinfer_metric_reads_total"
    return None, ""


def lag_figures(start: Mark, end: Mark) -> tuple[float | None, float | None]:
    buckets = measure.bucket_deltas(start.metrics, end.metrics, "kinfer_decision_lag_seconds")
    return measure.histogram_quantile(0.5, buckets), measure.histogram_quantile(0.99, buckets)


def build_row(
    args: argparse.Namespace,
    session: Session,
    window: tuple[Mark, Mark, int],
    timings: tuple[float | None, float | None],
) -> report.Row:
    from kinfer.api import constants as c

    start, end, peak_rss = window
    seconds = end.monotonic_s - start.monotonic_s
    api, api_source = api_figures(session, start, end)
    queries, queries_source = query_figures(session, start, end)
    lag_p50, lag_p99 = lag_figures(start, end)
    periods = seconds / c.DEFAULT_SCALING_PERIOD_S
    ticks = end.process.cpu_ticks - start.process.cpu_ticks
    return report.Row(
        label=args.label,
        services=args.services,
        moving_share=args.moving_share,
        window_s=round(seconds, 1),
        cpu_percent=measure.cpu_percent(ticks, seconds, os.sysconf("SC_CLK_TCK")),
        rss_mb=peak_rss / 2**20,
        api_reads_per_s=api["reads"] / seconds if api else None,
        api_writes_per_s=api["writes"] / seconds if api else None,
        queries_per_period=queries / periods if queries is not None else None,
        lag_p50_s=lag_p50,
        lag_p99_s=lag_p99,
        children_s=timings[0],
        ready_s=timings[1],
        api_source=api_source,
        queries_source=queries_source,
        operator=args.operator_command or f"kinfer run (this checkout, {checkout_commit()})",
        measured_at=datetime.now(UTC).strftime("%Y-%m-%d"),
        host=f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
    )


# -- the run ---------------------------------------------------------------------------------------
def cleanup(session: Session, namespace: str, keep_cluster: bool) -> None:
    """Stop the operator, delete the fleet, stop the cluster if this run started it."""
    if session.operator is not None:
        session.cluster.processes.stop(OPERATOR_PROCESS)
        print(f"operator stopped (pid {session.operator.pid})")
    if session.applied and (keep_cluster or not session.started_cluster):
        print(f"deleting the namespace {namespace}")
        delete_namespace(session, namespace)
    if session.started_cluster and not keep_cluster:
        session.cluster.down()
        print("local cluster stopped")
    elif session.started_cluster:
        print(f"local cluster kept in {session.cluster.state_dir} (kinfer cluster down stops it)")


def bench(args: argparse.Namespace) -> report.Row:
    session = open_cluster(args)
    try:
        prepare(session, args.namespace)
        start_operator(session, args.operator_command or default_operator_command())
        began = apply_fleet(
            session, services.fleet(args.services, args.namespace, args.moving_share)
        )
        timings = wait_for_fleet(
            session, args.namespace, args.services, began, args.ready_timeout_s
        )
        wait_until_steady(session, args.namespace, args.settle_s, args.ready_timeout_s)
        window = measure_window(session, args.window_s)
        return build_row(args, session, window, timings)
    except BaseException:
        if session.operator is not None:
            print(f"last lines of the operator's log:\n{log_tail(session.operator.log)}")
        raise
    finally:
        for note in session.notes:
            print(f"note: {note}")
        cleanup(session, args.namespace, args.keep_cluster)


def run(args: argparse.Namespace) -> int:
    try:
        row = bench(args)
    except (BenchError, StartupError) as error:
        print(f"kinfer bench operator: {error}", file=sys.stderr)
        return 1
    print()
    print(report.console_table(row))
    if args.json:
        from dataclasses import asdict

        print(json.dumps(asdict(row), indent=1))
    if not args.no_write:
        report.write(args.out, row)
        print(
            f"\nwritten: {args.out / report.MARKDOWN_NAME}, {report.PLOT_NAME}, {report.JSON_NAME}"
        )
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "operator",
        help="the operator's CPU, memory, API and Prometheus load at N InferenceServices",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--services", type=int, required=True, help="InferenceServices to apply")
    parser.add_argument("--window-s", type=float, default=120.0, help="measured window (120)")
    parser.add_argument(
        "--moving-share",
        type=float,
        default=services.MOVING_SHARE,
        help="share of the services whose load moves (0.1); 0: every service idle, half at"
        " zero replicas and half at one",
    )
    parser.add_argument(
        "--settle-s",
        type=float,
        default=60.0,
        help="before measuring, wait until the fleet's replicas have held this long (60)",
    )
    parser.add_argument(
        "--label", default="after", help="the row's operator label, e.g. before|after (after)"
    )
    parser.add_argument(
        "--operator-command",
        help="how to run another operator build, e.g. '/path/old/.venv/bin/kinfer run'; the bench"
        " adds --kubeconfig, --prometheus-url and, when the build has it, --metrics-port"
        " (default: this Python's `-m kinfer run`)",
    )
    parser.add_argument("--ready-timeout-s", type=float, default=600.0)
    parser.add_argument("--namespace", default=services.NAMESPACE)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where operator.{json,md,png} accumulate (default: docs/bench of this checkout)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only; write no files")
    parser.add_argument("--json", action="store_true", help="also print the row as JSON")
    cluster = parser.add_argument_group(
        "local cluster (started with --simulated-pods if none runs)"
    )
    cluster.add_argument("--state-dir", type=Path, help="as `kinfer cluster up --state-dir`")
    cluster.add_argument("--pod-cidr", help="as `kinfer cluster up --pod-cidr`")
    cluster.add_argument(
        "--keep-cluster", action="store_true", help="leave a cluster this run started running"
    )
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    if args.out is None:
        args.out = default_out()
    if args.services < 1 or args.window_s <= 0 or not 0.0 <= args.moving_share <= 1.0:
        print(
            "kinfer bench operator: --services >= 1, --window-s > 0 and --moving-share from 0 to 1",
            file=sys.stderr,
        )
        return 2
    return run(args)
