"""Spec fuzzing: InferenceServices generated from the CRD's own schema, through the real API server.

hypothesis-jsonschema draws `spec` from crds/'s openAPIV3Schema (its x-kubernetes-*
extensions translated, its CEL rules left to the API server). Each object goes through a
server-side dry-run create; when admitted, the object the API server returns (defaults
applied) goes through `kinfer render`'s function and one `reconcile` whose writes are
server-side dry runs too (`DryRunKube`), so the API server also validates the children.

What must hold: the API server answers 4xx, never 5xx; what it refuses, kinfer's own
validation refuses too (`kinfer render` and the API server agree); the operator and render
never raise; what the operator cannot serve is a SpecValid=False condition naming the field
path. KINFER_FUZZ_EXAMPLES sets the number of cases (default 1000), KINFER_FUZZ_SEED the seed
(default 0: the same cases every run).
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from e2e.harness import CRDS, Cluster, condition_of
from kinfer.api import constants as c
from kinfer.api.model import checked
from kinfer.config import RenderOptions
from kinfer.controller.kube import Kube, apply_body
from kinfer.controller.reconcile import reconcile
from kinfer.render import render

ENV_EXAMPLES = "KINFER_FUZZ_EXAMPLES"
ENV_SEED = "KINFER_FUZZ_SEED"
CRD_FILE = CRDS / "kinfer.dev_inferenceservices.yaml"
# Kubernetes' own keywords with no JSON Schema meaning; int-or-string is translated below.
# Lists drawn with at most this many items (tiers allow 8: 4 shows every rule).
MAX_ITEMS = 4
_K8S_ONLY = ("x-kubernetes-", "description", "default", "nullable", "format")


def crd_schema(path: Path = CRD_FILE) -> dict[str, Any]:
    crd = yaml.safe_load(path.read_text())
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def generation_schema(node: Any) -> Any:
    """A structural schema as plain JSON Schema for hypothesis-jsonschema: int-or-string as
    anyOf, objects closed unless x-kubernetes-preserve-unknown-fields (the API server prunes
    unknown fields: drawing them would only slow the search), Kubernetes' keywords dropped."""
    if isinstance(node, list):
        return [generation_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: generation_schema(v) for k, v in node.items() if not k.startswith(_K8S_ONLY)}
    if node.get("x-kubernetes-int-or-string"):
        string = {"type": "string", **({"pattern": node["pattern"]} if "pattern" in node else {})}
        return {"anyOf": [{"type": "integer", "minimum": 0}, string]}
    closed = not node.get("x-kubernetes-preserve-unknown-fields")
    if node.get("type") == "object" and "properties" in node and closed:
        out.setdefault("additionalProperties", False)
    return out


def strategy_for(node: dict[str, Any]) -> st.SearchStrategy[Any]:
    """hypothesis-jsonschema for each leaf, composed here for closed objects and arrays: the
    leaves' strategies are built once, not on every draw (5x faster on this schema)."""
    if node.get("type") == "object" and node.get("additionalProperties") is False:
        required = set(node.get("required") or ())
        fields = {key: strategy_for(value) for key, value in node["properties"].items()}
        return st.fixed_dictionaries(
            {k: v for k, v in fields.items() if k in required},
            optional={k: v for k, v in fields.items() if k not in required},
        )
    if node.get("type") == "array" and isinstance(node.get("items"), dict):
        return st.lists(
            strategy_for(node["items"]),
            min_size=node.get("minItems", 0),
            max_size=min(node.get("maxItems", MAX_ITEMS), MAX_ITEMS),
        )
    return from_schema(node)


def inference_services(namespace: str) -> st.SearchStrategy[dict[str, Any]]:
    spec = generation_schema(crd_schema()["properties"]["spec"])
    # Names near the DNS-1035 rule: most valid, some ending in '-' (refused by CEL).
    names = st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)
    # The schema leaves model.storageUri optional (a CEL rule asks for it or tiers): given a
    # valid one half the time, so that half the cases get past the API server to the operator.
    uris = st.one_of(
        st.none(), from_schema(spec["properties"]["model"]["properties"]["storageUri"])
    )
    return st.builds(
        lambda name, body, uri: {
            "apiVersion": c.API_VERSION,
            "kind": c.KIND,
            "metadata": {"name": name, "namespace": namespace},
            "spec": with_storage_uri(body, uri),
        },
        names,
        strategy_for(spec),
        uris,
    )


def with_storage_uri(spec: dict[str, Any], uri: str | None) -> dict[str, Any]:
    if uri is None or (spec.get("precision") or {}).get("tiers"):
        return spec
    return {**spec, "model": {"storageUri": uri, **(spec.get("model") or {})}}


class DryRunKube(Kube):
    """The operator's Kube whose child writes are server-side dry runs: the real API server
    validates (and defaults) every rendered child, and nothing is stored."""

    dry_run = "All"


def _spec_valid_condition(outcome_patch: dict[str, Any]) -> dict[str, Any] | None:
    return condition_of({"status": outcome_patch}, c.CONDITION_SPEC_VALID)


