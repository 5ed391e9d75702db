"""`kinfer cluster` and `kinfer bench`: kinfer.cli registers them from here when kinfer-dev
is installed."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    from kinfer_dev.autoscale import bench as autoscale_bench
    from kinfer_dev.fleet import bench as operator_bench
    from kinfer_dev.localcluster import cli as cluster_cli
    from kinfer_dev.localcluster import soak
    from kinfer_dev.runtime import bench as runtime_bench

    cluster_cli.register(commands)
    bench = commands.add_parser(
        "bench",
        help="benchmarks: runtime latency, autoscaling policies, the operator at scale, a soak",
    )
    bench_commands = bench.add_subparsers(dest="bench_command", metavar="BENCH", required=True)
    runtime_bench.register(bench_commands)
    autoscale_bench.register(bench_commands)
    operator_bench.register(bench_commands)
    soak.register(bench_commands)
