"""Trace-driven autoscaling simulator (pure, deterministic under a seed): a fluid queueing model of
replicas behind a metrics pipeline, driving any autoscaler one simulated second at a time.

The model, per second t:
- arrivals a(t) ~ Poisson(offered QPS of the trace at t), drawn once per seed, so every policy
  sees the very same requests;
- Ready replicas serve up to `capacity_qps_per_replica` x the active tier's speedup each; the rest
  waits in a backlog; what would wait longer than `max_queue_s` is rejected (counted, SLO missed);
- p95 latency: each replica is an M/M/1 queue, p95 = ln(20) / (mu - x) for a per-replica load x
  below 98 % of mu; above it (or with a backlog) the saturated p95 plus the backlog's wait;
- a new replica is Ready `cold_start_s` after it is asked for; a removed replica goes at once
  (Pending, then starting ones first); a tier switch takes effect `tier_switch_s` after it is
  asked for; with `max_pods` the cluster places no more pods than that (the rest stay Pending,
  hold no GPU and count in no replica-second).

Metrics pipeline (the same for kinfer and HPA, which read Prometheus): the server's counters are
scraped every `scrape_interval_s` (phase drawn from the seed), and a read at time t sees
rate(...[rate_window_s]) over the scrapes in (t - window, t]: the QPS is the handled requests
between the first and the last scrape in the window over their distance, the p95 is the
request-weighted 95th percentile of the per-second p95s between them (what histogram_quantile
over rate(_bucket) reports, up to bucket resolution). KPA reads its pods every second, as
Knative's autoscaler does; the oracle reads the future.
"""

from __future__ import annotations

import bisect
import csv
import itertools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kinfer.autoscale.observation import Observation, VersionObservation

LN20 = math.log(20.0)
# Above this utilisation a replica is treated as saturated (its M/M/1 p95 would be unbounded).
SATURATION = 0.98
# A change of the replica count undone (down then up, or up then down) within this long is a
# reversal; it is a flap when the offered load moved by no more than FLAP_LOAD_CHANGE over the
# reversal and this long before it (the rate window a policy reads): nothing the load did
# explains it. A burst that starts just after a release is a reversal, not a flap.
REVERSAL_WINDOW_S = 60
FLAP_LOAD_CHANGE = 0.1


@dataclass(frozen=True)
class Trace:
    """Offered load: (t_s, qps) rows, each holding until the next; the last holds as long as the
    segment before it (a one-row trace: 600 s)."""

    name: str
    points: tuple[tuple[float, float], ...]

    @property
    def duration_s(self) -> int:
        if len(self.points) == 1:
            return int(self.points[0][0]) + 600
        last, before = self.points[-1][0], self.points[-2][0]
        return math.ceil(last + (last - before))

    def qps_at(self, t_s: float) -> float:
        times = [t for t, _ in self.points]
        index = bisect.bisect_right(times, t_s) - 1
        return self.points[max(index, 0)][1]


def load_trace(path: str | Path) -> Trace:
    """Read a `t_s,qps` CSV; errors name the file, the row and what is valid."""
    path = Path(path)
    points: list[tuple[float, float]] = []
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != ["t_s", "qps"]:
            raise ValueError(f"{path}: header {header!r} must be exactly 't_s,qps'")
        for line, row in enumerate(reader, start=2):
            if not row or not "".join(row).strip():
                continue
            try:
                t_s, qps = float(row[0]), float(row[1])
            except (ValueError, IndexError):
                raise ValueError(f"{path}:{line}: {row!r} must be two numbers: t_s,qps") from None
            if qps < 0 or t_s < 0:
                raise ValueError(f"{path}:{line}: t_s={t_s}, qps={qps} must both be >= 0")
            if points and t_s <= points[-1][0]:
                raise ValueError(
                    f"{path}:{line}: t_s={t_s} must be greater than the row before"
                    f" ({points[-1][0]})"
                )
            points.append((t_s, qps))
    if not points:
        raise ValueError(f"{path}: no rows after the header; need at least one 't_s,qps' row")
    if points[0][0] != 0:
        points.insert(0, (0.0, 0.0))
    return Trace(name=path.stem, points=tuple(points))


