"""Data-plane fixtures: test models, model repositories, and real servers on free loopback ports.

One kinfer-ort-server and one local Triton per session serve every test; tests that
change a model's state (switch, load, unload) each own a model name of their own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kinfer_dev.runtime import local_triton
from kinfer_dev.runtime.local_triton import start_local_triton
from kinfer_dev.runtime.ort_server import start_ort_server
from kinfer_dev.runtime.repository import write_model_repository
from kinfer_dev.runtime.testmodels import build_tier_models

# Models in both repositories: "mlp" is read-only (inference, metadata, bad inputs);
# the others belong to one test module each.
READ_ONLY_MODEL = "mlp"
SWITCH_MODEL = "mlp_switch"
LOAD_MODEL = "mlp_load"
METRICS_MODEL = "mlp_metrics"
MODELS = (READ_ONLY_MODEL, SWITCH_MODEL, LOAD_MODEL, METRICS_MODEL)
STARTUP_MODELS = (READ_ONLY_MODEL, SWITCH_MODEL, METRICS_MODEL)
# Small enough to test the limit cheaply, large enough for every normal request.
MAX_REQUEST_BYTES = 1 << 20

# kinfer-ort-server with gRPC through kinfer-grpc-frontend (its default where the binary
# is built: `make grpc-frontend`) and with gRPC on grpc.aio (--grpc-frontend=python).
SERVERS = ("kinfer", "kinfer-grpcio", "triton")
KINFER_SERVERS = ("kinfer", "kinfer-grpcio")
_FIXTURES = {
    "kinfer": "ort_server",
    "kinfer-grpcio": "ort_server_grpcio",
    "triton": "triton_server",
}


@pytest.fixture(scope="session")
def tier_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_tier_models(tmp_path_factory.mktemp("models"))


def _repository(root: Path, tier_models: dict[str, Path], flavour: str) -> Path:
    for name in MODELS:
        write_model_repository(root, name, tier_models, flavour=flavour)
    return root


@pytest.fixture(scope="session")
def ort_repository(tmp_path_factory, tier_models) -> Path:
    return _repository(tmp_path_factory.mktemp("ort-repo"), tier_models, "onnxruntime")


@pytest.fixture(scope="session")
def triton_repository(tmp_path_factory, tier_models) -> Path:
    return _repository(tmp_path_factory.mktemp("triton-repo"), tier_models, "python")


def _start_ort_server(repository: Path, work_dir: Path, frontend: str):
    return start_ort_server(
        repository,
        load_models=STARTUP_MODELS,
        work_dir=work_dir,
        extra_args=[f"--max-request-bytes={MAX_REQUEST_BYTES}", f"--grpc-frontend={frontend}"],
        ready_timeout_s=120,
    )


@pytest.fixture(scope="session")
def ort_server(ort_repository: Path, tmp_path_factory):
    """kinfer-ort-server as deployed: gRPC through kinfer-grpc-frontend (fails if not built)."""
    handle = _start_ort_server(ort_repository, tmp_path_factory.mktemp("ort-server"), "go")
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def ort_server_grpcio(ort_repository: Path, tmp_path_factory):
    """The same server with gRPC on grpc.aio in its own process (--grpc-frontend=python)."""
    handle = _start_ort_server(ort_repository, tmp_path_factory.mktemp("ort-grpcio"), "python")
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def triton_server(triton_repository: Path, tmp_path_factory):
    if not local_triton.available():
        pytest.skip("nvidia-pytriton (the local Triton) is not installed for this Python")
    handle = start_local_triton(
        triton_repository,
        load_models=STARTUP_MODELS,
        work_dir=tmp_path_factory.mktemp("triton"),
        ready_timeout_s=240,
    )
    yield handle
    handle.stop()


@pytest.fixture(params=SERVERS)
def server(request):
    """Each test using it runs against kinfer-ort-server (both gRPC frontends) and Triton."""
    return request.getfixturevalue(_FIXTURES[request.param])


@pytest.fixture(params=KINFER_SERVERS)
def kinfer_server(request):
    """kinfer-ort-server with each gRPC frontend: for what only kinfer's server does."""
    return request.getfixturevalue(_FIXTURES[request.param])
