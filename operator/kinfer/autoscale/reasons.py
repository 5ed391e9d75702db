"""What each stage of the autoscaling decision found: a reason (an enum value), its figures and a
sentence. `Decision.trail` holds one `Step` per stage that had something to say; the deciding
step's reason becomes the `AutoscalingActive` condition's reason and the Event's reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

Figure = float | int | str | None


class Stage(StrEnum):
    """The pipeline's stages, in the order they run (docs/autoscaling.md, "Stages")."""

    SIGNAL = "signal"  # which rate to plan on
    RECOMMEND = "recommend"  # QPS, latency and overload recommenders
    GUARD = "guard"  # stale or partial metrics, tier margins
    BEHAVIOR = "behavior"  # window, stabilization, rate limits, min/max
    CAPACITY = "capacity"  # free GPU capacity caps a scale-up
    TIER = "tier"  # the precision tier, and a burst a lower tier absorbs


class Reason(StrEnum):
    """Condition and Event reasons (CamelCase, as Kubernetes reasons are)."""

    # No decision on these metrics: replicas held (fail-static).
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    NO_SIGNAL = "NoSignal"
    # signal
    SHORT_RATE = "ShortRate"
    TREND_AHEAD = "TrendAhead"
    # recommenders
    QPS_TARGET = "QPSTarget"
    LATENCY_TARGET = "LatencyTarget"
    STEP_UP_HEADROOM = "StepUpHeadroom"
    OVERLOAD_FLOOR = "OverloadFloor"
    # guards
    STALE_METRICS = "StaleMetrics"
    PARTIAL_METRICS = "PartialMetrics"
    TIER_MARGIN = "TierMargin"
    # behavior
    QUICK_SCALE_DOWN = "QuickScaleDown"
    SCALE_UP_STABILIZED = "ScaleUpStabilized"
    SCALE_DOWN_STABILIZED = "ScaleDownStabilized"
    SCALE_UP_LIMITED = "ScaleUpLimited"
    SCALE_DOWN_LIMITED = "ScaleDownLimited"
    TOO_MANY_REPLICAS = "TooManyReplicas"
    TOO_FEW_REPLICAS = "TooFewReplicas"
    # capacity
    CAPACITY_CAPPED = "CapacityCapped"
    # tier
    BURST_ABSORBED = "BurstAbsorbed"
    TIER_DEGRADED = "TierDegraded"
    TIER_RESTORED = "TierRestored"
    TIER_PINNED = "TierPinned"
    TIER_FLOOR = "TierFloor"
    TIER_HELD = "TierHeld"


@dataclass(frozen=True)
class Step:
    """One stage's finding. binding: it set or moved the outcome (a note otherwise)."""

    stage: Stage
    reason: Reason
    message: str
    figures: dict[str, Figure] = field(default_factory=dict)
    binding: bool = True


def deciding(trail: list[Step]) -> Step | None:
    """The step that decided the replicas: the last binding one after the recommenders, else the
    winning recommendation, or the signal it planned on when that was not the window's rate."""
    binding = [step for step in trail if step.binding]
    after = [step for step in binding if step.stage not in (Stage.SIGNAL, Stage.RECOMMEND)]
    if after:
        return after[-1]
    winner = next((step for step in binding if step.stage is Stage.RECOMMEND), None)
    signal = next((step for step in binding if step.stage is Stage.SIGNAL), None)
    if winner is not None and winner.reason is not Reason.OVERLOAD_FLOOR and signal is not None:
        return signal
    return winner or signal
