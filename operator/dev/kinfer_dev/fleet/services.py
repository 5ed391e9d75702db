"""The fleet `kinfer bench operator` applies (pure): N InferenceServices and nodes to hold them.

10 % (MOVING_SHARE, or the bench's --moving-share) carry a load that moves (a square wave
between MOVING_LOW_QPS and MOVING_HIGH_QPS, each service's phase shifted so that they do not
all step at once); of the rest, half are idle at zero replicas and half idle at one Ready
replica. Every one is onnxruntime with small resources, autoscaling on
TARGET_QPS_PER_REPLICA; the pods are simulated (the local cluster's --simulated-pods), each
serving up to the simulator's default capacity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from kinfer_dev.localcluster.config import ANNOTATION_SIMULATED_LOAD, NodeSpec

NAMESPACE = "kinfer-fleet"
BENCH_LABEL = "kinfer.dev/bench"
MOVING_SHARE = 0.10
TARGET_QPS_PER_REPLICA = 50
MAX_REPLICAS = 8
MOVING_LOW_QPS, MOVING_HIGH_QPS, MOVING_PERIOD_S = 20, 180, 120
# Never fetched: simulated pods run nothing (their init containers are KWOK's).
STORAGE_URI = "http://127.0.0.1:9/simulated/model.onnx"
# KWOK gives each node a /24 of pod IPs: stay well below its 254 addresses.
PODS_PER_NODE = 200


@dataclass(frozen=True)
class FleetMix:
    moving: int
    idle_at_zero: int
    idle_at_one: int

    @property
    def total(self) -> int:
        return self.moving + self.idle_at_zero + self.idle_at_one

    @property
    def max_pods(self) -> int:
        """Pods if every moving service scaled to its maximum at once."""
        return self.moving * MAX_REPLICAS + self.idle_at_one


def fleet_mix(services: int, moving_share: float = MOVING_SHARE) -> FleetMix:
    """How many services move, and how many idle at zero and at one replica. A share above
    zero moves at least one service; zero moves none (every service idle)."""
    if services < 1:
        raise ValueError(f"--services {services}: must be >= 1")
    if not 0.0 <= moving_share <= 1.0:
        raise ValueError(f"--moving-share {moving_share}: must be from 0 to 1")
    moving = max(1, round(services * moving_share)) if moving_share > 0 else 0
    idle = services - moving
    return FleetMix(moving, idle // 2, idle - idle // 2)


def moving_load(index: int, moving: int) -> str:
    """The kinfer.dev/simulated-load of the index-th moving service: phases spread evenly."""
    phase_s = round(MOVING_PERIOD_S * index / max(1, moving))
    return f"square:{MOVING_LOW_QPS}:{MOVING_HIGH_QPS}:{MOVING_PERIOD_S}:{phase_s}"


def inference_service(
    name: str, replicas: int, load: str, namespace: str = NAMESPACE
) -> dict[str, Any]:
    return {
        "apiVersion": "kinfer.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {BENCH_LABEL: "operator"},
            "annotations": {ANNOTATION_SIMULATED_LOAD: load},
        },
        "spec": {
            "runtime": "onnxruntime",
            "model": {"name": "mlp", "storageUri": STORAGE_URI},
            "resources": {"cpu": "10m", "memory": "32Mi"},
            "replicas": replicas,
            "scaling": {
                "minReplicas": replicas,
                "maxReplicas": MAX_REPLICAS,
                "targetQPSPerReplica": TARGET_QPS_PER_REPLICA,
            },
        },
    }


def fleet(
    services: int, namespace: str = NAMESPACE, moving_share: float = MOVING_SHARE
) -> list[dict[str, Any]]:
    """The N InferenceServices, moving ones first."""
    mix = fleet_mix(services, moving_share)
    items = [
        inference_service(f"moving-{i:04d}", 1, moving_load(i, mix.moving), namespace)
        for i in range(mix.moving)
    ]
    items += [
        inference_service(f"idle-zero-{i:04d}", 0, "idle", namespace)
        for i in range(mix.idle_at_zero)
    ]
    items += [
        inference_service(f"idle-one-{i:04d}", 1, "idle", namespace) for i in range(mix.idle_at_one)
    ]
    return items


def fleet_nodes(services: int, moving_share: float = MOVING_SHARE) -> tuple[NodeSpec, ...]:
    """CPU nodes enough for the fleet at its largest (plus one spare)."""
    count = math.ceil(fleet_mix(services, moving_share).max_pods / PODS_PER_NODE) + 1
    return tuple(
        NodeSpec(name=f"fleet-cpu-{i}", cpu="64", memory="256Gi", pods=PODS_PER_NODE)
        for i in range(count)
    )
