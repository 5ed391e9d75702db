"""Energy per inference: GPU joules per request of each InferenceService and tier, from Prometheus.

One query (`energy_queries`, batched like metrics.py's) answers for every InferenceService:

- each pod's GPU energy over the window, from the first source it has: dcgm-exporter's
  DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION (mJ since boot: increase), else its
  DCGM_FI_DEV_POWER_USAGE (W: avg_over_time x window), else Triton's nv_energy_consumption
  (J since start: increase); a pod's GPUs are summed;
- the requests each pod served per tier over the same window (kinfer-ort-server's
  kinfer_inference_requests_total by `tier`; Triton's nv_inference_request_success by
  `version`, which carries no tier);
- a pod's energy attributed to its tiers by each tier's share of the pod's requests, summed
  over the service's pods (`joules`), and the requests of those pods (`inferences`).

`split_energy` divides the two: {(namespace, name): EnergyReading}, J per inference by tier. The
reader (`EnergyReader`) sends the query through the operator's PrometheusReader (its session,
credentials and query count), at most once per period for all services, and never raises.

dcgm-exporter labels each GPU's series with the `namespace`, `pod` and `container` holding it.
Scraped with honor_labels those are the series' labels; without it Prometheus renames them
`exported_namespace` and `exported_pod`: the query takes those where present, so both scrape
configs work.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

from kinfer.api.constants import ENERGY_SOURCE_DCGM, ENERGY_SOURCE_TRITON, ENERGY_SOURCES
from kinfer.autoscale.capacity_model import TierProfile
from kinfer.autoscale.metrics import (
    ALL_SERVICES,
    GROUP,
    LABEL_INFERENCESERVICE,
    LABEL_NAMESPACE,
    LABEL_POD,
    LABEL_SIGNAL,
    LABEL_VERSION,
    Key,
    PrometheusReader,
    _describe,
    batch_query,
    period_slot,
)

# The window joules and inferences are counted over (status.energy.windowSeconds).
DEFAULT_ENERGY_WINDOW_S = 300
# How often one query refreshes every service's figures: energy moves slowly.
DEFAULT_ENERGY_PERIOD_S = 60
LABEL_TIER = "tier"
LABEL_SOURCE = "source"
DCGM_ENERGY_MJ = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
DCGM_POWER_W = "DCGM_FI_DEV_POWER_USAGE"
TRITON_ENERGY_J = "nv_energy_consumption"
# Figures in status keep 4 significant digits: the noise of a 5-minute window is larger.
STATUS_DIGITS = 4
POD = f"{LABEL_NAMESPACE}, {LABEL_POD}"
BY_TIER = f"{GROUP}, {LABEL_TIER}, {LABEL_VERSION}, {LABEL_SOURCE}"
# The answer's two signals (LABEL_SIGNAL): joules attributed to a tier, and its inferences.
SIGNALS = ("joules", "inferences")


@dataclass(frozen=True)
class EnergyQueries:
    """The two signals of the energy query, each grouped by (namespace, inferenceservice,
    tier, version, source): the joules attributed to each tier, and the requests they served."""

    joules: str
    inferences: str

    def signals(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def energy_queries(
    window_s: int = DEFAULT_ENERGY_WINDOW_S, sel: str = ALL_SERVICES
) -> EnergyQueries:
    """PromQL for the joules and inferences of every service `sel` selects, over `window_s`."""
    if window_s <= 0:
        raise ValueError(f"energy window {window_s}: must be > 0 seconds")
    w = f"[{int(window_s)}s]"
    requests = pod_requests(sel, w)
    # J per request of each pod that served any (its energy over its requests), with its source.
    per_request = (
        f"({pod_energy_j(sel, int(window_s))}) / on ({POD}) group_left ()"
        f" (sum by ({POD}) ({requests}) > 0)"
    )
    # Each tier's requests on a pod times the pod's J per request: its share of the energy.
    attributed = f"{requests} * on ({POD}) group_left ({LABEL_SOURCE})"
    return EnergyQueries(
        joules=f"sum by ({BY_TIER}) ({attributed} {per_request})",
        inferences=f"sum by ({BY_TIER}) ({attributed} ({per_request} * 0 + 1))",
    )


def pod_requests(sel: str, w: str) -> str:
    """Requests each pod served over the window, by tier (kinfer-ort-server, every request) or
    version (Triton, its successful ones)."""
    kinfer = f"kinfer_inference_requests_total{{{sel}}}"
    # Successes only: with failures in one selector, increase() would give two series the same
    # labels once it drops their names (an error in PromQL).
    triton = f"nv_inference_request_success{{{sel}}}"
    return (
        f"(sum by ({GROUP}, {LABEL_POD}, {LABEL_TIER}, {LABEL_VERSION}) (increase({kinfer}{w}))"
        f" or sum by ({GROUP}, {LABEL_POD}, {LABEL_VERSION}) (increase({triton}{w})))"
    )


def workload_labels(promql: str) -> str:
    """dcgm-exporter's series with the GPU's pod in `namespace` and `pod`, whether it was scraped
    with honor_labels (already there) or without (`exported_namespace`, `exported_pod`)."""
    inner = f'label_replace({promql}, "{LABEL_NAMESPACE}", "$1", "exported_namespace", "(.+)")'
    return f'label_replace({inner}, "{LABEL_POD}", "$1", "exported_pod", "(.+)")'


def pod_energy_j(sel: str, window_s: int) -> str:
    """Each pod's GPU energy in joules over the window, labelled with its `source`: the energy
    counter, else the power gauge integrated, else Triton's counter (one per pod)."""
    w = f"[{window_s}s]"
    dcgm_energy = f"sum by ({POD}) ({workload_labels(f'increase({DCGM_ENERGY_MJ}{w})')}) / 1000"
    dcgm_power = (
        f"sum by ({POD}) ({workload_labels(f'avg_over_time({DCGM_POWER_W}{w})')}) * {window_s}"
    )
    triton = f"sum by ({POD}) (increase({TRITON_ENERGY_J}{{{sel}}}{w}))"
    return f" or on ({POD}) ".join(
        [
            _tagged(dcgm_energy, ENERGY_SOURCE_DCGM),
            _tagged(dcgm_power, ENERGY_SOURCE_DCGM),
            _tagged(triton, ENERGY_SOURCE_TRITON),
        ]
    )


