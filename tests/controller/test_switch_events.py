"""A tier switch that no scaling decision made (a pin or an unpin of a service that does not
autoscale) posts its SwitchTier Event too, through run_period."""

from __future__ import annotations

from typing import Any

from kinfer.controller.control_loop import ACTION_SWITCH_TIER, LoopMemory, run_period
from tests.conftest import load_sample


class NoPods:
    def list(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return []

    peek_list = list

    def gpu_view(self) -> tuple[list, list]:
        return [], []


def _fixed(pinned: str | None, desired: str = "fp32") -> dict[str, Any]:
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


def switch_events(body: dict[str, Any], served: str | None) -> list[tuple[str, str]]:
    """The switch Events of a tick after one that served `served` (None: the first tick)."""
    names = ["fp32", "fp16", "int8"]
    memory = LoopMemory(served_tier=None if served is None else names.index(served))
    result = run_period(body, NoPods(), None, memory)
    return [(e.reason, e.message) for e in result.events if e.action == ACTION_SWITCH_TIER]


def test_pinning_a_service_without_autoscaling_posts_the_switch() -> None:
    assert switch_events(_fixed("int8"), served="fp32") == [
        ("TierPinned", "tier fp32 -> int8: tier pinned to int8")
    ]


def test_unpinning_it_posts_the_way_back() -> None:
    assert switch_events(_fixed(None), served="int8") == [
        ("TierRestored", "tier int8 -> fp32: tier unpinned")
    ]


def test_no_switch_no_event() -> None:
    assert switch_events(_fixed("int8"), served="int8") == []
    assert switch_events(_fixed(None), served="fp32") == []


def test_a_status_the_cache_has_not_caught_up_with_is_no_switch() -> None:
    # The cached status still says fp32 (this loop's write of int8 not seen yet): the loop
    # served int8 last, so nothing switched.
    assert switch_events(_fixed("int8", desired="fp32"), served="int8") == []
    # The first tick (after a restart) knows nothing served before it: no Event.
    assert switch_events(_fixed("int8", desired="fp32"), served=None) == []
