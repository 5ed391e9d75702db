"""`kinfer plot NAME`: one InferenceService's timeline (QPS, p95 against the target, replicas,
tier, scale and tier Events) from Prometheus and the API server, as a PNG."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kinfer.autoscale import metrics

DEFAULT_SINCE = "30m"


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "plot",
        help="plot an InferenceService's QPS, p95, replicas and tier over time (PNG; needs "
        "matplotlib: pip install 'kinfer[plot]')",
        description="Read one InferenceService's history from Prometheus (range queries of "
        "its model servers' and the operator's metrics) and its scale and tier Events from "
        "the API server, and write the timeline as a PNG.",
    )
    parser.add_argument("name", help="the InferenceService")
    parser.add_argument(
        "-n", "--namespace", default="default", help="its namespace (default: default)"
    )
    parser.add_argument(
        "--since",
        default=DEFAULT_SINCE,
        help=f"how far back, e.g. 90s, 30m, 2h (default {DEFAULT_SINCE})",
    )
    parser.add_argument(
        "--window",
        default=None,
        help="rate window of QPS and p95, e.g. 30s (default: spec.scaling.metricsWindowSeconds,"
        " else 60s)",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="the PNG to write (default NAME-timeline.png)",
    )
    parser.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    metrics.add_arguments(parser)
    parser.set_defaults(handler=plot_command)


def plot_command(args: argparse.Namespace) -> int:
    from kinfer.observability import history, plot

    try:
        plot.require_matplotlib()
    except plot.PlottingUnavailable as error:
        print(f"kinfer plot: {error}", file=sys.stderr)
        return 2
    try:
        since_s = history.parse_duration(args.since)
        window_s = int(history.parse_duration(args.window)) if args.window else None
        settings = metrics.settings_from_args(args)
    except ValueError as error:
        print(f"kinfer plot: {error}", file=sys.stderr)
        return 2
    from kubernetes.config import ConfigException

    from kinfer.controller.kube import load_api_client

    try:
        api_client = load_api_client(args.kubeconfig)
        timeline = history.read_timeline(
            settings, api_client, args.namespace, args.name, since_s, window_s
        )
    except (history.HistoryError, ConfigException) as error:
        print(f"kinfer plot: {error}", file=sys.stderr)
        return 1
    output = (args.output or Path(f"{args.name}-timeline.png")).absolute()
    plot.write_png(timeline, output)
    print(plot.describe(timeline))
    print(f"timeline: {output}")
    return 0
