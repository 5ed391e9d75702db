"""The API reference table (docs/api.md), generated from the CRD schema."""

from __future__ import annotations

import json
from typing import Any

from kinfer.api import schema

BEGIN = "<!-- BEGIN GENERATED: kinfer.api.reference -->"
END = "<!-- END GENERATED: kinfer.api.reference -->"


def _type(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "quantity"
    if node.get("type") == "array":
        return f"list of {_type(node.get('items') or {})}"
    if node.get("type") == "object" and "additionalProperties" in node:
        return "map of string"
    return node.get("type", "object")


def _constraints(node: dict[str, Any]) -> str:
    parts = []
    if "enum" in node:
        parts.append("one of " + ", ".join(f"`{v}`" if v != "" else '`""`' for v in node["enum"]))
    if "minimum" in node:
        parts.append(f"{'>' if node.get('exclusiveMinimum') else '>='} {node['minimum']}")
    if "maximum" in node:
        parts.append(f"<= {node['maximum']}")
    if "maxItems" in node:
        parts.append(f"at most {node['maxItems']} items")
    if node.get("x-kubernetes-list-map-keys"):
        parts.append("unique `" + "`, `".join(node["x-kubernetes-list-map-keys"]) + "`")
    return "; ".join(parts)


def _rows(node: dict[str, Any], path: str, required: set[str]) -> list[str]:
    rows = []
    for key, sub in (node.get("properties") or {}).items():
        field = f"{path}.{key}"
        default = sub.get("default")
        default_text = "" if default in (None, {}) else f"`{json.dumps(default)}`"
        if key in required:
            default_text = "required"
        description = " ".join((sub.get("description") or "").split())
        constraints = _constraints(sub)
        if constraints:
            description = f"{description} ({constraints})" if description else constraints
        rows.append(f"| `{field}` | {_type(sub)} | {default_text} | {description} |")
        target = sub.get("items") if sub.get("type") == "array" else sub
        if target and target.get("properties") and key not in ("env",):
            suffix = "[]" if sub.get("type") == "array" else ""
            rows += _rows(target, field + suffix, set(target.get("required") or []))
    return rows


def markdown() -> str:
    """The generated block: spec fields, then the cross-field rules."""
    spec = schema.spec_schema()
    lines = [
        BEGIN,
        "| field | type | default | description |",
        "|---|---|---|---|",
        *_rows(spec, "spec", set(spec.get("required") or [])),
        "",
        "Rules across fields (CEL `x-kubernetes-validations`, enforced by the API server at "
        "`kubectl apply`; the same rules run in `kinfer render` and the operator):",
        "",
        "| field | rule |",
        "|---|---|",
        *(f"| `{rule.field_path}` | {rule.message} |" for rule in schema.CROSS_FIELD_RULES),
        END,
    ]
    return "\n".join(lines)


def update(path: str) -> None:
    """Rewrite the generated block of a markdown file in place."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(head + markdown() + tail)


if __name__ == "__main__":
    import sys

    update(sys.argv[1])
