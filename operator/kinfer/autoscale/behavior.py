"""Stage 4, behavior: HPA v2's `behavior` on a recommendation history.

Stabilization windows (scale up to the lowest recommendation of the up window, down to the highest
of the down window), then per-period step limits, then min/max. Each limit that binds is a Step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kinfer.autoscale.reasons import Reason, Stage, Step


@dataclass(frozen=True)
class Behavior:
    """Up: at most max(up_max_step pods, up_max_step_percent %) per period. Down: at most
    down_max_step_percent % per period (at least one pod)."""

    min_replicas: int
    max_replicas: int
    up_window_s: float
    down_window_s: float
    up_max_step: int
    up_max_step_percent: float
    down_max_step_percent: float

    def clamp(self, replicas: int) -> int:
        return min(max(replicas, self.min_replicas), self.max_replicas)


def apply_behavior(
    behavior: Behavior,
    history: list[tuple[float, int]],
    current: int,
    recommended: int,
    now_s: float,
) -> tuple[int, list[Step]]:
    """The replicas after stabilization, step limits and min/max, and the steps that bound."""
    desired, steps = _stabilize(behavior, history, current, recommended, now_s)
    desired, limit = _limit(behavior, current, desired)
    bounded = behavior.clamp(desired)
    if limit is not None:
        steps.append(limit)
    if bounded < desired:
        steps.append(_step(Reason.TOO_MANY_REPLICAS, f"maxReplicas {bounded}", maxReplicas=bounded))
    elif bounded > desired:
        steps.append(_step(Reason.TOO_FEW_REPLICAS, f"minReplicas {bounded}", minReplicas=bounded))
    return bounded, steps


def _stabilize(
    behavior: Behavior,
    history: list[tuple[float, int]],
    current: int,
    recommended: int,
    now_s: float,
) -> tuple[int, list[Step]]:
    # Both windows include this period's recommendation (HPA keeps it in its history first).
    up_window = [n for t, n in history if t > now_s - behavior.up_window_s] + [recommended]
    down_window = [n for t, n in history if t > now_s - behavior.down_window_s] + [recommended]
    desired = min(max(current, min(up_window)), max(down_window))
    steps = []
    if recommended < current and desired > recommended:
        window = behavior.down_window_s
        steps.append(
            _step(Reason.SCALE_DOWN_STABILIZED, f"stabilized over {window:.0f} s", windowS=window)
        )
    elif recommended > current and desired < recommended:
        window = behavior.up_window_s
        steps.append(
            _step(Reason.SCALE_UP_STABILIZED, f"stabilized over {window:.0f} s", windowS=window)
        )
    return desired, steps


def _limit(behavior: Behavior, current: int, desired: int) -> tuple[int, Step | None]:
    up_limit = max(
        current + behavior.up_max_step,
        math.ceil(current * (1 + behavior.up_max_step_percent / 100)),
    )
    down_limit = current - max(1, math.floor(current * behavior.down_max_step_percent / 100))
    if desired > up_limit:
        step = up_limit - current
        return up_limit, _step(Reason.SCALE_UP_LIMITED, f"step limit +{step}", step=step)
    if desired < down_limit:
        step = current - down_limit
        return down_limit, _step(Reason.SCALE_DOWN_LIMITED, f"step limit -{step}", step=step)
    return desired, None


def _step(reason: Reason, message: str, **figures: float | int) -> Step:
    return Step(Stage.BEHAVIOR, reason, message, dict(figures))
