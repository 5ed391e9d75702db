"""Validate an InferenceService the way the API server does, with field paths.

The structural part runs the CRD's own openAPIV3Schema through jsonschema; the
cross-field part runs the Python twins of the CRD's CEL rules. So `kinfer
render`, the operator (for objects admitted before a CRD upgrade) and the API
server agree on what is invalid and say it with the same paths.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jsonschema

from kinfer.api import constants as c
from kinfer.api import schema as crd_schema
from kinfer.api import storage
from kinfer.api.constants import API_VERSION, KIND


@dataclass(frozen=True)
class FieldError:
    path: str
    value: Any
    message: str

    def __str__(self) -> str:
        return f"{self.path}: Invalid value: {_show(self.value)}: {self.message}"


class InvalidSpecError(ValueError):
    """An InferenceService that is not valid; `errors` lists every invalid field."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(error) for error in errors))


def _show(value: Any) -> str:
    if isinstance(value, dict | list):
        return type(value).__name__
    return repr(value)


# Python's re read as the API server's RE2: \w, \s and \d are ASCII only, and $ does not
# match before a trailing newline (found by e2e/test_spec_fuzz.py: "oci://r/m:tagµ" and
# "s3://b/m\n" passed here and not there).
_RE2_FLAGS = "(?a)"


def _as_re2(pattern: str) -> str:
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + "\\Z"
    return _RE2_FLAGS + pattern


def _re2_patterns(node: Any) -> Any:
    if isinstance(node, list):
        return [_re2_patterns(item) for item in node]
    if not isinstance(node, dict):
        return node
    return {
        key: _as_re2(value) if key == "pattern" and isinstance(value, str) else _re2_patterns(value)
        for key, value in node.items()
    }


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    root = crd_schema.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    # Kubernetes schemas are OpenAPI v3.0: boolean exclusiveMinimum, as in draft 4.
    validator = jsonschema.validators.extend(
        jsonschema.Draft4Validator,
        type_checker=jsonschema.Draft4Validator.TYPE_CHECKER.redefine("integer", _is_int64),
    )
    return validator(_re2_patterns(root))


_INT64 = range(-(2**63), 2**63)


