"""Data-plane fixtures: test models, model repositories, and real servers on free loopback ports.

One kinfer-ort-server and one local Triton per session serve every test; tests that
change a model's state (switch, load, unload) each own a model name of their own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kinfer.runtime import local_triton
from kinfer.runtime.local_triton import start_local_triton
from kinfer.runtime.ort_server import start_ort_server
from kinfer.runtime.repository import write_model_repository
from kinfer.runtime.testmodels import build_tier_models

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

SERVERS = ("kinfer", "triton")


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


@pytest.fixture(scope="session")
def ort_server(ort_repository: Path, tmp_path_factory):
    handle = start_ort_server(
        ort_repository,
        load_models=STARTUP_MODELS,
        work_dir=tmp_path_factory.mktemp("ort-server"),
        extra_args=[f"--max-request-bytes={MAX_REQUEST_BYTES}"],
        ready_timeout_s=120,
    )
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
    """Each test using it runs against kinfer-ort-server and against the local Triton."""
    return request.getfixturevalue("ort_server" if request.param == "kinfer" else "triton_server")
