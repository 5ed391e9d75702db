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
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
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

# kinfer-ort-server's latency histogram buckets, in seconds
# (runtime_images/onnxruntime/kinfer_ort_server/metrics.py; a test keeps the two equal).
SERVER_LATENCY_BUCKETS_S = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
)
# status.slo's window, and how often one query refreshes every service's share.
SLO_WINDOW_S = 3600
SLO_REFRESH_S = 60


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
    """The PromQL of each signal, every one grouped by (namespace, inferenceservice): one answer
    holds every service the selector matches. Each value is an instant query."""

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

    def signals(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}


# The label that names each signal in the one answer of `batch_query`.
LABEL_SIGNAL = "kinfer_signal"
# Every series of every InferenceService (the scrape config and PodMonitor add the label).
ALL_SERVICES = f'{LABEL_INFERENCESERVICE}!=""'
GROUP = f"{LABEL_NAMESPACE}, {LABEL_INFERENCESERVICE}"

Key = tuple[str, str]


@dataclass(frozen=True)
class Wanted:
    """One InferenceService whose metrics a period needs."""

    namespace: str
    name: str
    runtime: str
    window_s: int = 60
    # The decision's period: every service of one (runtime, window, period) due in the same
    # period of the wall clock shares one answer (0: read afresh).
    period_s: int = 0

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    @property
    def query_key(self) -> tuple[str, int, int]:
        return (self.runtime, self.window_s, self.period_s)


def period_slot(t_s: float, period_s: int) -> int | None:
    """Which period of the wall clock `t_s` falls in (None: no period, no sharing)."""
    return math.floor(t_s / period_s) if period_s > 0 else None


@dataclass(frozen=True)
class Answer:
    """One query's answer, split by service, or why there is none; and the period it serves."""

    slot: int | None
    by_service: dict[Key, Figures] = field(default_factory=dict)
    error: str | None = None

    def observe(self, wanted: Wanted) -> Observation:
        if self.error is not None:
            return Observation(error=self.error)
        return observation(wanted, self.by_service.get(wanted.key))


def selector(namespace: str, name: str) -> str:
    return f'{LABEL_NAMESPACE}="{_escape(namespace)}",{LABEL_INFERENCESERVICE}="{_escape(name)}"'


def queries(
    runtime: str,
    window_s: int = 60,
    recent_window_s: int = 30,
    triton_p95_aggregation: str = "max",
    sel: str = ALL_SERVICES,
) -> Queries:
    """PromQL for QPS, p95 (ms), their per-version split, and the completeness facts, for every
    service that `sel` selects (default: all of them), grouped by service."""
    w, r = f"[{int(window_s)}s]", f"[{int(recent_window_s)}s]"
    if runtime == RUNTIME_ONNXRUNTIME:
        return _onnxruntime_queries(sel, w, r)
    if runtime == RUNTIME_TRITON:
        if triton_p95_aggregation not in TRITON_P95_AGGREGATIONS:
            raise ValueError(
                f"triton_p95_aggregation: {triton_p95_aggregation!r} must be one of"
                f" {', '.join(TRITON_P95_AGGREGATIONS)}"
            )
        return _triton_queries(sel, w, r, triton_p95_aggregation)
    raise ValueError(f"spec.runtime: {runtime!r} must be one of onnxruntime, triton")


def _onnxruntime_queries(sel: str, w: str, r: str) -> Queries:
    requests = f"kinfer_inference_requests_total{{{sel}}}"
    buckets = f"kinfer_inference_request_duration_seconds_bucket{{{sel}}}"

    def p95(by: str, window: str) -> str:
        return f"histogram_quantile(0.95, sum by ({by}) (rate({buckets}{window}))) * 1000"

    return Queries(
        qps=f"sum by ({GROUP}) (rate({requests}{w}))",
        qps_recent=f"sum by ({GROUP}) (rate({requests}{r}))",
        latency_p95_ms=p95(f"{GROUP}, le", w),
        qps_by_version=f"sum by ({GROUP}, {LABEL_VERSION}) (rate({requests}{w}))",
        latency_p95_ms_by_version=p95(f"{GROUP}, le, {LABEL_VERSION}", w),
        qps_by_version_recent=f"sum by ({GROUP}, {LABEL_VERSION}) (rate({requests}{r}))",
        latency_p95_ms_by_version_recent=p95(f"{GROUP}, le, {LABEL_VERSION}", r),
        pods_reporting=(
            f"count by ({GROUP}) (count by ({GROUP}, {LABEL_POD}) (rate({requests}{w})))"
        ),
        newest_sample_age_s=f"time() - max by ({GROUP}) (timestamp({requests}))",
        qps_arriving=f"sum by ({GROUP}) (kinfer_inference_arrival_rate{{{sel}}})",
    )


