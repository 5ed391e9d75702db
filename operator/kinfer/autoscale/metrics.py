"""The Prometheus reader: QPS and p95 of one InferenceService, per runtime, as an Observation.

The PromQL is built by pure functions (`queries`), so what the operator asks Prometheus is tested
without one. Series are selected by the `namespace` and `inferenceservice` labels, which the scrape
config and PodMonitor in manifests/ put on every series by relabelling the pod's namespace and its
`kinfer.dev/inferenceservice` label, and pods are told apart by the `pod` label.

kinfer's server exports histograms, so p95 is histogram_quantile over rate(_bucket): a true
quantile over every pod's requests in the window (up to bucket resolution). Triton exports no
latency histogram; with `--metrics-config summary_latencies=true` it exports a summary,
nv_inference_request_summary_us{quantile="0.95"}, computed by each pod over its own sliding
window (the last few minutes or samples, not our rate window). Quantiles of different pods
cannot be merged into a cluster-wide quantile, so kinfer approximates it: `max` across pods (the
default: the slowest pod's p95, an upper bound of the true one when load is balanced) or `mean`
(the pods' p95s weighted by their request rates, closer on average, can hide one slow pod). Both
lag a load change by the summary's own window.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kinfer.autoscale.observation import Observation, VersionObservation

LABEL_NAMESPACE = "namespace"
LABEL_INFERENCESERVICE = "inferenceservice"
LABEL_POD = "pod"
LABEL_VERSION = "version"

RUNTIME_ONNXRUNTIME = "onnxruntime"
RUNTIME_TRITON = "triton"
TRITON_P95_AGGREGATIONS = ("max", "mean")

ENV_PREFIX = "KINFER_PROMETHEUS_"


@dataclass(frozen=True)
class PrometheusSettings:
    """Where Prometheus is and how to log in (flags --prometheus-*, env KINFER_PROMETHEUS_*)."""

    url: str = "http://127.0.0.1:9090"
    bearer_token_file: str | None = None
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    insecure_skip_verify: bool = False
    timeout_s: float = 5.0
    triton_p95_aggregation: str = "max"

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"--prometheus-url: {self.url!r} must start with http:// or https://")
        if self.triton_p95_aggregation not in TRITON_P95_AGGREGATIONS:
            raise ValueError(
                f"--prometheus-triton-p95: {self.triton_p95_aggregation!r} must be one of"
                f" {', '.join(TRITON_P95_AGGREGATIONS)}"
            )
        if self.timeout_s <= 0:
            raise ValueError(f"--prometheus-timeout-s: {self.timeout_s} must be > 0")
        if (self.username is None) != (self.password is None):
            raise ValueError("--prometheus-username and --prometheus-password go together")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PrometheusSettings:
        env = os.environ if environ is None else environ

        def get(key: str) -> str | None:
            return env.get(ENV_PREFIX + key) or None

        return cls(
            url=get("URL") or cls.url,
            bearer_token_file=get("BEARER_TOKEN_FILE"),
            username=get("USERNAME"),
            password=get("PASSWORD"),
            ca_file=get("CA_FILE"),
            insecure_skip_verify=(get("INSECURE_SKIP_VERIFY") or "").lower() in ("1", "true"),
            timeout_s=float(get("TIMEOUT_S") or cls.timeout_s),
            triton_p95_aggregation=get("TRITON_P95") or cls.triton_p95_aggregation,
        )


def add_arguments(parser: Any) -> None:
    """The `--prometheus-*` flags; each defaults to its KINFER_PROMETHEUS_* env variable."""
    env = PrometheusSettings.from_env()
    group = parser.add_argument_group("Prometheus (autoscaling metrics)")
    group.add_argument("--prometheus-url", default=env.url, help="env KINFER_PROMETHEUS_URL")
    group.add_argument(
        "--prometheus-bearer-token-file",
        default=env.bearer_token_file,
        help="file with a bearer token, re-read on every query (env ..._BEARER_TOKEN_FILE)",
    )
    group.add_argument("--prometheus-username", default=env.username, help="basic auth user")
    group.add_argument(
        "--prometheus-password",
        default=env.password,
        help="basic auth password (prefer env KINFER_PROMETHEUS_PASSWORD)",
    )
    group.add_argument("--prometheus-ca-file", default=env.ca_file, help="CA bundle for https")
    group.add_argument(
        "--prometheus-insecure-skip-verify",
        action="store_true",
        default=env.insecure_skip_verify,
        help="do not verify the server's TLS certificate",
    )
    group.add_argument("--prometheus-timeout-s", type=float, default=env.timeout_s)
    group.add_argument(
        "--prometheus-triton-p95",
        choices=TRITON_P95_AGGREGATIONS,
        default=env.triton_p95_aggregation,
        help="how per-pod Triton p95 summaries are combined (see docs/autoscaling.md)",
    )


def settings_from_args(args: Any) -> PrometheusSettings:
    return PrometheusSettings(
        url=args.prometheus_url,
        bearer_token_file=args.prometheus_bearer_token_file,
        username=args.prometheus_username,
        password=args.prometheus_password,
        ca_file=args.prometheus_ca_file,
        insecure_skip_verify=args.prometheus_insecure_skip_verify,
        timeout_s=args.prometheus_timeout_s,
        triton_p95_aggregation=args.prometheus_triton_p95,
    )


@dataclass(frozen=True)
class Queries:
    """The PromQL for one InferenceService; every value is an instant query."""

    qps: str
    qps_recent: str
    latency_p95_ms: str
    qps_by_version: str
    latency_p95_ms_by_version: str
    # The per-version split over the short window: a tier that has served less than the window
    # since a switch is measured on it (kinfer.autoscale.policy).
    qps_by_version_recent: str
    latency_p95_ms_by_version_recent: str
    pods_reporting: str
    newest_sample_age_s: str
    # The servers' own last-second arrival rate (a gauge), where the runtime exports one.
    qps_arriving: str | None = None


def selector(namespace: str, name: str) -> str:
    return f'{LABEL_NAMESPACE}="{_escape(namespace)}",{LABEL_INFERENCESERVICE}="{_escape(name)}"'


def queries(
    namespace: str,
    name: str,
    runtime: str,
    window_s: int = 60,
    recent_window_s: int = 30,
    triton_p95_aggregation: str = "max",
) -> Queries:
    """PromQL for QPS, p95 (ms), their per-version split, and the completeness facts."""
    sel = selector(namespace, name)
    w, r = f"[{int(window_s)}s]", f"[{int(recent_window_s)}s]"
    if runtime == RUNTIME_ONNXRUNTIME:
        requests = f"kinfer_inference_requests_total{{{sel}}}"
        buckets = f"kinfer_inference_request_duration_seconds_bucket{{{sel}}}"
        return Queries(
            qps=f"sum(rate({requests}{w}))",
            qps_recent=f"sum(rate({requests}{r}))",
            latency_p95_ms=f"histogram_quantile(0.95, sum by (le) (rate({buckets}{w}))) * 1000",
            qps_by_version=f"sum by ({LABEL_VERSION}) (rate({requests}{w}))",
            latency_p95_ms_by_version=(
                f"histogram_quantile(0.95, sum by (le, {LABEL_VERSION}) (rate({buckets}{w})))"
                " * 1000"
            ),
            qps_by_version_recent=f"sum by ({LABEL_VERSION}) (rate({requests}{r}))",
            latency_p95_ms_by_version_recent=(
                f"histogram_quantile(0.95, sum by (le, {LABEL_VERSION}) (rate({buckets}{r})))"
                " * 1000"
            ),
            pods_reporting=f"count(count by ({LABEL_POD}) (rate({requests}{w})))",
            newest_sample_age_s=f"time() - max(timestamp({requests}))",
            qps_arriving=f"sum(kinfer_inference_arrival_rate{{{sel}}})",
        )
    if runtime == RUNTIME_TRITON:
        if triton_p95_aggregation not in TRITON_P95_AGGREGATIONS:
            raise ValueError(
                f"triton_p95_aggregation: {triton_p95_aggregation!r} must be one of"
                f" {', '.join(TRITON_P95_AGGREGATIONS)}"
            )
        requests = (
            f'{{__name__=~"nv_inference_request_success|nv_inference_request_failure",{sel}}}'
        )
        success = f"nv_inference_request_success{{{sel}}}"
        # `>= 0` drops NaN: a pod's summary has no quantile while its window holds no request.
        p95 = f'(nv_inference_request_summary_us{{{sel},quantile="0.95"}} >= 0)'

        def p95_by(by: str, window: str = w) -> str:
            # The summary's quantile is over the pod's own sliding window whatever `window` is;
            # `window` only weights the pods' quantiles by their request rates (mean).
            if triton_p95_aggregation == "max":
                return f"max by ({by}) ({p95}) / 1000" if by else f"max({p95}) / 1000"
            on = f"{LABEL_POD}, model, {LABEL_VERSION}"
            weighted = f"{p95} * on ({on}) rate({success}{window})"
            group = f" by ({by})" if by else ""
            return (
                f"sum{group} ({weighted}) / sum{group} (rate({success}{window}) and on ({on})"
                f" {p95}) / 1000"
            )

        return Queries(
            qps=f"sum(rate({requests}{w}))",
            qps_recent=f"sum(rate({requests}{r}))",
            latency_p95_ms=p95_by(""),
            qps_by_version=f"sum by ({LABEL_VERSION}) (rate({requests}{w}))",
            latency_p95_ms_by_version=p95_by(LABEL_VERSION),
            qps_by_version_recent=f"sum by ({LABEL_VERSION}) (rate({requests}{r}))",
            latency_p95_ms_by_version_recent=p95_by(LABEL_VERSION, r),
            pods_reporting=f"count(count by ({LABEL_POD}) (rate({success}{w})))",
            newest_sample_age_s=f"time() - max(timestamp({success}))",
        )
    raise ValueError(f"spec.runtime: {runtime!r} must be one of onnxruntime, triton")


class PrometheusReader:
    """Reads one InferenceService's metrics from Prometheus.

    Synchronous (prometheus-api-client uses requests): the controller calls `observe` through
    asyncio.to_thread so a slow or dead Prometheus never blocks kopf's event loop. `observe`
    never raises: a failed or empty read is an Observation whose `error` says why, and the policy
    then holds the replicas (fail-static).
    """

    def __init__(self, settings: PrometheusSettings) -> None:
        import requests
        from prometheus_api_client import PrometheusConnect
        from urllib3.util.retry import Retry

        self.settings = settings
        session = requests.Session()
        if settings.ca_file:
            session.verify = settings.ca_file
        if settings.insecure_skip_verify:
            session.verify = False
        auth = (settings.username, settings.password) if settings.username else None
        self._session = session
        self._client = PrometheusConnect(
            url=settings.url,
            disable_ssl=settings.insecure_skip_verify,
            auth=auth,
            session=session,
            timeout=settings.timeout_s,
            # The next period is the retry: within one, fail fast rather than back off.
            retry=Retry(total=0),
        )

    def observe(
        self,
        namespace: str,
        name: str,
        runtime: str,
        window_s: int = 60,
        recent_window_s: int = 30,
    ) -> Observation:
        try:
            built = queries(
                namespace,
                name,
                runtime,
                window_s,
                recent_window_s,
                self.settings.triton_p95_aggregation,
            )
        except ValueError as error:
            return Observation(error=str(error))
        # One evaluation time for every query, so the figures describe the same instant.
        at = f"{time.time():.3f}"
        try:
            self._refresh_token()
            qps = self._scalar(built.qps, at)
            p95 = self._scalar(built.latency_p95_ms, at)
            if qps is None and p95 is None:
                return Observation(
                    error=f"no series for {namespace}/{name} ({runtime}) in Prometheus"
                )
            versions_qps = self._by_label(built.qps_by_version, LABEL_VERSION, at)
            versions_p95 = self._by_label(built.latency_p95_ms_by_version, LABEL_VERSION, at)
            pods = self._scalar(built.pods_reporting, at)
            age = self._scalar(built.newest_sample_age_s, at)
            recent = self._scalar(built.qps_recent, at)
            recent_qps = self._by_label(built.qps_by_version_recent, LABEL_VERSION, at)
            recent_p95 = self._by_label(built.latency_p95_ms_by_version_recent, LABEL_VERSION, at)
            arriving = self._scalar(built.qps_arriving, at) if built.qps_arriving else None
        except Exception as error:  # any failure means "no metrics", never a crash
            return Observation(error=_describe(error, self.settings.url))
        versions = _versions(versions_qps, versions_p95)
        return Observation(
            qps=qps,
            latency_p95_ms=p95,
            qps_recent=recent,
            qps_arriving=arriving,
            pods_reporting=int(pods or 0),
            newest_sample_age_s=age,
            versions=versions,
            versions_recent=_versions(recent_qps, recent_p95),
        )

    def _refresh_token(self) -> None:
        # Re-read on every read: projected service-account tokens rotate.
        if self.settings.bearer_token_file:
            with open(self.settings.bearer_token_file) as handle:
                token = handle.read().strip()
            self._client.headers = {"Authorization": f"Bearer {token}"}

    def _query(self, promql: str, at: str) -> list[dict[str, Any]]:
        return self._client.custom_query(promql, params={"time": at})

    def _scalar(self, promql: str, at: str) -> float | None:
        values = [_finite(sample["value"][1]) for sample in self._query(promql, at)]
        values = [v for v in values if v is not None]
        return values[0] if values else None

    def _by_label(self, promql: str, label: str, at: str) -> dict[int, float]:
        found: dict[int, float] = {}
        for sample in self._query(promql, at):
            raw = sample.get("metric", {}).get(label)
            value = _finite(sample["value"][1])
            if raw is None or value is None:
                continue
            try:
                found[int(raw)] = value
            except ValueError:
                continue  # a version label that is not a number is not one of our tiers
        return found


def _versions(qps: dict[int, float], p95: dict[int, float]) -> dict[int, VersionObservation]:
    return {
        version: VersionObservation(qps=qps.get(version), latency_p95_ms=p95.get(version))
        for version in sorted(set(qps) | set(p95))
    }


def _finite(raw: Any) -> float | None:
    value = float(raw)
    return value if math.isfinite(value) else None


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _describe(error: Exception, url: str) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    # Never echo credentials: describe the failure by type and URL only when it may carry them.
    if "Authorization" in text or "Bearer" in text:
        text = type(error).__name__
    return f"Prometheus at {url}: {text[:200]}"
