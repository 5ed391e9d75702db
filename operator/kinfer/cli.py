"""The `kinfer` command: run | render | crd | plot | cluster | bench.

Each subsystem registers its own subcommand (`register(subparsers)`) so this
module stays a table of contents; heavy imports happen inside the handlers.
`cluster` and `bench` are the developer tooling's, from kinfer-dev when it is
installed (the operator's wheel and image carry neither).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence

from kinfer import __version__

DEV_COMMANDS = {
    "cluster": "a local Kubernetes cluster with simulated GPU nodes (needs kinfer-dev)",
    "bench": "benchmarks: runtime latency, autoscaling policies (needs kinfer-dev)",
}


def build_parser() -> argparse.ArgumentParser:
    from kinfer.controller import cli as controller_cli
    from kinfer.observability import plot_cli
    from kinfer.render import cli as render_cli

    parser = argparse.ArgumentParser(
        prog="kinfer",
        description="kinfer: elastic inference-as-a-service on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"kinfer {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    controller_cli.register(commands)
    render_cli.register(commands)
    plot_cli.register(commands)
    # Only a kinfer-dev that is not there is tolerated: its own import errors surface.
    if importlib.util.find_spec("kinfer_dev") is not None:
        from kinfer_dev import cli as dev_cli

        dev_cli.register(commands)
    else:
        for name, help_text in DEV_COMMANDS.items():
            # No option prefix: every argument, --help too, lands in `rest`, unread.
            missing = commands.add_parser(name, help=help_text, add_help=False, prefix_chars="\0")
            missing.add_argument("rest", nargs="*")
            missing.set_defaults(handler=_dev_missing)
    return parser


def _dev_missing(args: argparse.Namespace) -> int:
    print(
        f"kinfer {args.command}: the developer tooling is not installed: "
        "pip install -e operator/dev (or make install)",
        file=sys.stderr,
    )
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `kinfer render ... | head` closed the pipe: not an error of ours.
        sys.stderr.close()
        return 0
