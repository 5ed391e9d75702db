"""Stage 1, signal: which rate the recommenders plan on.

The window's rate (`Observation.qps`, over metricsWindowSeconds) is the default. One rule picks
another: the short rate (the last scrapes) when it rises beyond the tolerance, or when it falls
while a quick scale-down applies; the trend's projection when the window's rate ramps up.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from kinfer.autoscale.reasons import Reason, Stage, Step

# The projected QPS is capped at this multiple of the measured QPS: a trend is a hint, not a fact.
TREND_MAX_FACTOR = 3.0
# Reads whose newest samples are this close in time come from the same scrape.
SAME_SCRAPE_S = 1.0
# The trend is fitted on this many metrics windows of history: a ramp must rise for longer than
# one window (a step lifts the window's rate for exactly one window, then holds it).
TREND_HISTORY_WINDOWS = 2
# Every rise over a quarter window is at least this share of the mean one (noise lifts a flat
# stretch by a little; a ramp lifts every quarter by about the same).
TREND_MIN_STEP_SHARE = 0.25
# A slope must be this many standard errors above zero to count as a trend.
TREND_MIN_T_STATISTIC = 4.0

History = list[tuple[float, float]]


@dataclass(frozen=True)
class Trend:
    slope: float
    projected: float


def record(
    history: History, qps: float, now_s: float, sampled_s: float, partial: bool, window_s: float
) -> History:
    """The window's rate history with this read added: one point per scrape at the scrape's time
    (a period that reads the same scrape again replaces the point: a repeat is no rise), kept
    for TREND_HISTORY_WINDOWS windows. On partial metrics the sum lacks the pods with too few
    samples for a rate: a lower bound of the load, so a dip below the last point is left out."""
    kept = [(t, q) for t, q in history if t > now_s - TREND_HISTORY_WINDOWS * window_s]
    last = kept[-1] if kept else None
    if partial and last is not None and qps < last[1]:
        return kept
    if last is not None and sampled_s - last[0] < SAME_SCRAPE_S:
        return [*kept[:-1], (last[0], qps)]
    return [*kept, (sampled_s, qps)]


def trend(history: History, qps: float, window_s: float, lookahead_s: float) -> Trend | None:
    """The QPS projected lookahead_s ahead by a least-squares slope, on a ramp only: the rise spans
    more than a window, every quarter window adds a fair share of it, and the slope stands out
    of the residuals. Quarter windows rather than points: where pods are scraped at different
    offsets the points come closer together and each holds one pod's share of the rise."""
    if lookahead_s <= 0 or len(history) < 3:
        return None
    n = len(history)
    mean_t = sum(t for t, _ in history) / n
    mean_q = sum(q for _, q in history) / n
    var_t = sum((t - mean_t) ** 2 for t, _ in history)
    if var_t <= 0 or not _ramps(history, window_s):
        return None
    slope = sum((t - mean_t) * (q - mean_q) for t, q in history) / var_t
    residual = sum((q - mean_q - slope * (t - mean_t)) ** 2 for t, q in history)
    if n > 2 and residual > 0:
        standard_error = math.sqrt(residual / (n - 2) / var_t)
        if slope < TREND_MIN_T_STATISTIC * standard_error:
            return None
    return Trend(slope, min(qps + slope * lookahead_s, qps * TREND_MAX_FACTOR))


def _ramps(history: History, window_s: float) -> bool:
    spaced = [history[-1]]
    for point in reversed(history[:-1]):
        if spaced[-1][0] - point[0] >= window_s / 4:
            spaced.append(point)
    spaced.reverse()
    if len(spaced) < 3:
        return False
    steps = [later[1] - earlier[1] for earlier, later in itertools.pairwise(spaced)]
    mean_step = (spaced[-1][1] - spaced[0][1]) / len(steps)
    return (
        spaced[-1][0] - spaced[0][0] > window_s
        and mean_step > 0
        and min(steps) >= TREND_MIN_STEP_SHARE * mean_step
    )


def plan(
    qps: float | None,
    recent: float | None,
    tolerance: float,
    ramp: Trend | None,
    quick: bool,
    lookahead_s: float,
) -> tuple[float | None, Step | None]:
    """The rate to plan on and, when it is not the window's, the step that says why.

    The short window sees a step a whole window earlier than the window's rate, so a rise is
    trusted from it; a fall only while a quick scale-down applies (the window's rate still holds
    a burst a whole window after it ended). A trend's projection wins when it is higher.
    """
    if qps is None:
        return None, None
    rising = recent is not None and recent > qps * (1 + tolerance)
    planned, step = qps, None
    if rising:
        assert recent is not None
        planned, step = recent, _short(recent)
    if ramp is not None and ramp.projected > planned:
        figures = {"slope": ramp.slope, "planned": ramp.projected, "lookaheadS": lookahead_s}
        message = f"rising {ramp.slope:.1f}/s, {ramp.projected:.0f} in {lookahead_s:.0f} s"
        return ramp.projected, Step(Stage.SIGNAL, Reason.TREND_AHEAD, message, figures)
    if quick and not rising and ramp is None and recent is not None and recent < qps:
        planned, step = recent, _short(recent)
    return planned, step


def _short(recent: float) -> Step:
    return Step(
        Stage.SIGNAL,
        Reason.SHORT_RATE,
        f"{recent:.0f} over the last scrapes",
        {"planned": recent},
    )
