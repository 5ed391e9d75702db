"""The `kinfer` command: run | render | crd | cluster | bench.

Each subsystem registers its own subcommand (`register(subparsers)`) so this
module stays a table of contents; heavy imports happen inside the handlers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kinfer import __version__


def build_parser() -> argparse.ArgumentParser:
    from kinfer.autoscale import bench as autoscale_bench
    from kinfer.controller import cli as controller_cli
    from kinfer.localcluster import cli as cluster_cli
    from kinfer.render import cli as render_cli
    from kinfer.runtime import bench as runtime_bench

    parser = argparse.ArgumentParser(
        prog="kinfer",
        description="kinfer: elastic inference-as-a-service on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"kinfer {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    controller_cli.register(commands)
    render_cli.register(commands)
    cluster_cli.register(commands)
    bench = commands.add_parser("bench", help="benchmarks: runtime latency, autoscaling policies")
    bench_commands = bench.add_subparsers(dest="bench_command", metavar="BENCH", required=True)
    runtime_bench.register(bench_commands)
    autoscale_bench.register(bench_commands)
    return parser


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
