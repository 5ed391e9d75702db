"""Simulated load and latency for the metrics simulator (pure): load profiles and an M/M/1 pod.

A service's load is its annotation kinfer.dev/simulated-load, one of:

    idle                                 0 QPS (also: no annotation)
    steady:QPS                           QPS all the time
    square:LOW:HIGH:PERIOD_S[:PHASE_S]   LOW for the first half of each period, HIGH for the second
    sine:LOW:HIGH:PERIOD_S[:PHASE_S]     from LOW up to HIGH and back over each period

Periods are counted on the wall clock (Unix time + PHASE_S), so a profile gives the same load
whoever evaluates it and whenever the simulator restarts. The load is split evenly across the
service's Ready pods. Each pod serves like an M/M/1 queue with service rate `capacity_qps`
(annotation kinfer.dev/simulated-capacity-qps, default 100): at arrival rate lambda below
mu = capacity, a request's time in the pod is exponential with rate mu - lambda, so its p95 is
ln(20) / (mu - lambda); at or above capacity the pod serves mu requests per second and the
latency is capped at MAX_P95_S.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_CAPACITY_QPS = 100.0
# An overloaded pod's p95 (its queue would grow without bound): the largest latency bucket
# of kinfer's server is 10 s, so the cap stays measurable.
MAX_P95_S = 5.0
_LN20 = math.log(20.0)
SHAPES = ("idle", "steady", "square", "sine")


@dataclass(frozen=True)
class LoadProfile:
    """A service's offered load over time (QPS), parsed from its annotation."""

    shape: str = "idle"
    low_qps: float = 0.0
    high_qps: float = 0.0
    period_s: float = 0.0
    phase_s: float = 0.0

    def qps(self, now_s: float) -> float:
        """The offered load at Unix time now_s."""
        if self.shape == "idle":
            return 0.0
        if self.shape == "steady":
            return self.high_qps
        position = ((now_s + self.phase_s) % self.period_s) / self.period_s
        if self.shape == "square":
            return self.low_qps if position < 0.5 else self.high_qps
        swing = (1.0 - math.cos(2.0 * math.pi * position)) / 2.0
        return self.low_qps + (self.high_qps - self.low_qps) * swing

    def __str__(self) -> str:
        if self.shape == "idle":
            return "idle"
        if self.shape == "steady":
            return f"steady:{_number(self.high_qps)}"
        text = f"{self.shape}:{_number(self.low_qps)}:{_number(self.high_qps)}"
        text += f":{_number(self.period_s)}"
        return text + (f":{_number(self.phase_s)}" if self.phase_s else "")


IDLE = LoadProfile()


def parse_profile(text: str | None) -> LoadProfile:
    """A profile from its annotation (None or empty: idle); ValueError says what is valid."""
    if text is None or not text.strip():
        return IDLE
    shape, *raw = text.strip().split(":")
    if shape not in SHAPES:
        raise ValueError(_invalid(text, f"unknown shape {shape!r}"))
    try:
        numbers = [float(part) for part in raw]
    except ValueError:
        raise ValueError(_invalid(text, "numbers expected after the shape")) from None
    if any(not math.isfinite(n) or n < 0 for n in numbers):
        raise ValueError(_invalid(text, "numbers must be finite and >= 0"))
    if shape == "idle" and not numbers:
        return IDLE
    if shape == "steady" and len(numbers) == 1:
        return LoadProfile("steady", numbers[0], numbers[0])
    if shape in ("square", "sine") and len(numbers) in (3, 4):
        low, high, period_s, *phase = numbers
        if period_s <= 0:
            raise ValueError(_invalid(text, "the period must be > 0 seconds"))
        return LoadProfile(shape, low, high, period_s, phase[0] if phase else 0.0)
    raise ValueError(_invalid(text, f"wrong number of fields for {shape!r}"))


def parse_capacity(text: str | None) -> float:
    """A pod's capacity (QPS) from its annotation (None or empty: the default)."""
    if text is None or not text.strip():
        return DEFAULT_CAPACITY_QPS
    try:
        capacity = float(text)
    except ValueError:
        capacity = -1.0
    if not math.isfinite(capacity) or capacity <= 0:
        raise ValueError(f"simulated capacity {text!r}: expected a number of QPS > 0")
    return capacity


@dataclass(frozen=True)
class PodLoad:
    """What one pod sees at an instant: its offered load and how it serves it."""

    arrival_qps: float
    capacity_qps: float = DEFAULT_CAPACITY_QPS

    @property
    def served_qps(self) -> float:
        """Requests completed per second: at most the pod's capacity."""
        return min(self.arrival_qps, self.capacity_qps)

    @property
    def drain_rate(self) -> float:
        """mu - lambda (per second), floored so that p95 never exceeds MAX_P95_S."""
        return max(self.capacity_qps - self.arrival_qps, _LN20 / MAX_P95_S)

    @property
    def latency_p95_s(self) -> float:
        return _LN20 / self.drain_rate

    @property
    def latency_mean_s(self) -> float:
        return 1.0 / self.drain_rate

    def fraction_within(self, bound_s: float) -> float:
        """The share of requests answered within bound_s (the exponential's CDF)."""
        return 1.0 - math.exp(-self.drain_rate * bound_s)


def split_load(service_qps: float, ready_pods: int) -> float:
    """Each Ready pod's share of the service's load (evenly, as a Service spreads it)."""
    return service_qps / ready_pods if ready_pods > 0 else 0.0


def _number(value: float) -> str:
    return f"{value:g}"


def _invalid(text: str, why: str) -> str:
    return (
        f"simulated load {text!r}: {why}; valid: idle, steady:QPS,"
        " square:LOW:HIGH:PERIOD_S[:PHASE_S], sine:LOW:HIGH:PERIOD_S[:PHASE_S]"
    )
