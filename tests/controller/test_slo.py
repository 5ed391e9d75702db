"""status.slo: the ledger over its window, and the tick that feeds it (pure)."""

from __future__ import annotations

from typing import Any

from kinfer.api.model import parse
from kinfer.autoscale.observation import Observation
from kinfer.controller.control_loop import LoopMemory, PeriodResult, account, run_period
from kinfer.controller.slo import SloLedger
from tests.conftest import load_sample


def test_events_and_lower_tier_time_count_over_the_window_only():
    ledger = SloLedger(window_s=100)
    ledger.observe(0, scaled_out=True, tier_switched=True, on_lower_tier=True)
    ledger.observe(30, scaled_out=False, tier_switched=True, on_lower_tier=False)
    ledger.observe(50, scaled_out=True, tier_switched=False, on_lower_tier=True)
    summary = ledger.summary(80, 0.9, "t")
    assert summary == {
        "windowSeconds": 100,
        "withinTarget": 0.9,
        "lowerTierSeconds": 60.0,  # 0-30, then 50-80 (still open)
        "scaleOuts": 2,
        "tierSwitches": 2,
        "observedAt": "t",
    }
    later = ledger.summary(140, None, "t2")
    # The window is 40-140: the first stretch (0-30) and the events at 0 and 30 are gone.
    assert later["scaleOuts"] == 1 and later["tierSwitches"] == 0
    assert later["lowerTierSeconds"] == 90.0
    assert later["withinTarget"] is None


def test_a_stretch_that_began_before_the_window_counts_from_its_start():
    ledger = SloLedger(window_s=100)
    ledger.observe(0, scaled_out=False, tier_switched=False, on_lower_tier=True)
    ledger.observe(150, scaled_out=False, tier_switched=False, on_lower_tier=False)
    assert ledger.lower_tier_seconds(200) == 50.0  # 100-150


def _tiered() -> dict[str, Any]:
    body = load_sample("onnxruntime-cpu.yaml")
    body["metadata"].update(namespace="team-a", uid="u-slo", generation=1)
    uri = "https://models.example.com/mlp/{}/model.onnx"
    body["spec"]["model"].pop("storageUri", None)
    body["spec"]["precision"] = {
        "tiers": [{"name": t, "storageUri": uri.format(t)} for t in ("fp32", "int8")]
    }
    body["spec"]["scaling"] = {"targetLatencyP95Ms": 100, "minReplicas": 1, "maxReplicas": 4}
    body["spec"]["replicas"] = 1
    body["status"] = {"readyReplicas": 1, "activeTier": "fp32"}
    return body


def test_a_tier_switch_and_a_scale_out_are_counted_and_ride_on_the_status_write():
    body = _tiered()
    isvc = parse(body)
    memory = LoopMemory()
    shares: list[str] = []

    class Reader:
        def within_target(self, namespace: str, name: str, le: str) -> float:
            shares.append(le)
            return 0.875

    result = PeriodResult(status_patch={"activeTier": "int8"}, replicas=3)
    account(body, isvc, result, memory, Reader(), 1000.0)
    assert result.tier_switch == ("fp32", "int8")
    slo = result.status_patch["slo"]
    assert (slo["scaleOuts"], slo["tierSwitches"], slo["withinTarget"]) == (1, 1, 0.875)
    assert shares == ["0.1"], "counted at the bucket of the 100 ms target"
    body["status"]["activeTier"] = "int8"
    quiet = PeriodResult()
    account(body, isvc, quiet, memory, Reader(), 1030.0)
    assert quiet.status_patch == {}, "no write of its own"
    assert quiet.tier_switch is None
    back = PeriodResult(status_patch={"activeTier": "fp32"})
    account(body, isvc, back, memory, Reader(), 1045.0)
    assert back.status_patch["slo"]["lowerTierSeconds"] == 45.0
    assert back.status_patch["slo"]["tierSwitches"] == 2


def test_without_a_reader_that_counts_shares_the_share_is_unknown():
    body = _tiered()

    class Reader:
        def observe(self, namespace: str, name: str, runtime: str, window_s: int = 60):
            return Observation(qps=0.0, pods_reporting=1)

    class NoPods:
        def list(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
            return []

        peek_list = list

        def gpu_view(self) -> tuple[list, list]:
            return [], []

    result = run_period(body, NoPods(), Reader(), LoopMemory())
    assert result.status_patch["slo"]["withinTarget"] is None
    assert result.status_patch["slo"]["scaleOuts"] == 0


def test_a_gpu_services_energy_rides_on_the_status_write_and_folds_into_its_tier_profiles():
    from kinfer.autoscale.energy import EnergyReading
    from kinfer.autoscale.policy import PolicyState
    from kinfer.controller.control_loop import add_energy

    body = _tiered()
    body["spec"]["resources"] = {"gpus": 1, "cpu": "1", "memory": "1Gi"}
    isvc = parse(body)
    asked: list[tuple[str, str]] = []

    class Energy:
        def read(self, namespace: str, name: str) -> EnergyReading:
            asked.append((namespace, name))
            # Triton-style version keys are named after the spec's tiers.
            return EnergyReading({"1": 0.5, "int8": 0.2}, "dcgm", 300)

    memory = LoopMemory(state=PolicyState())
    result = PeriodResult(status_patch={"activeTier": "int8", "autoscaling": {"state": {}}})
    add_energy(isvc, result, memory, Energy())
    profiles = result.status_patch["autoscaling"]["state"]["tierProfiles"]
    assert profiles["int8"]["joulesPerInference"] == 0.2, "in this write's tier profiles"
    assert asked == [("team-a", isvc.name)]
    assert memory.energy == {"fp32": 0.5, "int8": 0.2}
    energy = result.status_patch["energy"]
    assert energy["joulesPerInference"] == {"fp32": 0.5, "int8": 0.2}
    assert (energy["windowSeconds"], energy["source"]) == (300, "dcgm")
    assert memory.state.tier_profiles["int8"].joules_per_inference == 0.2
    quiet = PeriodResult()
    add_energy(isvc, quiet, memory, Energy())
    assert quiet.status_patch == {}, "no write of its own"


def test_a_cpu_service_reads_no_energy():
    body = _tiered()
    memory = LoopMemory()

    class Energy:
        def read(self, namespace: str, name: str):
            raise AssertionError("a CPU service must not ask")

    from kinfer.controller.control_loop import add_energy

    result = PeriodResult(status_patch={"activeTier": "int8"})
    add_energy(parse(body), result, memory, Energy())
    assert "energy" not in result.status_patch and memory.energy == {}
