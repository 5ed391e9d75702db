"""The pod runner prepares a pod as a kubelet's pod sync does: a failed init container is held,
any other failure (the API server away) is tried again until the pod stops."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from kinfer_dev.localcluster.runner import InitContainerFailed, PodRunner, PodServer


class Waits(threading.Event):
    """A stop event whose waits return at once (recorded), until `stop_after` of them."""

    def __init__(self, stop_after: int = 100) -> None:
        super().__init__()
        self.waited: list[float] = []
        self.stop_after = stop_after

    def wait(self, timeout: float | None = None) -> bool:
        self.waited.append(float(timeout or 0))
        if len(self.waited) >= self.stop_after:
            self.set()
        return self.is_set()


def runner(failures: list[Exception]) -> tuple[PodRunner, list[tuple[str, Any]]]:
    calls: list[tuple[str, Any]] = []
    pod_runner = PodRunner.__new__(PodRunner)

    def prepare(server: PodServer, pod: dict[str, Any]) -> None:
        calls.append(("prepare", None))
        if failures:
            raise failures.pop(0)

    pod_runner._prepare = prepare  # type: ignore[method-assign]
    pod_runner._event = lambda pod, kind, reason, message: calls.append(("event", reason))  # type: ignore[method-assign]
    pod_runner._report = lambda server, ready: calls.append(("report", ready))  # type: ignore[method-assign]
    pod_runner._hold_init_failure = lambda server, error: calls.append(("hold", error.container))  # type: ignore[method-assign]
    return pod_runner, calls


def server(stopping: Waits) -> PodServer:
    return PodServer(plan=SimpleNamespace(key="team-a/mlp-0"), stopping=stopping)  # type: ignore[arg-type]


def test_a_failure_that_is_not_the_init_containers_is_tried_again_with_backoff() -> None:
    refused = ConnectionRefusedError("[Errno 111] Connection refused")
    pod_runner, calls = runner([refused, refused, refused])
    stopping = Waits()
    assert pod_runner._prepared(server(stopping), {})
    assert [c for c in calls if c[0] == "prepare"] == [("prepare", None)] * 4
    assert [c for c in calls if c[0] == "event"] == [("event", "FetchFailed")] * 3
    assert stopping.waited == [1.0, 2.0, 4.0]


def test_a_failed_init_container_is_held_not_retried() -> None:
    pod_runner, calls = runner([InitContainerFailed("fetch-fp32", 1, "no such file")])
    stopping = Waits()
    assert not pod_runner._prepared(server(stopping), {})
    assert calls == [
        ("prepare", None),
        ("event", "FetchFailed"),
        ("report", False),
        ("hold", "fetch-fp32"),
    ]
    assert stopping.waited == []


def test_a_pod_that_stops_while_failing_is_not_started() -> None:
    refused = ConnectionRefusedError("[Errno 111] Connection refused")
    pod_runner, calls = runner([refused] * 10)
    assert not pod_runner._prepared(server(Waits(stop_after=2)), {})
    assert [c for c in calls if c[0] == "prepare"] == [("prepare", None)] * 2
