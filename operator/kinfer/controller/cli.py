"""`kinfer run`: start the operator (kopf) against the current kubeconfig."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from urllib.parse import urlsplit

from kinfer.autoscale import metrics
from kinfer.config import RenderOptions
from kinfer.controller import leader


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
        help="serve the liveness probe at this URL, e.g. http://0.0.0.0:8080/healthz (kopf's;"
        " with --leader-election, on every replica, and /readyz beside it)",
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
    _add_leader_election_arguments(parser)
    parser.set_defaults(handler=run_operator)


def _add_leader_election_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("leader election (docs/high-availability.md)")
    group.add_argument(
        "--leader-election",
        action="store_true",
        help="act only while holding a coordination.k8s.io Lease; stand by otherwise"
        " (default: off; on in the shipped Deployment)",
    )
    group.add_argument(
        "--leader-election-namespace",
        default=None,
        help="the Lease's namespace (default: the pod's, from its service account or"
        f" $POD_NAMESPACE, else {leader.DEFAULT_NAMESPACE})",
    )
    group.add_argument(
        "--leader-election-id",
        default=leader.DEFAULT_LEASE_NAME,
        help=f"the Lease's name (default {leader.DEFAULT_LEASE_NAME})",
    )
    for flag, default, what in (
        (
            "lease-duration",
            leader.DEFAULT_LEASE_DURATION_S,
            "how long a standby waits on a Lease that stopped changing",
        ),
        (
            "renew-deadline",
            leader.DEFAULT_RENEW_DEADLINE_S,
            "how long the leader keeps trying to renew before it exits",
        ),
        ("retry-period", leader.DEFAULT_RETRY_PERIOD_S, "how often the Lease is tried"),
    ):
        group.add_argument(
            f"--leader-election-{flag}",
            type=float,
            default=default,
            metavar="SECONDS",
            help=f"{what} (default {default:g})",
        )


def run_operator(args: argparse.Namespace) -> int:
    import kopf

    from kinfer.controller import cache, handlers, memprofile, telemetry
    from kinfer.controller.kube import Kube, connection_info, load_api_client

    memprofile.install_from_env()

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
        timing = _timing(args)
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
    if not args.leader_election:
        leader.LEADER.set(1)
        asyncio.run(_operate(args, memo, args.liveness))
        return 0
    elector = leader.Elector(
        leader.LeaseLock(
            load_api_client(args.kubeconfig),
            args.leader_election_namespace or leader.default_namespace(),
            args.leader_election_id,
            timing.renew_deadline_s,
        ),
        leader.make_identity(),
        timing,
    )
    asyncio.run(
        leader.run_elected(elector, lambda stop: _operate(args, memo, None, stop), args.liveness)
    )
    return 0


async def _operate(
    args: argparse.Namespace,
    memo: object,
    liveness: str | None,
    stop: asyncio.Event | None = None,
) -> None:
    import kopf

    if stop is not None:
        # A SIGTERM kopf takes itself stops it without setting `stop`: set it on the way out,
        # or kopf waits 5 s for its own waiter on `stop` (a "hung" task) before it returns
        # and the Lease is released.
        kopf.on.cleanup(id="leader-election-stop")(lambda **_: stop.set())
    await kopf.operator(
        standalone=True,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=liveness,
        memo=memo,
        stop_flag=stop,
    )


def _timing(args: argparse.Namespace) -> leader.Timing:
    return leader.Timing(
        lease_duration_s=args.leader_election_lease_duration,
        renew_deadline_s=args.leader_election_renew_deadline,
        retry_period_s=args.leader_election_retry_period,
    )
