"""What a tick did is told in its Events even when its status write fails."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from kinfer.controller.handlers import _write
from kinfer.controller.reconcile import Event, Outcome


class ConflictingKube:
    """Every status write conflicts (as past the retries, under a storm of other writes)."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def patch_isvc_status(self, *args: Any, **kwargs: Any) -> None:
        raise ApiException(status=409, reason="Conflict")

    def post_event(self, body: dict, type_: str, reason: str, message: str, action=None) -> None:
        self.events.append(reason)


def test_the_events_are_posted_and_the_status_error_still_raised() -> None:
    kube = ConflictingKube()
    body = {"metadata": {"namespace": "team-a", "name": "mlp"}}
    outcome = Outcome(
        status_patch={"replicas": 3},
        events=[
            Event("Normal", "LatencyTarget", "scaled 1 -> 3"),
            Event("Normal", "TierDegraded", "x"),
        ],
    )
    with pytest.raises(ApiException):
        _write(kube, body, outcome)  # type: ignore[arg-type]
    assert kube.events == ["LatencyTarget", "TierDegraded"]
