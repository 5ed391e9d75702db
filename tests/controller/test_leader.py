"""Leader election's pure parts: the Lease record, who may take it, when a leader must stop.

The elector against a real API server, and two real operators, are in
e2e/test_leader_election.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from kinfer.controller import leader
from kinfer.controller.leader import LeaseRecord

NOW = datetime(2026, 12, 6, 23, 30, 0, 123456, tzinfo=UTC)
HELD = LeaseRecord(holder="a_1", lease_duration_s=15, transitions=3)


def test_record_of_a_lease_object():
    lease = {
        "spec": {
            "holderIdentity": "pod-0_ab12",
            "leaseDurationSeconds": 15,
            "acquireTime": "2026-12-06T23:00:00.000000Z",
            "renewTime": "2026-12-06T23:01:00.000000Z",
            "leaseTransitions": 2,
        }
    }
    assert leader.record_of(lease) == LeaseRecord(
        "pod-0_ab12", 15, "2026-12-06T23:00:00.000000Z", "2026-12-06T23:01:00.000000Z", 2
    )
    assert leader.record_of(None) is None
    # A Lease created with an empty spec (kubectl create) is free.
    assert leader.record_of({"spec": {}}).holder == ""


@pytest.mark.parametrize(
    ("record", "observed_at_s", "now_s", "may"),
    [
        (None, 0.0, 0.0, True),  # no Lease: create it
        (LeaseRecord(holder=""), 100.0, 100.0, True),  # released
        (HELD, 100.0, 100.0, False),  # held, just seen
        (HELD, 100.0, 114.9, False),  # held, unchanged for less than its duration
        (HELD, 100.0, 115.0, True),  # unchanged for its whole duration: expired
    ],
)
def test_may_acquire_someone_elses_lease(record, observed_at_s, now_s, may):
    assert leader.may_acquire(record, "b_2", observed_at_s, now_s) is may


def test_the_holder_may_always_renew():
    assert leader.may_acquire(HELD, "a_1", 0.0, 1000.0)


def test_expiry_counts_from_when_the_record_last_changed_on_our_clock():
    # Unchanged: the first sighting stands; changed (a renew): it is seen now.
    assert leader.observed_since(HELD, 100.0, HELD, 110.0) == 100.0
    renewed = LeaseRecord("a_1", 15, None, "2026-12-06T23:01:02.000000Z", 3)
    assert leader.observed_since(HELD, 100.0, renewed, 110.0) == 110.0
    assert leader.observed_since(None, 0.0, HELD, 5.0) == 5.0


def test_taking_anothers_lease_counts_a_transition():
    taken = leader.next_record(HELD, "b_2", NOW, 15)
    assert taken == LeaseRecord(
        "b_2", 15, "2026-12-06T23:30:00.123456Z", "2026-12-06T23:30:00.123456Z", 4
    )


def test_renewing_keeps_acquire_time_and_transitions():
    mine = LeaseRecord("a_1", 15, "2026-12-06T23:00:00.000000Z", "x", 3)
    renewed = leader.next_record(mine, "a_1", NOW, 15)
    assert renewed.acquire_time == "2026-12-06T23:00:00.000000Z"
    assert renewed.transitions == 3
    assert renewed.renew_time == "2026-12-06T23:30:00.123456Z"


def test_the_first_holder_creates_the_lease_with_no_transition():
    assert leader.next_record(None, "a_1", NOW, 15).transitions == 0


def test_release_empties_the_holder_as_client_go_does():
    released = leader.released_record(HELD, NOW)
    assert released.holder == ""
    assert released.lease_duration_s == 1
    assert released.transitions == HELD.transitions
    assert leader.may_acquire(released, "b_2", 0.0, 0.0)


def test_a_leader_stops_at_the_renew_deadline():
    assert leader.still_leader(100.0, 109.9, 10.0)
    assert not leader.still_leader(100.0, 110.0, 10.0)


@pytest.mark.parametrize(
    ("lease", "renew", "retry"), [(15, 15, 2), (15, 10, 10), (15, 10, 0), (10, 15, 2)]
)
def test_timing_refuses_an_order_that_allows_two_leaders(lease, renew, retry):
    with pytest.raises(ValueError, match="retry period < renew deadline < lease duration"):
        leader.Timing(lease, renew, retry)


def test_default_namespace(tmp_path: Path):
    service_account = tmp_path / "namespace"
    assert leader.default_namespace({}, service_account) == "kinfer-system"
    assert leader.default_namespace({"POD_NAMESPACE": "ops"}, service_account) == "ops"
    service_account.write_text("platform\n")
    assert leader.default_namespace({"POD_NAMESPACE": "ops"}, service_account) == "platform"


def test_identity_is_the_pod_name_and_a_fresh_suffix():
    first, second = (
        leader.make_identity("kinfer-operator-7d9f"),
        leader.make_identity("kinfer-operator-7d9f"),
    )
    assert first.startswith("kinfer-operator-7d9f_") and first != second