def check_admitted(admitted: dict[str, Any], kube: Kube, tally: Counter[str]) -> None:
    """One reconcile and render of an object the API server admitted: no exception, and any
    reason it cannot be served named in SpecValid with its field path."""
    errors, isvc = checked(admitted)
    outcome = reconcile(admitted, kube, RenderOptions())
    spec_valid = _spec_valid_condition(outcome.status_patch)
    if errors or isvc is None:
        tally["admitted, refused by kinfer's validation"] += 1
        assert spec_valid is not None and spec_valid["status"] == "False", outcome.status_patch
        for error in errors:
            assert error.path in spec_valid["message"], (error, spec_valid)
        return
    objects = render(isvc, RenderOptions())
    assert sorted(o["kind"] for o in objects) == ["ConfigMap", "Deployment", "Service"], objects
    if spec_valid is not None and spec_valid["status"] == "False":
        # A child the API server refused: named by the spec field it came from.
        message = spec_valid["message"]
        assert message.startswith("the API server rejected"), spec_valid
        fields = re.findall(r"(?:: |; )(spec[\w.\[\]]*): ", message)
        assert fields, spec_valid
        tally[
            f"admitted, a child refused by the API server ({', '.join(sorted(set(fields)))})"
        ] += 1
        return
    tally["admitted and served"] += 1


def check_one(resource: Any, kube: Kube, candidate: dict[str, Any], tally: Counter[str]) -> None:
    try:
        admitted = resource.create(
            body=candidate, namespace=candidate["metadata"]["namespace"], dry_run="All"
        ).to_dict()
    except ApiException as error:
        assert error.status in (400, 422), f"API server answered {error.status}: {error.body}"
        # `kinfer render` must refuse what the API server refuses.
        assert checked(candidate)[0], f"refused by the API server only: {error.body}\n{candidate}"
        tally["refused by the API server"] += 1
        return
    check_admitted(admitted, kube, tally)


def test_generated_specs_never_crash_the_operator_and_invalid_ones_name_their_field(
    cluster: Cluster, crd: None, namespace: str
) -> None:
    if not cluster.is_local and ENV_EXAMPLES not in os.environ:
        pytest.skip(
            f"make test runs it on the local cluster's API server (set {ENV_EXAMPLES} to run it here)"
        )
    examples = int(os.environ.get(ENV_EXAMPLES, "1000"))
    fuzz_seed = int(os.environ.get(ENV_SEED, "0"))
    print(f"spec fuzz: {examples} cases, {ENV_SEED}={fuzz_seed}")
    api_client = kube_config.new_client_from_config(config_file=str(cluster.kubeconfig))
    kube = DryRunKube(api_client)
    resource = DynamicClient(api_client).resources.get(api_version=c.API_VERSION, kind=c.KIND)
    tally: Counter[str] = Counter()

    @seed(fuzz_seed)
    @settings(
        max_examples=examples,
        deadline=None,  # a busy machine: time is bounded by the count, not per case
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(inference_services(namespace))
    def one_case(candidate: dict[str, Any]) -> None:
        check_one(resource, kube, candidate, tally)

    started = time.monotonic()
    try:
        one_case()
    finally:
        print(f"spec fuzz: {dict(tally)} in {time.monotonic() - started:.0f}s")
    assert sum(tally.values()) >= examples
    assert tally["admitted and served"] > 0 and tally["refused by the API server"] > 0, tally


@pytest.mark.parametrize(
    "value",
    [
        "hello \U0001f642",  # beyond the BMP: JSON's surrogate-pair escape is not YAML
        "del \x7f, nel \x85, c1 \x9f, bom \ufeff, nonchar \uffff, ls \u2028",  # not raw YAML
    ],
    ids=["emoji", "yaml-unprintable"],
)
def test_any_character_in_a_child_is_applied_as_written(
    cluster: Cluster, crd: None, value: str
) -> None:
    """Found by the fuzz: an emoji, and later a C1 control character, in an env value made
    every apply of the Deployment a 400 (server-side apply bodies are parsed as YAML)."""
    api_client = kube_config.new_client_from_config(config_file=str(cluster.kubeconfig))
    isvc = {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "metadata": {"name": "chars", "namespace": "default", "uid": "0", "generation": 1},
        "spec": {
            "runtime": "onnxruntime",
            "model": {"storageUri": "s3://bucket/model.onnx"},
            "env": [{"name": "GREETING", "value": value}],
        },
    }
    outcome = reconcile(isvc, DryRunKube(api_client), RenderOptions())
    assert (_spec_valid_condition(outcome.status_patch) or {}).get("status") == "True", outcome
    # And the API server stores the value itself, not its escape.
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "chars", "namespace": "default"},
        "data": {"value": value},
    }
    configmaps = DynamicClient(api_client).resources.get(api_version="v1", kind="ConfigMap")
    stored = configmaps.server_side_apply(
        body=apply_body(config_map),
        name="chars",
        namespace="default",
        field_manager="kinfer-e2e",
        dry_run="All",
    ).to_dict()
    assert stored["data"]["value"] == value