@dataclass(frozen=True)
class ServiceModel:
    """The simulated service and its metrics pipeline."""

    capacity_qps_per_replica: float = 100.0
    slo_ms: float = 100.0
    cold_start_s: float = 30.0
    scrape_interval_s: float = 15.0
    rate_window_s: float = 60.0
    # The short window of Observation.qps_recent (two scrapes).
    recent_window_s: float = 30.0
    # Window of the server's arrival-rate gauge (kinfer_inference_arrival_rate: the requests
    # received over the second before a scrape), as read at the last scrape. 0: a server
    # without one (Triton).
    arrival_gauge_s: int = 1
    # Capacity multiplier of each tier (index 0: the first, full-precision tier).
    tier_speedups: tuple[float, ...] = (1.0,)
    tier_switch_s: float = 1.0
    # Requests that would wait longer are shed (rejected, counted, SLO missed): an online client
    # gives up after a couple of seconds, and a deeper queue only delays recovery.
    max_queue_s: float = 2.0
    # Pods the cluster can place (its GPUs); beyond it pods stay Pending. None: no limit.
    max_pods: int | None = None
    seed: int = 0
    # False: exactly the trace's QPS arrives every second (for analytic checks).
    poisson_arrivals: bool = True

    def p95_ms(self, per_replica_qps: float, tier: int, backlog_wait_s: float = 0.0) -> float:
        mu = self.capacity_qps_per_replica * self.tier_speedups[tier]
        if backlog_wait_s <= 0 and per_replica_qps < SATURATION * mu:
            return LN20 / (mu - per_replica_qps) * 1000.0
        return LN20 / (mu * (1 - SATURATION)) * 1000.0 + backlog_wait_s * 1000.0

    def capacity_at_slo(self, tier: int = 0) -> float:
        """Per-replica QPS at which p95 equals the SLO (the oracle's sizing)."""
        mu = self.capacity_qps_per_replica * self.tier_speedups[tier]
        return max(mu - LN20 * 1000.0 / self.slo_ms, 0.0)


@dataclass
class Command:
    """What a controller asks for: replicas, and optionally a tier."""

    replicas: int
    tier: int | None = None
    reason: str = ""


class View:
    """What a controller may see at time t: the metrics pipeline and the replica counts."""

    def __init__(self, sim: Run, t: int) -> None:
        self._sim = sim
        self.t = t

    @property
    def replicas(self) -> int:
        """spec.replicas: placed pods and Pending ones."""
        return len(self._sim.pods) + self._sim.pending

    @property
    def max_additional(self) -> int | None:
        """How many more pods the cluster can place (None: no limit)."""
        if self._sim.model.max_pods is None:
            return None
        return max(self._sim.model.max_pods - len(self._sim.pods) - self._sim.pending, 0)

    @property
    def ready(self) -> int:
        return self._sim.ready_count(self.t)

    @property
    def tier(self) -> int:
        return self._sim.tier

    def prometheus(self) -> Observation:
        return self._sim.prometheus_observation(self.t)

    def prometheus_rate(self, window_s: float) -> float | None:
        """rate(requests_total[window_s]) now, through the same scrapes as prometheus()."""
        return self._sim.rate(self.t, window_s)

    def pod_arrivals(self, window_s: int) -> float:
        """Mean arrivals per second over the last window_s seconds, as pods count them."""
        return self._sim.mean_arrivals(self.t, window_s)

    def future_arrivals(self, t: int) -> float:
        return self._sim.arrivals[t] if t < len(self._sim.arrivals) else 0.0


@dataclass
class Controller:
    """An autoscaler in the simulator: called every interval_s with a View."""

    name: str
    interval_s: int
    step: Callable[[View], Command]
    # The oracle's pods are Ready at once; everyone else waits the cold start.
    instant_start: bool = False
    phase_s: int = 0


