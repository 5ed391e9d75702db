"""`kinfer run`: start the operator (kopf) against the current kubeconfig."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from urllib.parse import urlsplit

from kinfer.autoscale import metrics
from kinfer.config import RenderOptions


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "run",
        help="run the operator against the current kubeconfig (or in-cluster credentials)",
        description="Start kinfer's operator: reconcile InferenceServices cluster-wide "
        "(or in the given namespaces).",
    )
    parser.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable; default: all namespaces)",
    )
    parser.add_argument(
        "--liveness",
        default=None,
        help="serve kopf's liveness probe at this URL, e.g. http://0.0.0.0:8080/healthz",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="serve the operator's own metrics on 0.0.0.0:PORT/metrics (default 0: off;"
        " the shipped Deployment serves them on 8081)",
    )
    parser.add_argument(
        "--metrics-address",
        default="0.0.0.0",
        help="the address the metrics port listens on (default 0.0.0.0; 127.0.0.1 for a local"
        " operator)",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--log-format",
        choices=("plain", "full", "json"),
        default="full",
        help="json: one object a line, with the InferenceService's namespace and name",
    )
    metrics.add_arguments(parser)
    parser.set_defaults(handler=run_operator)


def run_operator(args: argparse.Namespace) -> int:
    import kopf

    from kinfer.controller import cache, handlers, telemetry
    from kinfer.controller.kube import Kube, connection_info, load_api_client

    kopf.configure(
        verbose=args.verbose,
        log_format=getattr(kopf.LogFormat, args.log_format.upper()),
        log_prefix=args.log_format != "json",
    )
    api_client = load_api_client(args.kubeconfig)

    @kopf.on.login()
    def login(**_: object) -> kopf.ConnectionInfo:
        # The credentials our client loaded (--kubeconfig, in-cluster, or the default).
        return kopf.ConnectionInfo(**connection_info(api_client))

    try:
        settings = metrics.settings_from_args(args)
    except ValueError as error:
        print(f"kinfer run: {error}", file=sys.stderr)
        return 2
    telemetry.count_requests(api_client)
    kube = Kube(api_client)
    caches = cache.informers(kube, args.namespace or None)
    memo = handlers.operator_memo(
        cache.CachedKube(kube, caches), RenderOptions(), metrics.PrometheusReader(settings), caches
    )
    telemetry.serve(args.metrics_port, args.metrics_address)
    # Never log credentials a URL may carry (user:password@host).
    parts = urlsplit(settings.url)
    shown = parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]).geturl()
    logging.getLogger(__name__).info("reading metrics from Prometheus at %s", shown)
    asyncio.run(
        kopf.operator(
            standalone=True,
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            liveness_endpoint=args.liveness,
            memo=memo,
        )
    )
    return 0
