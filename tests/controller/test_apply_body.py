"""Server-side apply bodies are parsed as YAML by the API server: every character a spec can
hold must reach it as a form YAML reads back to the same string."""

from __future__ import annotations

import json

import pytest
import yaml

from kinfer.controller.kube import apply_body


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "hello \U0001f642",
        "tab\t, newline\n, nul\x00",
        "del \x7f, nel \x85, c1 \x9f, nbsp \xa0",
        "bom \ufeff, nonchars \ufffe\uffff, line sep \u2028",
    ],
)
def test_the_body_is_json_that_yaml_reads_back_unchanged(value: str) -> None:
    body = apply_body({"data": {"value": value}}).decode()
    assert json.loads(body) == {"data": {"value": value}}
    assert yaml.safe_load(body) == {"data": {"value": value}}


def test_only_the_characters_yaml_refuses_raw_are_escaped() -> None:
    body = apply_body({"v": "é\x85\U0001f642"}).decode()
    assert body == '{"v": "é\\u0085\U0001f642"}'