@dataclass
class Result:
    policy: str
    trace: str
    seconds: int
    offered_qps: list[float] = field(default_factory=list)
    replicas: list[int] = field(default_factory=list)
    ready: list[int] = field(default_factory=list)
    tier: list[int] = field(default_factory=list)
    p95_ms: list[float] = field(default_factory=list)
    violated: list[bool] = field(default_factory=list)
    arrived: float = 0.0
    served: float = 0.0
    rejected: float = 0.0
    backlog_end: float = 0.0
    scale_events: int = 0
    tier_switches: int = 0
    reasons: list[tuple[int, str]] = field(default_factory=list)

    @property
    def slo_violation_fraction(self) -> float:
        return sum(self.violated) / max(self.seconds, 1)

    @property
    def replica_seconds(self) -> int:
        return sum(self.replicas)

    def reversals(self) -> list[tuple[int, int]]:
        """(first, second) times of replica changes in opposite directions within
        REVERSAL_WINDOW_S of each other (consecutive changes only)."""
        changes = [
            (t, self.replicas[t] > self.replicas[t - 1])
            for t in range(1, len(self.replicas))
            if self.replicas[t] != self.replicas[t - 1]
        ]
        return [
            (first, second)
            for (first, up_first), (second, up_second) in itertools.pairwise(changes)
            if up_first != up_second and second - first <= REVERSAL_WINDOW_S
        ]

    def flaps(self) -> list[tuple[int, int]]:
        """The reversals the offered load does not explain (see FLAP_LOAD_CHANGE)."""
        found = []
        for first, second in self.reversals():
            load = self.offered_qps[max(first - REVERSAL_WINDOW_S, 0) : second + 1]
            if max(load) <= min(load) * (1 + FLAP_LOAD_CHANGE):
                found.append((first, second))
        return found

    def summary(self) -> dict[str, float | int]:
        return {
            "slo_violation_fraction": round(self.slo_violation_fraction, 4),
            "replica_seconds": self.replica_seconds,
            "scale_events": self.scale_events,
            "tier_switches": self.tier_switches,
            "rejected_requests": round(self.rejected),
            "lower_tier_fraction": round(
                sum(1 for tier in self.tier if tier > 0) / max(len(self.tier), 1), 4
            ),
            "reversals": len(self.reversals()),
            "flaps": len(self.flaps()),
        }


def arrivals_for(trace: Trace, seed: int, poisson: bool = True) -> list[float]:
    """Poisson arrivals per second of the trace, the same for every policy under one seed."""
    if not poisson:
        return [trace.qps_at(t) for t in range(trace.duration_s)]
    rng = random.Random(seed)
    return [float(_poisson(rng, trace.qps_at(t))) for t in range(trace.duration_s)]