def _triton_queries(sel: str, w: str, r: str, aggregation: str) -> Queries:
    success = f"nv_inference_request_success{{{sel}}}"
    failure = f"nv_inference_request_failure{{{sel}}}"

    def requests(by: str, window: str) -> str:
        # Successes plus failures, each its own selector: one rate() over both names fails
        # where their label sets are equal ("vector cannot contain metrics with the same
        # labelset"); a service without failure series counts none.
        ok = f"sum by ({by}) (rate({success}{window}))"
        return f"({ok} + (sum by ({by}) (rate({failure}{window})) or 0 * {ok}))"

    # `>= 0` drops NaN: a pod's summary has no quantile while its window holds no request.
    p95 = f'(nv_inference_request_summary_us{{{sel},quantile="0.95"}} >= 0)'

    def p95_by(by: str, window: str = w) -> str:
        # The summary's quantile is over the pod's own sliding window whatever `window` is;
        # `window` only weights the pods' quantiles by their request rates (mean).
        if aggregation == "max":
            return f"max by ({by}) ({p95}) / 1000"
        on = f"{GROUP}, {LABEL_POD}, model, {LABEL_VERSION}"
        weighted = f"{p95} * on ({on}) rate({success}{window})"
        return (
            f"sum by ({by}) ({weighted}) / sum by ({by}) (rate({success}{window}) and on ({on})"
            f" {p95}) / 1000"
        )

    return Queries(
        qps=requests(GROUP, w),
        qps_recent=requests(GROUP, r),
        latency_p95_ms=p95_by(GROUP),
        qps_by_version=requests(f"{GROUP}, {LABEL_VERSION}", w),
        latency_p95_ms_by_version=p95_by(f"{GROUP}, {LABEL_VERSION}"),
        qps_by_version_recent=requests(f"{GROUP}, {LABEL_VERSION}", r),
        latency_p95_ms_by_version_recent=p95_by(f"{GROUP}, {LABEL_VERSION}", r),
        pods_reporting=(
            f"count by ({GROUP}) (count by ({GROUP}, {LABEL_POD}) (rate({success}{w})))"
        ),
        newest_sample_age_s=f"time() - max by ({GROUP}) (timestamp({success}))",
    )


def batch_query(built: Queries) -> str:
    """Every signal in one query: each tagged with its name in LABEL_SIGNAL, so that `or`
    keeps them all (their label sets differ) and the answer splits back by signal."""
    return " or ".join(
        f'label_replace({promql}, "{LABEL_SIGNAL}", "{name}", "{LABEL_NAMESPACE}", ".*")'
        for name, promql in built.signals().items()
    )


Figures = dict[str, Any]


def split(samples: list[dict[str, Any]]) -> dict[Key, Figures]:
    """An answer of `batch_query` by service: {signal: value}, or {signal: {version: value}}
    for the per-version signals. NaN and infinite values are left out."""
    found: dict[Key, Figures] = {}
    for sample in samples:
        metric = sample.get("metric") or {}
        key = (metric.get(LABEL_NAMESPACE), metric.get(LABEL_INFERENCESERVICE))
        signal, value = metric.get(LABEL_SIGNAL), _finite(sample["value"][1])
        if None in key or signal is None or value is None:
            continue
        figures = found.setdefault((str(key[0]), str(key[1])), {})
        if "by_version" not in signal:
            figures[signal] = value
            continue
        try:
            version = int(metric.get(LABEL_VERSION, ""))
        except ValueError:
            continue  # a version label that is not a number is not one of our tiers
        figures.setdefault(signal, {})[version] = value
    return found