def _is_int64(_checker: Any, instance: Any) -> bool:
    """The API server decodes a JSON integer outside int64 as a float, which is not an
    integer to its schema: `cpu: 9223372036854775808` is refused as a "number"."""
    return isinstance(instance, int) and not isinstance(instance, bool) and instance in _INT64


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _lookup(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def _structural_errors(obj: dict[str, Any]) -> list[FieldError]:
    errors = []
    for error in _validator().iter_errors(obj):
        path = _path(error.absolute_path) or "<root>"
        if error.validator == "required":
            missing = error.message.split("'")[1]
            errors.append(
                FieldError(
                    f"{path}.{missing}" if error.absolute_path else missing, None, "Required"
                )
            )
            continue
        errors.append(FieldError(path, error.instance, _describe(error)))
    return errors


_PATTERN_HINTS = {
    c.STORAGE_URI_PATTERN: "must be s3://<bucket>/<key>, gs://<bucket>/<key>, "
    "http(s)://<host>/<path>, pvc://<claim>/<path>, hf://<org>/<repo>[@<revision>]/<file> "
    "or oci://<registry>/<repository>:<tag>",
    storage.DNS1123_SUBDOMAIN_PATTERN: "must be a Secret's or ConfigMap's name (a DNS-1123 "
    "subdomain: lowercase letters, digits, '-' and '.')",
    storage.S3_ENDPOINT_PATTERN: "must be http(s)://<host>[:<port>], without a path",
    c.QUANTITY_PATTERN: "must be a Kubernetes quantity such as 500m, 2, 4Gi",
    c.MIG_PROFILE_PATTERN: "must be a MIG profile such as 1g.10gb or 3g.40gb",
    c.TIER_NAME_PATTERN: "must be lowercase letters, digits and '-', e.g. fp16",
    c.LABEL_VALUE_PATTERN: "a label value must be empty or start and end with a letter or "
    "digit, with '-', '_' and '.' between",
}


_RE2_PATTERNS = {_as_re2(pattern): pattern for pattern in _PATTERN_HINTS}


def _describe(error: jsonschema.ValidationError) -> str:
    schema = error.schema
    match error.validator:
        case "enum":
            return "supported values: " + ", ".join(f'"{v}"' for v in schema["enum"])
        case "pattern":
            pattern = _RE2_PATTERNS.get(schema["pattern"], schema["pattern"])
            return _PATTERN_HINTS.get(pattern, f"must match {pattern!r}")
        case "minimum" | "maximum":
            return error.message.split(" is ", 1)[-1]
        case "type":
            return f"must be of type {schema['type']}" + _int64_hint(error.instance)
        case "anyOf" if schema.get("x-kubernetes-int-or-string"):
            return "must be an integer or a string" + _int64_hint(error.instance)
    return error.message


def _int64_hint(value: Any) -> str:
    beyond = isinstance(value, int) and not isinstance(value, bool) and value not in _INT64
    return " (an integer must fit in 64 bits)" if beyond else ""


@functools.cache
def _unique_lists() -> tuple[tuple[tuple[str, ...], tuple[str, ...] | None], ...]:
    """(path, the map's keys; None for a set) of every list under spec that the CRD declares
    x-kubernetes-list-type map or set: the API server refuses a duplicate in any of them."""
    found: list[tuple[tuple[str, ...], tuple[str, ...] | None]] = []

    def walk(node: dict[str, Any], path: tuple[str, ...]) -> None:
        kind = node.get("x-kubernetes-list-type")
        if kind == "map":
            found.append((path, tuple(node.get("x-kubernetes-list-map-keys") or ())))
        elif kind == "set":
            found.append((path, None))
        for key, child in (node.get("properties") or {}).items():
            walk(child, (*path, key))

    walk(crd_schema.spec_schema(), ("spec",))
    return tuple(found)


def _identity(item: Any, keys: tuple[str, ...] | None) -> tuple[Any, str]:
    """(the value an error shows, what makes two items the same) of a list-map or set item."""
    if keys is not None and isinstance(item, dict):
        return item.get(keys[0]), json.dumps([item.get(key) for key in keys])
    return item, json.dumps(item, sort_keys=True)


def _duplicate_keys(obj: dict[str, Any]) -> list[FieldError]:
    """List-map keys and list-set items must be unique (x-kubernetes-list-type map, set)."""
    errors = []
    for path, keys in _unique_lists():
        items = _lookup(obj, path)
        if not isinstance(items, list):
            continue
        seen: set[str] = set()
        for index, item in enumerate(items):
            value, identity = _identity(item, keys)
            if identity in seen:
                errors.append(FieldError(f"{'.'.join(path)}[{index}]", value, "Duplicate value"))
            seen.add(identity)
    return errors


# Maps whose keys are label keys (annotation keys follow the same rule).
_LABEL_KEY_MAPS = (
    ("spec", "nodeSelector"),
    ("spec", "podMetadata", "labels"),
    ("spec", "podMetadata", "annotations"),
)


def _label_key_errors(obj: dict[str, Any]) -> list[FieldError]:
    """nodeSelector, pod label and annotation keys must be label keys. Not in the CRD: a rule
    over a map's keys costs more than the API server's CEL budget allows, so the operator and
    `kinfer render` report it (a condition and an Event) before the Deployment is refused."""
    errors = []
    for path in _LABEL_KEY_MAPS:
        keys = _lookup(obj, path)
        if not isinstance(keys, dict):
            continue
        for key in keys:
            prefix, _, name = key.rpartition("/")
            if not re.fullmatch(c.LABEL_KEY_PATTERN, key) or len(prefix) > 253 or len(name) > 63:
                errors.append(
                    FieldError(
                        f"{'.'.join(path)}[{key}]",
                        key,
                        "a label key is an optional DNS-subdomain prefix and '/', then a name "
                        "of at most 63 letters, digits, '-', '_' and '.', starting and ending "
                        "with a letter or digit (e.g. nvidia.com/gpu.product)",
                    )
                )
    return errors


def _storage_uri_errors(obj: dict[str, Any]) -> list[FieldError]:
    """storageUris the pattern admits and a URL parser refuses (an unclosed IPv6 bracket:
    "http://[host/m"): refused here, as rendering their fetch cannot be done."""
    uris = [("spec.model.storageUri", _lookup(obj, ("spec", "model", "storageUri")))]
    tiers = _lookup(obj, ("spec", "precision", "tiers"))
    for index, tier in enumerate(tiers if isinstance(tiers, list) else []):
        uris.append((f"spec.precision.tiers[{index}].storageUri", tier.get("storageUri")))
    errors = []
    for path, uri in uris:
        if not isinstance(uri, str):
            continue
        try:
            urlsplit(uri)
        except ValueError as error:
            errors.append(FieldError(path, uri, f"not a URL: {error}"))
    return errors


# Objects the API server defaults to {} before CEL runs; precision has no default,
# so its rules only apply when it is there.
_DEFAULTED_TO_EMPTY = {("spec", "model"), ("spec", "resources"), ("spec", "scaling")}


def _cross_field_errors(obj: dict[str, Any]) -> list[FieldError]:
    errors = []
    for rule in crd_schema.CROSS_FIELD_RULES:
        target = _lookup(obj, rule.where)
        if target is None and rule.where in _DEFAULTED_TO_EMPTY:
            target = {}
        if target is None or rule.check(target):
            continue
        value = _lookup(obj, tuple(rule.field_path.split(".")))
        errors.append(FieldError(rule.field_path, value, rule.message))
    return errors


def validate_object(obj: dict[str, Any]) -> list[FieldError]:
    """Every reason this InferenceService object is invalid (empty list: valid)."""
    if not isinstance(obj, dict):
        return [FieldError("<root>", obj, "an InferenceService must be a mapping")]
    errors = []
    if obj.get("apiVersion", API_VERSION) != API_VERSION or obj.get("kind", KIND) != KIND:
        found = f"{obj.get('apiVersion')}/{obj.get('kind')}"
        errors.append(FieldError("kind", found, f"expected apiVersion {API_VERSION}, kind {KIND}"))
    errors += _structural_errors(obj)
    if errors:
        # Cross-field rules assume well-typed fields, as CEL does after the schema.
        return errors
    return (
        _duplicate_keys(obj)
        + _cross_field_errors(obj)
        + _label_key_errors(obj)
        + _storage_uri_errors(obj)
    )
