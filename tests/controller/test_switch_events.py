"""A tier switch that no scaling decision made (a pin or an unpin of a service that does not
autoscale) posts its SwitchTier Event too, through run_period."""

from __future__ import annotations

from typing import Any

from kinfer.controller.control_loop import ACTION_SWITCH_TIER, LoopMemory, run_period
from tests.conftest import load_sample


class NoPods:
    def list(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return []

    def gpu_view(self) -> tuple[list, list]:
        return [], []


def _fixed(pinned: str | None, desired: str) -> dict[str, Any]:
    body = load_sample("onnxruntime-cpu.yaml")
    body["metadata"].update(namespace="team-a", uid="u-pin", generation=2)
    uri = "https://models.example.com/mlp/{}/model.onnx"
    body["spec"]["model"].pop("storageUri", None)
    body["spec"]["precision"] = {
        "tiers": [{"name": t, "storageUri": uri.format(t)} for t in ("fp32", "fp16", "int8")],
        **({"pinned": pinned} if pinned else {}),
    }
    body["status"] = {"readyReplicas": 1, "activeTier": desired, "tiers": {"desired": desired}}
    return body


def switch_events(body: dict[str, Any]) -> list[tuple[str, str]]:
    result = run_period(body, NoPods(), None, LoopMemory())
    return [(e.reason, e.message) for e in result.events if e.action == ACTION_SWITCH_TIER]


def test_pinning_a_service_without_autoscaling_posts_the_switch() -> None:
    assert switch_events(_fixed("int8", "fp32")) == [
        ("TierPinned", "tier fp32 -> int8: tier pinned to int8")
    ]


def test_unpinning_it_posts_the_way_back() -> None:
    assert switch_events(_fixed(None, "int8")) == [
        ("TierRestored", "tier int8 -> fp32: tier unpinned")
    ]


def test_no_switch_no_event() -> None:
    assert switch_events(_fixed("int8", "int8")) == []
    assert switch_events(_fixed(None, "fp32")) == []