def observation(wanted: Wanted, figures: Figures | None) -> Observation:
    """One service's Observation from its figures in the split answer."""
    figures = figures or {}
    qps, p95 = figures.get("qps"), figures.get("latency_p95_ms")
    if qps is None and p95 is None:
        return Observation(
            error=f"no series for {wanted.namespace}/{wanted.name} ({wanted.runtime}) in Prometheus"
        )
    return Observation(
        qps=qps,
        latency_p95_ms=p95,
        qps_recent=figures.get("qps_recent"),
        qps_arriving=figures.get("qps_arriving"),
        pods_reporting=int(figures.get("pods_reporting") or 0),
        newest_sample_age_s=figures.get("newest_sample_age_s"),
        versions=_versions(
            figures.get("qps_by_version", {}), figures.get("latency_p95_ms_by_version", {})
        ),
        versions_recent=_versions(
            figures.get("qps_by_version_recent", {}),
            figures.get("latency_p95_ms_by_version_recent", {}),
        ),
    )


class PrometheusReader:
    """Reads InferenceServices' metrics from Prometheus: one query per (runtime, window) for
    every service a period needs (`observe_all`), split by service.

    Synchronous (prometheus-api-client uses requests): the controller calls it in a thread, so a
    slow or dead Prometheus never blocks kopf's event loop. It never raises: a failed or empty
    read is an Observation whose `error` says why, and the policy then holds the replicas
    (fail-static).
    """

    def __init__(self, settings: PrometheusSettings, recent_window_s: int = 30) -> None:
        import requests
        from prometheus_api_client import PrometheusConnect
        from urllib3.util.retry import Retry

        self.settings = settings
        self.recent_window_s = recent_window_s
        # Queries sent, for the operator's own metrics and the fleet benchmark.
        self.queries_sent = 0
        # The last answer of each (runtime, window, period) key, shared within its period.
        self._answers: dict[tuple[str, int, int], Answer] = {}
        # status.slo's shares: one answer for every service per SLO_REFRESH_S, for the bucket
        # boundaries asked for so far.
        self._slo: SloAnswer | None = None
        self._slo_les: set[str] = set()
        # Single flight: the ticks run in many threads, and those that find a stale answer at
        # once must not each send its query (a herd at every boundary, or while Prometheus
        # waits out its timeout). The first reads; the others wait for its answer.
        self._answers_lock = threading.Lock()
        self._slo_lock = threading.Lock()
        self.clock = time.time
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

    def observe(self, namespace: str, name: str, runtime: str, window_s: int = 60) -> Observation:
        """One service alone (its own selector)."""
        wanted = Wanted(namespace, name, runtime, window_s)
        return self._read(wanted, selector(namespace, name)).observe(wanted)

    def observe_all(self, wanted: list[Wanted]) -> dict[Key, Observation]:
        """Every wanted service: one query per (runtime, window, period) per period of the wall
        clock. The query selects every InferenceService, so its answer also serves the services
        of that key that fall due later in the same period (a late tick, a new service)."""
        groups: dict[tuple[str, int, int], list[Wanted]] = {}
        for item in wanted:
            groups.setdefault(item.query_key, []).append(item)
        found: dict[Key, Observation] = {}
        for key, group in groups.items():
            with self._answers_lock:
                slot = period_slot(self.clock(), group[0].period_s)
                answer = self._answers.get(key)
                if answer is None or slot is None or answer.slot != slot:
                    answer = self._read(group[0], ALL_SERVICES, slot)
                    self._answers[key] = answer
            found.update((item.key, answer.observe(item)) for item in group)
        return found

    def within_target(self, namespace: str, name: str, le: str) -> float | None:
        """The share of one service's requests at or below `le` over SLO_WINDOW_S (None:
        no requests, or Prometheus unreachable). One query serves every service for
        SLO_REFRESH_S; a boundary not in the last answer is read at the next refresh slot."""
        with self._slo_lock:
            self._slo_les.add(le)
            slot = period_slot(self.clock(), SLO_REFRESH_S)
            answer = self._slo
            if answer is None or answer.slot != slot or slot is None:
                answer = self._slo = self._read_slo(slot)
        return within_share(answer.by_service.get((namespace, name), {}), le)

    def _read_slo(self, slot: int | None) -> SloAnswer:
        les = frozenset(self._slo_les)
        try:
            self._refresh_token()
            self.queries_sent += 1
            samples = self._client.custom_query(
                slo_query(set(les)), params={"time": f"{time.time():.3f}"}
            )
        except Exception:  # no share this slot; the next refresh tries again
            return SloAnswer(slot, les)
        return SloAnswer(slot, les, split_buckets(samples))

    def _read(self, first: Wanted, sel: str, slot: int | None = None) -> Answer:
        """One query for the services of one runtime and window that `sel` selects."""
        try:
            built = queries(
                first.runtime,
                first.window_s,
                self.recent_window_s,
                self.settings.triton_p95_aggregation,
                sel,
            )
        except ValueError as error:
            return Answer(slot, error=str(error))
        try:
            self._refresh_token()
            self.queries_sent += 1
            samples = self._client.custom_query(
                batch_query(built), params={"time": f"{time.time():.3f}"}
            )
        except Exception as error:  # any failure means "no metrics", never a crash
            return Answer(slot, error=_describe(error, self.settings.url))
        return Answer(slot, split(samples))

    def _refresh_token(self) -> None:
        # Re-read on every read: projected service-account tokens rotate.
        if self.settings.bearer_token_file:
            with open(self.settings.bearer_token_file) as handle:
                token = handle.read().strip()
            self._client.headers = {"Authorization": f"Bearer {token}"}


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