class Run:
    """One controller on one trace; use `simulate`."""

    def __init__(
        self,
        model: ServiceModel,
        trace: Trace,
        arrivals: Sequence[float],
        initial_replicas: int,
        initial_tier: int = 0,
    ) -> None:
        self.model = model
        self.trace = trace
        self.arrivals = list(arrivals)
        seconds = len(self.arrivals)
        # Pods as the second each becomes Ready; the initial ones are Ready from the start.
        self.pods: list[int] = [-1] * initial_replicas
        # Pods asked for that the cluster cannot place (no free GPU): Pending, never Ready.
        self.pending = 0
        self.tier = initial_tier
        self.pending_tier: tuple[int, int] | None = None
        self.backlog = 0.0
        # Per second: handled requests (served + rejected), served, p95, tier.
        self.handled = [0.0] * seconds
        self.served_at = [0.0] * seconds
        self.p95_at = [0.0] * seconds
        self.tier_at = [0] * seconds
        self.cum_arrivals = [0.0]
        for a in self.arrivals:
            self.cum_arrivals.append(self.cum_arrivals[-1] + a)
        phase = random.Random(model.seed + 1).randrange(int(model.scrape_interval_s))
        interval = int(model.scrape_interval_s)
        self.scrapes = list(range(phase, seconds + 1, interval))
        self.rejected_at = 0.0

    def ready_count(self, t: int) -> int:
        return sum(1 for ready_at in self.pods if ready_at <= t)

    def mean_arrivals(self, t: int, window_s: int) -> float:
        """Mean arrivals over (t - window_s, t]; before t=0 the trace's first load held steady."""
        start = t - window_s
        before = max(-start, 0) * self.trace.qps_at(0)
        start = max(start, 0)
        return (self.cum_arrivals[t] - self.cum_arrivals[start] + before) / window_s

    def serve(self, t: int) -> None:
        model = self.model
        if self.pending_tier is not None and self.pending_tier[1] <= t:
            self.tier = self.pending_tier[0]
            self.pending_tier = None
        ready = self.ready_count(t)
        mu = model.capacity_qps_per_replica * model.tier_speedups[self.tier]
        capacity = ready * mu
        arrived = self.arrivals[t]
        work = self.backlog + arrived
        served = min(work, capacity)
        backlog = work - served
        limit = capacity * model.max_queue_s
        rejected = max(backlog - limit, 0.0)
        backlog -= rejected
        if ready == 0:
            p95 = model.max_queue_s * 1000.0
        else:
            wait = backlog / capacity if backlog > 1e-9 else 0.0
            p95 = model.p95_ms(arrived / ready, self.tier, wait)
        self.backlog = backlog
        self.handled[t] = served + rejected
        self.served_at[t] = served
        self.p95_at[t] = p95
        self.tier_at[t] = self.tier
        self.rejected_at = rejected

    def rate(self, t: int, window_s: float) -> float | None:
        """rate(requests_total[window_s]) at time t, from the scrapes in (t - window_s, t]."""
        lo = bisect.bisect_right(self.scrapes, t - window_s)
        hi = bisect.bisect_right(self.scrapes, t)
        if hi - lo < 2:
            return None
        first, last = self.scrapes[lo], self.scrapes[hi - 1]
        return sum(self.handled[first:last]) / (last - first)

    def prometheus_observation(self, t: int) -> Observation:
        """What rate(...[window]) and histogram_quantile(...) return at time t."""
        window = self.model.rate_window_s
        lo = bisect.bisect_right(self.scrapes, t - window)
        hi = bisect.bisect_right(self.scrapes, t)
        in_window = self.scrapes[lo:hi]
        if len(in_window) < 2:
            return Observation(error="fewer than two samples in the rate window")
        first, last = in_window[0], in_window[-1]
        seconds = range(first, last)
        span = last - first
        handled = sum(self.handled[s] for s in seconds)
        samples = [(self.p95_at[s], self.served_at[s]) for s in seconds]
        if handled <= 0:
            return Observation(error="no requests in the rate window")
        return Observation(
            qps=handled / span,
            qps_recent=self.rate(t, self.model.recent_window_s),
            qps_arriving=(
                self.mean_arrivals(last, self.model.arrival_gauge_s)
                if self.model.arrival_gauge_s > 0
                else None
            ),
            latency_p95_ms=_weighted_p95(samples),
            pods_reporting=self.ready_count(last),
            newest_sample_age_s=float(t - last),
            versions=self._versions(first, last),
            versions_recent=self._versions(
                *self._span(t, self.model.recent_window_s) or (last, last)
            ),
        )

    def _span(self, t: int, window_s: float) -> tuple[int, int] | None:
        """The first and last scrape in (t - window_s, t], or None with fewer than two."""
        lo = bisect.bisect_right(self.scrapes, t - window_s)
        hi = bisect.bisect_right(self.scrapes, t)
        if hi - lo < 2:
            return None
        return self.scrapes[lo], self.scrapes[hi - 1]

    def _versions(self, first: int, last: int) -> dict[int, VersionObservation]:
        """Per tier (as model version tier + 1): QPS and p95 between two scrapes."""
        by_tier: dict[int, list[tuple[float, float]]] = {}
        handled_by_tier: dict[int, float] = {}
        for s in range(first, last):
            tier = self.tier_at[s]
            by_tier.setdefault(tier, []).append((self.p95_at[s], self.served_at[s]))
            handled_by_tier[tier] = handled_by_tier.get(tier, 0.0) + self.handled[s]
        return {
            tier + 1: VersionObservation(
                qps=handled_by_tier[tier] / (last - first), latency_p95_ms=_weighted_p95(rows)
            )
            for tier, rows in by_tier.items()
        }

    def apply(self, t: int, command: Command, instant: bool) -> tuple[bool, bool]:
        scaled = tiered = False
        desired = max(command.replicas, 0)
        total = len(self.pods) + self.pending
        if desired > total:
            self.pending += desired - total
            scaled = True
        elif desired < total:
            # Pending pods go first, then starting ones (latest Ready time first), as a
            # ReplicaSet deletes them.
            drop_pending = min(self.pending, total - desired)
            self.pending -= drop_pending
            self.pods.sort()
            del self.pods[desired - self.pending :]
            scaled = True
        # Pending pods are placed while the cluster has room; each then starts from now.
        room = self.pending
        if self.model.max_pods is not None:
            room = min(room, max(self.model.max_pods - len(self.pods), 0))
        if room > 0:
            ready_at = t if instant else t + int(self.model.cold_start_s)
            self.pods.extend([ready_at] * room)
            self.pending -= room
        if command.tier is not None:
            target = self.pending_tier[0] if self.pending_tier else self.tier
            if command.tier != target:
                self.pending_tier = (command.tier, t + int(self.model.tier_switch_s))
                tiered = True
        return scaled, tiered


