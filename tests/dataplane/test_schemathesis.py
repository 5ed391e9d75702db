"""The Open Inference Protocol REST spec (../shared/specs/open_inference_rest.yaml, KServe's)
fuzzed against a real kinfer-ort-server with schemathesis: no 5xx, and every response that the
spec describes matches its schema.

Three cases in four use the served model's real name and version, so that the generated bodies
reach the decoder; the rest keep the generated names (model-name validation). Bounded and
derandomized: the same cases every run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import READ_ONLY_MODEL

schemathesis = pytest.importorskip("schemathesis")
from schemathesis import checks  # noqa: E402

pytestmark = pytest.mark.slow

SPEC = Path(
    os.environ.get(
        "KINFER_OIP_SPEC",
        Path(__file__).resolve().parents[2].parent / "shared/specs/open_inference_rest.yaml",
    )
)
# Generating the spec's recursive tensor_data is the slow part (~0.6 s a body here).
EXAMPLES = 25
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
REAL = {"MODEL_NAME": READ_ONLY_MODEL, "MODEL_VERSION": "1"}


def _schema():
    if not SPEC.is_file():
        pytest.skip(f"{SPEC} is not here (set KINFER_OIP_SPEC)")
    raw = yaml.safe_load(SPEC.read_text())
    # The spec writes path parameters as ${NAME}; OpenAPI tools expect {NAME}.
    raw["paths"] = {path.replace("${", "{"): item for path, item in raw["paths"].items()}
    return schemathesis.openapi.from_dict(raw)


def _operations():
    return [result.ok() for result in _schema().get_all_operations()]


@pytest.mark.parametrize("operation", _operations() if SPEC.is_file() else [], ids=str)
def test_the_spec_fuzzed_gets_no_5xx_and_conforming_responses(ort_server, operation):
    base_url = f"http://{ort_server.http_url}"
    response_checks = [checks.not_a_server_error, checks.response_schema_conformance]

    @FUZZ
    @given(case=operation.as_strategy(), real=st.sampled_from([True, True, True, False]))
    def run(case, real):
        if real and case.path_parameters:
            case.path_parameters = {**case.path_parameters, **REAL}
        response = case.call(base_url=base_url, timeout=30)
        case.validate_response(response, checks=response_checks)

    run()
    assert ort_server.alive()


def test_a_valid_inference_conforms_to_the_specs_response_schema(ort_server):
    operation = _schema()["/v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}/infer"]["POST"]
    body = {
        "id": "42",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 64], "data": [0.5] * 128}],
        "outputs": [{"name": "output"}],
    }
    case = operation.Case(path_parameters=REAL, body=body, media_type="application/json")
    response = case.call(base_url=f"http://{ort_server.http_url}", timeout=30)
    assert response.status_code == 200, response.text
    case.validate_response(response, checks=[checks.response_schema_conformance])
    assert response.json()["id"] == "42" and response.json()["outputs"][0]["shape"] == [2, 16]