def _tagged(promql: str, source: str) -> str:
    return f'label_replace({promql}, "{LABEL_SOURCE}", "{source}", "{LABEL_NAMESPACE}", ".*")'


def energy_query(window_s: int = DEFAULT_ENERGY_WINDOW_S) -> str:
    """The one query a period sends: both signals for every InferenceService."""
    return batch_query(energy_queries(window_s))


@dataclass(frozen=True)
class EnergyReading:
    """One service's energy over a window: J per inference by tier, and where it came from."""

    joules_per_inference: dict[str, float]
    source: str
    window_s: int
    # The requests each figure divides by (the pods that have an energy source).
    inferences: dict[str, float] = field(default_factory=dict)


def tier_key(labels: Mapping[str, str]) -> str | None:
    """A series' tier: its `tier` label (kinfer-ort-server), else its `version` (Triton; see
    `name_tiers`), else None."""
    return labels.get(LABEL_TIER) or labels.get(LABEL_VERSION) or None


def split_energy(
    samples: list[dict[str, Any]], window_s: int = DEFAULT_ENERGY_WINDOW_S
) -> dict[Key, EnergyReading]:
    """`energy_query`'s answer by service. A tier whose inferences are 0 or whose figure is
    NaN or infinite is left out, and so is a service with no tier left. A service whose pods
    have several sources gets one figure per tier over all of them; its `source` is the one
    that covered most of its inferences (dcgm on a tie)."""
    totals: dict[Key, dict[str, dict[str, dict[str, float]]]] = {}
    for sample in samples:
        labels = sample.get("metric") or {}
        key = (labels.get(LABEL_NAMESPACE), labels.get(LABEL_INFERENCESERVICE))
        signal, tier = labels.get(LABEL_SIGNAL), tier_key(labels)
        source, value = labels.get(LABEL_SOURCE), _finite(sample.get("value"))
        if None in key or tier is None or source not in ENERGY_SOURCES or value is None:
            continue
        if signal not in SIGNALS:
            continue
        by_source = totals.setdefault((str(key[0]), str(key[1])), {}).setdefault(tier, {})
        by_source.setdefault(str(source), {})[str(signal)] = value
    found = {}
    for key, tiers in totals.items():
        reading = _reading(tiers, window_s)
        if reading is not None:
            found[key] = reading
    return found


def joules_per_inference(
    samples: list[dict[str, Any]], window_s: int = DEFAULT_ENERGY_WINDOW_S
) -> dict[Key, dict[str, float]]:
    """{(namespace, name): {tier: joules per inference}} from `energy_query`'s answer."""
    return {key: r.joules_per_inference for key, r in split_energy(samples, window_s).items()}


def _reading(tiers: dict[str, dict[str, dict[str, float]]], window_s: int) -> EnergyReading | None:
    per_tier, inferences = {}, {}
    by_source: dict[str, float] = {}
    for tier, sources in tiers.items():
        # A source counts for a tier only with both of its figures.
        pairs = {s: (f["joules"], f["inferences"]) for s, f in sources.items() if len(f) == 2}
        joules = sum(j for j, _ in pairs.values())
        served = sum(n for _, n in pairs.values())
        figure = joules / served if served > 0 else math.nan
        if not math.isfinite(figure) or figure < 0:
            continue
        per_tier[tier], inferences[tier] = figure, served
        for source, (_, n) in pairs.items():
            by_source[source] = by_source.get(source, 0.0) + n
    if not per_tier:
        return None
    source = max(ENERGY_SOURCES, key=lambda s: (by_source.get(s, -1.0), s == ENERGY_SOURCE_DCGM))
    return EnergyReading(dict(sorted(per_tier.items())), source, window_s, inferences)


