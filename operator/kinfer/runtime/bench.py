"""Placeholder for the `runtime` subcommand: runtime benchmark (issue 3). Replaced by its implementation."""

from __future__ import annotations

import argparse
import sys


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("runtime", help="runtime benchmark (issue 3) (not built yet)")
    parser.set_defaults(handler=_not_built)


def _not_built(args: argparse.Namespace) -> int:
    print("kinfer: this command is not built yet", file=sys.stderr)
    return 2
