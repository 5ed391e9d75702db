"""SLO accounting for status.slo: scale-outs, tier switches and time on a lower tier over the
last window, kept in the operator's memory (a restarted operator starts counting afresh), plus
the share of requests within the latency target that Prometheus counts."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from kinfer.autoscale.metrics import SLO_WINDOW_S


@dataclass
class SloLedger:
    """One InferenceService's events over the last `window_s` (times in seconds, any clock)."""

    window_s: float = SLO_WINDOW_S
    scale_outs: deque[float] = field(default_factory=deque)
    tier_switches: deque[float] = field(default_factory=deque)
    # Closed stretches on a lower tier, (start, end), and the open one's start.
    lower: deque[tuple[float, float]] = field(default_factory=deque)
    lower_since: float | None = None

    def observe(
        self, now: float, *, scaled_out: bool, tier_switched: bool, on_lower_tier: bool
    ) -> None:
        """What one tick saw."""
        if scaled_out:
            self.scale_outs.append(now)
        if tier_switched:
            self.tier_switches.append(now)
        if on_lower_tier and self.lower_since is None:
            self.lower_since = now
        elif not on_lower_tier and self.lower_since is not None:
            self.lower.append((self.lower_since, now))
            self.lower_since = None
        self._forget(now)

    def lower_tier_seconds(self, now: float) -> float:
        start = now - self.window_s
        stretches = [*self.lower]
        if self.lower_since is not None:
            stretches.append((self.lower_since, now))
        return sum(max(end - max(begin, start), 0.0) for begin, end in stretches)

    def summary(self, now: float, within_target: float | None, observed_at: str) -> dict[str, Any]:
        """status.slo (withinTarget None: unknown, which a merge patch removes)."""
        self._forget(now)
        return {
            "windowSeconds": int(self.window_s),
            "withinTarget": None if within_target is None else round(within_target, 4),
            "lowerTierSeconds": round(self.lower_tier_seconds(now), 1),
            "scaleOuts": len(self.scale_outs),
            "tierSwitches": len(self.tier_switches),
            "observedAt": observed_at,
        }

    def _forget(self, now: float) -> None:
        start = now - self.window_s
        for times in (self.scale_outs, self.tier_switches):
            while times and times[0] < start:
                times.popleft()
        while self.lower and self.lower[0][1] < start:
            self.lower.popleft()