def name_tiers(per_tier: Mapping[str, float], tier_names: Sequence[str]) -> dict[str, float]:
    """Triton's figures, keyed by model version ("1", "2", ...), under the tier names of
    spec.precision.tiers (version N is the N-th tier); other keys are kept as they are."""
    named = {}
    for key, value in per_tier.items():
        if key.isdigit() and 0 < int(key) <= len(tier_names):
            key = tier_names[int(key) - 1]
        named[key] = value
    return named


# -- status ---------------------------------------------------------------------------------
def energy_status(
    per_tier: Mapping[str, float], window_s: int, source: str, now: datetime
) -> dict[str, Any]:
    """status.energy: {"joulesPerInference": {tier: J}, "windowSeconds", "source",
    "observedAt" (RFC 3339, UTC)}; figures to STATUS_DIGITS significant digits."""
    if source not in ENERGY_SOURCES:
        raise ValueError(f"energy source {source!r}: must be one of {', '.join(ENERGY_SOURCES)}")
    return {
        "joulesPerInference": {tier: _rounded(j) for tier, j in sorted(per_tier.items())},
        "windowSeconds": int(window_s),
        "source": source,
        "observedAt": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def with_joules_per_inference(profile: TierProfile, joules: float | None) -> TierProfile:
    """One tier's profile with its J per inference (None clears it)."""
    value = None if joules is None or not math.isfinite(joules) else _rounded(joules)
    return replace(profile, joules_per_inference=value)


def fold_energy(
    profiles: Mapping[str, TierProfile], per_tier: Mapping[str, float]
) -> dict[str, TierProfile]:
    """The tier profiles with each measured tier's J per inference folded in (a tier without a
    profile gets one); tiers not in `per_tier` keep the figure they had."""
    folded = dict(profiles)
    for tier, joules in per_tier.items():
        folded[tier] = with_joules_per_inference(folded.get(tier, TierProfile()), joules)
    return folded


def _rounded(value: float) -> float:
    return float(f"{value:.{STATUS_DIGITS}g}")


def _finite(value: Any) -> float | None:
    try:
        number = float(value[1])
    except (TypeError, ValueError, IndexError):
        return None
    return number if math.isfinite(number) else None


# -- the reader -----------------------------------------------------------------------------
@dataclass(frozen=True)
class EnergyAnswer:
    """One energy query's answer by service, or why there is none; and the period it serves."""

    slot: int | None
    by_service: dict[Key, EnergyReading] = field(default_factory=dict)
    error: str | None = None


class EnergyReader:
    """Every InferenceService's energy per inference, one query per period of the wall clock.

    Sends through `prometheus` (the operator's PrometheusReader: its session, credentials and
    `queries_sent`). Synchronous like it: call it from a thread. It never raises: with
    Prometheus unreachable, or no energy series, services have no reading and `error` (of the
    last answer) says why; a failed read is kept for its period, as the metrics reader does.
    """

    def __init__(
        self,
        prometheus: PrometheusReader,
        window_s: int = DEFAULT_ENERGY_WINDOW_S,
        period_s: int = DEFAULT_ENERGY_PERIOD_S,
    ) -> None:
        self.prometheus = prometheus
        self.window_s = window_s
        self.period_s = period_s
        self.query = energy_query(window_s)
        self.clock = time.time
        self._answer: EnergyAnswer | None = None
        self._lock = threading.Lock()

    @property
    def error(self) -> str | None:
        return self._answer.error if self._answer is not None else None

    def read_all(self) -> dict[Key, EnergyReading]:
        """Every service that has a reading (a service absent: no energy source, or no read)."""
        with self._lock:  # single flight, as the metrics reader's answers
            slot = period_slot(self.clock(), self.period_s)
            answer = self._answer
            if answer is None or slot is None or answer.slot != slot:
                answer = self._answer = self._read(slot)
        return answer.by_service

    def read(self, namespace: str, name: str) -> EnergyReading | None:
        return self.read_all().get((namespace, name))

    def _read(self, slot: int | None) -> EnergyAnswer:
        reader = self.prometheus
        try:
            # The metrics reader's own steps (a rotated token, the count, one instant query).
            reader._refresh_token()
            reader.queries_sent += 1
            samples = reader._client.custom_query(self.query, params={"time": f"{time.time():.3f}"})
            return EnergyAnswer(slot, split_energy(list(samples), self.window_s))
        except Exception as error:  # any failure means "no energy", never a crash
            return EnergyAnswer(slot, error=_describe(error, reader.settings.url))
