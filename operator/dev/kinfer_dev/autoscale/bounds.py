"""Lower bounds on the seconds over the SLO that any reactive policy pays in a spike, on the
simulator's own arrivals and metrics pipeline: what a goal can ask for at most.

A reactive policy learns of a spike from Prometheus, so it can act no earlier than the first
scrape that holds one of the spike's seconds. From then on it may switch the running pods to
the fastest tier (after the switch time) and new pods are Ready a cold start later; before
that it has the pods it entered the spike with. The bound counts the spike's seconds whose
arrivals that best case still cannot serve within the SLO. It is optimistic everywhere else:
no backlog carried between seconds, no detection beyond the first scrape, the switch and the
pods asked for at that very scrape, as many new pods as needed once they are Ready.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from kinfer_dev.autoscale.simulator import Run, ServiceModel, Trace, arrivals_for


@dataclass(frozen=True)
class SpikeBound:
    start_s: int
    end_s: int
    # The first scrape holding a second of the spike: nothing can react before it.
    first_scrape_s: int
    # Seconds over the SLO that no reactive policy avoids (a lower bound).
    violation_s: int


def spike_bound(
    model: ServiceModel,
    trace: Trace,
    start_s: int,
    end_s: int,
    replicas: int,
    fastest_tier: int = 0,
) -> SpikeBound:
    """The bound for the spike [start_s, end_s) entered with `replicas` Ready pods at the first
    tier; `fastest_tier`: the lowest tier the policy may switch to (0: no tiers)."""
    arrivals = arrivals_for(trace, model.seed, model.poisson_arrivals)
    scrapes = Run(model, trace, arrivals, replicas).scrapes
    first = _first_scrape_after(scrapes, start_s)
    switched_s = first + math.ceil(model.tier_switch_s) if fastest_tier > 0 else math.inf
    ready_s = first + math.ceil(model.cold_start_s)
    violated = 0
    for t in range(start_s, min(end_s, len(arrivals))):
        if t >= ready_s:
            break
        tier = fastest_tier if t >= switched_s else 0
        per_replica = arrivals[t] / max(replicas, 1)
        if model.p95_ms(per_replica, tier) > model.slo_ms:
            violated += 1
    return SpikeBound(start_s, end_s, first, violated)


@dataclass(frozen=True)
class Burst:
    start_s: int
    end_s: int
    peak_qps: float
    # Seconds since the previous burst ended (from the trace's start for the first).
    gap_s: int


def bursts(trace: Trace) -> list[Burst]:
    """Each maximal run of the trace above its first load."""
    base = trace.points[0][1]
    found: list[Burst] = []
    start: float | None = None
    peak = 0.0
    previous_end = 0
    points = [*trace.points, (float(trace.duration_s), base)]
    for t, qps in points:
        if qps > base and start is None:
            start, peak = t, qps
        elif qps > base:
            peak = max(peak, qps)
        elif start is not None:
            found.append(Burst(int(start), int(t), peak, int(start) - previous_end))
            previous_end, start = int(t), None
    return found


def hold_cost_bound(
    model: ServiceModel, trace: Trace, violation_budget_s: int, fastest_tier: int = 0
) -> tuple[int, int]:
    """(extra pod-seconds, bursts held): the least a reactive policy must add to the oracle's
    replica-seconds to keep the bursts' seconds over the SLO within violation_budget_s.

    Each burst is either met reactively, paying at least its spike_bound entered with the pods
    the base load needs, or held: the pods its peak needs kept through the gap before it, at
    least (peak pods - base pods) x gap pod-seconds over what the oracle runs. Optimistic: no
    pods held longer than the gap, none paid for while starting, no violation outside bursts.
    """
    base = trace.points[0][1]
    per_replica = model.capacity_at_slo(0)
    base_pods = math.ceil(base / per_replica - 1e-9)
    options = []
    for burst in bursts(trace):
        reactive = spike_bound(
            model, trace, burst.start_s, burst.end_s, base_pods, fastest_tier
        ).violation_s
        extra = math.ceil(burst.peak_qps / per_replica - 1e-9) - base_pods
        options.append((reactive, max(extra, 0) * burst.gap_s))
    # Few bursts per trace: every subset of held bursts is tried.
    best: tuple[int, int] | None = None
    for held in range(1 << len(options)):
        paid = sum(v for i, (v, _) in enumerate(options) if not held >> i & 1)
        if paid > violation_budget_s:
            continue
        cost = sum(h for i, (_, h) in enumerate(options) if held >> i & 1)
        count = bin(held).count("1")
        if best is None or cost < best[0]:
            best = (cost, count)
    assert best is not None  # holding every burst pays nothing
    return best


def scale_out_cost_bound(
    model: ServiceModel,
    trace: Trace,
    target_qps_per_replica: float,
    min_replicas: int = 1,
    hold_s: int = 0,
) -> int:
    """Replica-seconds, at least, of a policy that keeps the QPS target and meets every burst with
    new pods (degrade-then-scale: kinfer-tiers by default; kinfer without tiers and HPA too).

    Every second it runs the target's pods for the trace's load, ceil(qps / target). For each
    burst it runs the pods the peak needs at the target from the first scrape that holds one of
    the burst's seconds (nothing can ask earlier) to `hold_s` after the first scrape that holds a
    second after it (nothing can see the end earlier). Optimistic: the trace's load rather than
    its noisy arrivals, the ask exactly the peak at that very scrape, and the release at once
    (no scale-down window, no rate window's lag) with hold_s = 0. The oracle, by contrast, runs
    the pods that hold the SLO, ceil(arrivals / capacity at the SLO), and none in advance.
    """
    arrivals = arrivals_for(trace, model.seed, model.poisson_arrivals)
    seconds = len(arrivals)
    scrapes = Run(model, trace, arrivals, 1).scrapes

    def pods(qps: float) -> int:
        return max(math.ceil(qps / target_qps_per_replica - 1e-9), min_replicas)

    base = trace.points[0][1]
    running = [pods(min(trace.qps_at(t), base)) for t in range(seconds)]
    for burst in bursts(trace):
        asked_s = _first_scrape_after(scrapes, burst.start_s)
        released_s = _first_scrape_after(scrapes, burst.end_s) + hold_s
        peak = pods(burst.peak_qps)
        for t in range(min(asked_s, seconds), min(released_s, seconds)):
            running[t] = max(running[t], peak)
    return sum(running)


def _first_scrape_after(scrapes: list[int], t_s: int) -> int:
    """The first scrape that holds second t_s (a scrape at s holds the seconds before s)."""
    index = bisect.bisect_right(scrapes, t_s)
    return scrapes[index] if index < len(scrapes) else scrapes[-1] + 10**9