def simulate(
    model: ServiceModel,
    trace: Trace,
    controller: Controller,
    arrivals: Sequence[float] | None = None,
    initial_replicas: int | None = None,
) -> Result:
    """Run one controller over the trace; deterministic for a given model.seed."""
    if arrivals is None:
        arrivals = arrivals_for(trace, model.seed, model.poisson_arrivals)
    if initial_replicas is None:
        initial_replicas = max(
            1, math.ceil(trace.qps_at(0) / max(model.capacity_at_slo(0), 1e-9) - 1e-9)
        )
    run = Run(model, trace, arrivals, initial_replicas)
    result = Result(policy=controller.name, trace=trace.name, seconds=len(arrivals))
    for t in range(len(arrivals)):
        if t >= controller.phase_s and (t - controller.phase_s) % controller.interval_s == 0:
            command = controller.step(View(run, t))
            scaled, tiered = run.apply(t, command, controller.instant_start)
            result.scale_events += scaled
            result.tier_switches += tiered
            if command.reason and (scaled or tiered):
                result.reasons.append((t, command.reason))
        run.serve(t)
        result.offered_qps.append(trace.qps_at(t))
        result.replicas.append(len(run.pods))
        result.ready.append(run.ready_count(t))
        result.tier.append(run.tier)
        result.p95_ms.append(run.p95_at[t])
        result.violated.append(run.p95_at[t] > model.slo_ms or run.rejected_at > 0)
        result.arrived += arrivals[t]
        result.rejected += run.rejected_at
    result.served = sum(run.served_at)
    result.backlog_end = run.backlog
    return result


def _weighted_p95(samples: list[tuple[float, float]]) -> float | None:
    """Request-weighted 95th percentile of per-second p95 values."""
    total = sum(weight for _, weight in samples)
    if total <= 0:
        return None
    needed = 0.95 * total
    running = 0.0
    for value, weight in sorted(samples):
        running += weight
        if running >= needed:
            return value
    return max(value for value, _ in samples)


def _poisson(rng: random.Random, mean: float) -> int:
    """Poisson sample: Knuth's method for small means, a rounded normal for large ones."""
    if mean <= 0:
        return 0
    if mean > 50:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1
