"""The operator's record of its own last write of each InferenceService (kube.OwnWrites)."""

from __future__ import annotations

from kinfer.controller.kube import OwnWrites

A = [{"type": "Ready", "status": "True"}]
B = [{"type": "Ready", "status": "False"}]


def written(version: str, conditions: list | None) -> dict:
    return {"metadata": {"resourceVersion": version}, "status": {"conditions": conditions}}


def test_a_read_stands_where_nothing_was_written():
    assert OwnWrites().newer("team-a", "mlp", "7", B) == ("7", B)


def test_a_write_newer_than_the_read_stands_until_a_read_as_new():
    writes = OwnWrites()
    writes.record("team-a", "mlp", written("10", A))
    assert writes.newer("team-a", "mlp", "9", B) == ("10", A), "the cache lags the write"
    assert writes.newer("team-a", "mlp", "9", B) == ("10", A), "still, on the next read"
    assert writes.newer("team-a", "other", "9", B) == ("9", B), "by object"
    assert writes.newer("team-a", "mlp", "12", B) == ("12", B), "the cache moved past it"
    assert writes.newer("team-a", "mlp", "9", B) == ("9", B), "and the record is gone"


def test_an_older_write_does_not_replace_a_newer_one_and_odd_versions_are_left_alone():
    writes = OwnWrites()
    writes.record("team-a", "mlp", written("10", A))
    writes.record("team-a", "mlp", written("8", B))  # answers may arrive out of order
    assert writes.newer("team-a", "mlp", "9", None) == ("10", A)
    writes.record("team-a", "mlp", {"metadata": {}})
    assert writes.newer("team-a", "mlp", "not-a-number", B) == ("not-a-number", B)
    assert writes.newer("team-a", "mlp", "10", B) == ("10", B)
