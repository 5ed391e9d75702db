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

from kinfer.autoscale.simulator import Run, ServiceModel, Trace, arrivals_for


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
    # A scrape at s holds the seconds before s, so the first one after start_s sees the spike.
    first = scrapes[bisect.bisect_right(scrapes, start_s)]
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