def format_bound(bound: float) -> str:
    """A bucket bound as the servers' `le` label writes it (prometheus_client: 0.5, 1.0)."""
    from prometheus_client.utils import floatToGoString

    return str(floatToGoString(bound))


def slo_bucket(target_ms: float) -> str:
    """The `le` SLO shares are counted at: the largest server bucket at or below the target
    (the smallest bucket when the target is below them all). Requests between it and the
    target count as over: the share is never overstated."""
    target_s = target_ms / 1000.0
    below = [b for b in SERVER_LATENCY_BUCKETS_S if b <= target_s + 1e-12]
    return format_bound(below[-1] if below else SERVER_LATENCY_BUCKETS_S[0])


def slo_query(les: set[str], window_s: int = SLO_WINDOW_S) -> str:
    """Requests in each wanted bucket and in all (+Inf) over the window, for every service."""
    pattern = "|".join(re.escape(le) for le in sorted(les | {"+Inf"}))
    buckets = (
        f"kinfer_inference_request_duration_seconds_bucket"
        f'{{{ALL_SERVICES},le=~"{_escape(pattern)}"}}'
    )
    return f"sum by ({GROUP}, le) (increase({buckets}[{int(window_s)}s]))"


def split_buckets(samples: list[dict[str, Any]]) -> dict[Key, dict[str, float]]:
    """{(namespace, inferenceservice): {le: requests}} from `slo_query`'s answer."""
    found: dict[Key, dict[str, float]] = {}
    for sample in samples:
        labels = sample.get("metric") or {}
        value = _finite((sample.get("value") or [0, "NaN"])[1])
        key = (labels.get(LABEL_NAMESPACE, ""), labels.get(LABEL_INFERENCESERVICE, ""))
        if value is not None and "le" in labels:
            found.setdefault(key, {})[labels["le"]] = value
    return found


def within_share(buckets: dict[str, float], le: str) -> float | None:
    """The share of requests at or below `le`; None without requests in the window, or when
    the answer has no such bucket (not read yet)."""
    total = buckets.get("+Inf") or 0.0
    if total <= 0 or le not in buckets:
        return None
    return min(max(buckets.get(le, 0.0) / total, 0.0), 1.0)


@dataclass
class SloAnswer:
    slot: int | None
    les: frozenset[str]
    by_service: dict[Key, dict[str, float]] = field(default_factory=dict)
