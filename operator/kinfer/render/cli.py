"""`kinfer render -f FILE` and `kinfer crd`: the operator's output, without a cluster."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from kinfer.api import constants as c
from kinfer.api import schema
from kinfer.api.model import parse
from kinfer.api.validation import InvalidSpecError
from kinfer.config import RenderOptions
from kinfer.render import render


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "render",
        help="print the objects the operator would apply for an InferenceService",
        description="Validate InferenceService(s) from a file and print, as YAML, exactly the "
        "objects the operator applies for them. No cluster needed.",
    )
    parser.add_argument("-f", "--filename", required=True, help="YAML file ('-' for stdin)")
    parser.add_argument(
        "-n", "--namespace", default="default", help="namespace when the object has none"
    )
    parser.set_defaults(handler=run_render)
    crd = commands.add_parser("crd", help="print the InferenceService CRD (crds/ is its output)")
    crd.set_defaults(handler=lambda args: _dump([schema.crd()]))


class _Dumper(yaml.SafeDumper):
    """Kubernetes-style YAML: no anchors, multi-line strings (config.pbtxt) as blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def to_yaml(objects: list[dict[str, Any]]) -> str:
    return yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def _dump(objects: list[dict[str, Any]]) -> int:
    sys.stdout.write(to_yaml(objects))
    return 0


def _load(filename: str) -> list[Any]:
    if filename == "-":
        return [doc for doc in yaml.safe_load_all(sys.stdin) if doc is not None]
    with open(filename, encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def run_render(args: argparse.Namespace) -> int:
    try:
        documents = _load(args.filename)
    except (OSError, yaml.YAMLError) as error:
        print(f"kinfer render: cannot read {args.filename}: {error}", file=sys.stderr)
        return 1
    services = [d for d in documents if isinstance(d, dict) and d.get("kind") == c.KIND]
    if not services:
        print(f"kinfer render: no {c.KIND} in {args.filename}", file=sys.stderr)
        return 1
    objects: list[dict[str, Any]] = []
    failed = False
    for document in services:
        name = (document.get("metadata") or {}).get("name", "<unnamed>")
        try:
            objects += render(parse(document, default_namespace=args.namespace), RenderOptions())
        except InvalidSpecError as error:
            failed = True
            print(f"kinfer render: {c.KIND} {name!r} is invalid:", file=sys.stderr)
            for field_error in error.errors:
                print(f"  {field_error}", file=sys.stderr)
    if failed:
        return 1
    return _dump(objects)
