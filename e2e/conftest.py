"""e2e fixtures: the cluster (KUBECONFIG's, else a local cluster brought up here), CRD, operator, models.

- KUBECONFIG set: the suite runs against that cluster (kind: see e2e/kind/). With
  KINFER_E2E_OPERATOR=installed the operator is expected in-cluster (installed
  through manifests/); otherwise `kinfer run` runs here against the cluster.
- KUBECONFIG unset: a local cluster (`kinfer cluster up`) is started for the
  session in its own state dir and pod range, and torn down at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.harness import (
    CRDS,
    ENV_KEEP,
    ENV_MODEL_BASE_URL,
    ENV_OPERATOR,
    ENV_SKIP_KIND_COVERED,
    ENV_STATE_DIR,
    Cluster,
    Models,
    Operator,
    build_public_standins,
    wait_for,
)

# The first run builds the control plane from source (minutes on 2 cores); every
# wait inside a test is bounded on its own.
E2E_TIMEOUT_S = 1800


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # This hook sees every collected item (tests/ too): touch only e2e's.
    e2e_dir = Path(__file__).parent
    # `make test` (CI runs `make e2e-kind` after it): on the local cluster, leave out what
    # the kind cluster runs on real containers (marked kind_covered).
    skip_covered = os.environ.get(ENV_SKIP_KIND_COVERED) == "1" and not os.environ.get("KUBECONFIG")
    for item in items:
        if e2e_dir not in item.path.parents:
            continue
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(E2E_TIMEOUT_S))
        if skip_covered and item.get_closest_marker("kind_covered"):
            item.add_marker(
                pytest.mark.skip(reason=f"run on kind by make e2e-kind ({ENV_SKIP_KIND_COVERED}=1)")
            )
    # A test that restarts the cluster's API server or Prometheus runs last: the components
    # it restarts (and what watches them: KWOK, the power exporter) serve every other test.
    items.sort(key=lambda item: item.get_closest_marker("disruptive") is not None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def _free_pod_cidr() -> str:
    """A /16 of 127.0.0.0/8 no other local cluster (the user's is 127.1/16) listens in."""
    from kinfer_dev.localcluster.cluster import _listening_addresses

    busy = {a.packed[1] for a in _listening_addresses() if a.packed[0] == 127}
    for second in range(2, 100):
        if second not in busy:
            return f"127.{second}.0.0/16"
    raise RuntimeError("no free 127.x.0.0/16 for the e2e cluster's pods")


def _kubectl_for_external() -> str:
    found = shutil.which("kubectl")
    if found:
        return found
    from kinfer_dev.localcluster import build
    from kinfer_dev.localcluster.config import cache_dir_default

    built = build.bin_dir(cache_dir_default()) / "kubectl"
    if built.exists():
        return str(built)
    pytest.exit("KUBECONFIG is set but no kubectl is on PATH (or run `kinfer cluster build`)", 2)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if os.environ.get("KUBECONFIG"):
        kubeconfig = Path(os.environ["KUBECONFIG"])
        # A kinfer local cluster's kubeconfig sits next to its cluster.json.
        state_file = kubeconfig.parent / "cluster.json"
        prometheus_url = os.environ.get("KINFER_PROMETHEUS_URL")
        if state_file.exists() and not prometheus_url:
            prometheus_url = json.loads(state_file.read_text())["prometheus_url"]
        yield Cluster(
            kubeconfig,
            _kubectl_for_external(),
            is_local=False,
            prometheus_url=prometheus_url,
            state_dir=kubeconfig.parent if state_file.exists() else None,
        )
        return

    from kinfer_dev.localcluster.cluster import LocalCluster
    from kinfer_dev.localcluster.config import ClusterConfig

    state_dir = Path(os.environ.get(ENV_STATE_DIR) or tmp_path_factory.mktemp("cluster") / "state")
    config = ClusterConfig.from_env(state_dir=state_dir, pod_cidr=_free_pod_cidr())
    local = LocalCluster(config, out=sys.stderr)
    try:
        state = local.up()
    except BaseException:
        local.down()
        raise
    try:
        yield Cluster(
            Path(state.kubeconfig),
            str(Path(state.bin_dir) / "kubectl"),
            is_local=True,
            prometheus_url=state.prometheus_url,
            state_dir=Path(state.state_dir),
        )
    finally:
        if os.environ.get(ENV_KEEP) != "1":
            local.down()


@pytest.fixture(scope="session")
def crd(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/inferenceservices.kinfer.dev", "--timeout=60s"
    )


@pytest.fixture(scope="session")
def operator(
    cluster: Cluster, crd: None, models: Models, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    log_dir = Path(os.environ.get("KINFER_E2E_LOG_DIR") or tmp_path_factory.mktemp("operator"))
    log_dir.mkdir(parents=True, exist_ok=True)
    process = Operator(
        cluster,
        log_dir / "operator.log",
        installed=os.environ.get(ENV_OPERATOR) == "installed",
        prometheus_url=cluster.prometheus_url,
        # hf:// from the test model store, which serves the hub's layout (as on kind).
        hf_endpoint=models.base_url,
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(autouse=True)
def _operator_log_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and "operator" in request.fixturenames:
        operator = request.getfixturevalue("operator")
        print(f"\n--- operator log ({operator.log_path}) ---\n{operator.log_tail()}")


@pytest.fixture(scope="session")
def models(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Models]:
    """The fp32/fp16/int8 test MLP, built here; served on 127.0.0.1 unless a base URL is given."""
    from kinfer_dev.localcluster.modelstore import ModelStore, build_test_models

    root = tmp_path_factory.mktemp("models")
    tiers = build_test_models(root)
    standins = build_public_standins(root)
    if os.environ.get(ENV_MODEL_BASE_URL):
        # kind: the same deterministic models, copied into the in-cluster store.
        published = Models(os.environ[ENV_MODEL_BASE_URL], root, tiers, cluster=cluster)
        published.publish(*tiers.values(), *standins)
        yield published
        return
    store = ModelStore(root).start()
    try:
        yield Models(store.url(""), root, tiers)
    finally:
        store.stop()


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    wait_for(
        f"the default ServiceAccount in {name}",
        lambda: cluster.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
        60,
    )
    try:
        yield name
    finally:
        # Bounded: the namespace controller deletes the children; KWOK or the kubelet stops
        # the pods, and on the local cluster the pod runner their servers.
        cluster.delete_namespace(name)
