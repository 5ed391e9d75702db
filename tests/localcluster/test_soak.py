"""The soak's pure parts: its load schedule, its memory verdict and its Event counts."""

from __future__ import annotations

from typing import Any

import pytest

from kinfer_dev.localcluster.soak import (
    RSS_FLAT,
    SPIKE_SHARE,
    Memory,
    SoakResult,
    compare,
    count_events,
    load_at,
)


@pytest.mark.parametrize(
    ("elapsed", "qps"),
    [
        (0, 10.0),
        (SPIKE_SHARE * 100 - 0.1, 10.0),
        (SPIKE_SHARE * 100, 3.0),
        (99.9, 3.0),
        (100, 10.0),
    ],
)
def test_each_cycle_opens_with_its_spike(elapsed: float, qps: float) -> None:
    assert load_at(elapsed, 100, spike_qps=10.0, quiet_qps=3.0) == qps


def test_memory_is_compared_for_the_processes_sampled_both_times() -> None:
    found = compare({"operator": 100.0, "server a": 200.0}, {"operator": 105.0, "server b": 1.0})
    assert found == [Memory("operator", 100.0, 105.0)]
    assert found[0].flat and found[0].change == pytest.approx(0.05)


def test_the_verdict_needs_no_failure_and_flat_memory() -> None:
    grew = 100.0 * (1 + RSS_FLAT) + 1
    assert SoakResult(3, 2, memory=[Memory("operator", 100, 109)]).passed
    assert not SoakResult(3, 2, failed=1, memory=[Memory("operator", 100, 100)]).passed
    assert not SoakResult(3, 2, memory=[Memory("server a", 100, grew)]).passed
    assert not SoakResult(3, 2).passed  # nothing measured is no verdict
    lines = SoakResult(3, 2, sent=9, ok=9, memory=[Memory("server a", 100, grew)]).lines()
    assert "  server a: 100 MiB -> 111 MiB (+11.0%) GREW" in lines
    assert lines[-1] == "SOAK FAILED"


def event(uid: str, action: str, message: str, count: int = 1) -> dict[str, Any]:
    return {
        "involvedObject": {"uid": uid},
        "action": action,
        "reason": "X",
        "message": message,
        "count": count,
        "lastTimestamp": "2026-12-07T00:00:00Z",
    }


def test_events_are_counted_by_kind_and_repeats_for_this_object_only() -> None:
    events = [
        event("u1", "Scale", "scaled 1 -> 3: p95 over target", count=2),
        event("u1", "Scale", "scaled 3 -> 1: load fell"),
        event("u1", "SwitchTier", "tier fp32 -> int8: p95 over target", count=3),
        event("u0", "SwitchTier", "tier fp32 -> int8: an older object of the same name"),
    ]
    assert count_events(events, "u1") == (2, 1, 3)
