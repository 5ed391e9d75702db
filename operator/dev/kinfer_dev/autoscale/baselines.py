"""The autoscalers the simulator compares: kinfer (the operator's own policy code), HPA on QPS,
Knative's KPA and a perfect-foresight oracle, each as a simulator Controller."""

from __future__ import annotations

import math
from dataclasses import replace

from kinfer.autoscale.behavior import Behavior, apply_behavior
from kinfer.autoscale.policy import PolicyConfig, PolicyState, Replicas, decide
from kinfer_dev.autoscale.simulator import Command, Controller, ServiceModel, View

HPA_SYNC_PERIOD_S = 15
HPA_TOLERANCE = 0.1
HPA_SCALE_DOWN_STABILIZATION_S = 300
KPA_TICK_S = 2
KPA_STABLE_WINDOW_S = 60
KPA_PANIC_WINDOW_S = 6
KPA_PANIC_THRESHOLD = 2.0
KPA_MAX_SCALE_UP_RATE = 1000.0
KPA_MAX_SCALE_DOWN_RATE = 2.0


def kinfer(config: PolicyConfig, name: str = "kinfer") -> Controller:
    """kinfer's policy exactly as the operator runs it, reading the simulated Prometheus."""
    state = PolicyState()

    def step(view: View) -> Command:
        nonlocal state
        decision, state = decide(
            config,
            view.prometheus(),
            Replicas(current=view.replicas, ready=view.ready, max_additional=view.max_additional),
            state,
            float(view.t),
        )
        return Command(decision.desired_replicas, decision.tier_index, decision.message)

    return Controller(name=name, interval_s=int(config.scaling.period_s), step=step)


def hpa(min_replicas: int, max_replicas: int, target_qps_per_replica: float) -> Controller:
    """HPA v2 on an External/Object QPS metric (AverageValue) with its default behavior:
    15 s sync, 10 % tolerance, scale up max(4 pods, 100 %) per 15 s with no stabilization,
    scale down 100 % per 15 s after a 300 s stabilization window. Same Prometheus as kinfer."""
    behavior = Behavior(
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        up_window_s=0,
        down_window_s=HPA_SCALE_DOWN_STABILIZATION_S,
        up_max_step=4,
        up_max_step_percent=100,
        down_max_step_percent=100,
    )
    history: list[tuple[float, int]] = []

    def step(view: View) -> Command:
        current = view.replicas
        observation = view.prometheus()
        if observation.qps is None or observation.error is not None:
            return Command(current)
        ratio = observation.qps / (max(current, 1) * target_qps_per_replica)
        if abs(ratio - 1) <= HPA_TOLERANCE:
            recommended = current
        else:
            recommended = math.ceil(observation.qps / target_qps_per_replica - 1e-9)
        now = float(view.t)
        history[:] = [(t, n) for t, n in history if t > now - HPA_SCALE_DOWN_STABILIZATION_S]
        history.append((now, recommended))
        desired, _ = apply_behavior(behavior, history, current, recommended, now)
        return Command(desired)

    return Controller(name="hpa", interval_s=HPA_SYNC_PERIOD_S, step=step)


def kpa(
    min_replicas: int,
    max_replicas: int,
    target_qps_per_replica: float,
    scrape_interval_s: float,
    native_metrics: bool = False,
) -> Controller:
    """Knative's KPA in RPS mode: 2 s tick, request rate over a 60 s stable and a 6 s panic
    window, panic at 200 % of target on the Ready pods (then never scale down until a stable
    window passes without panic), scale-up/down rate limits 1000x / 2x.

    By default KPA reads the same Prometheus as kinfer and HPA; its 6 s panic window then becomes
    the shortest window that holds two scrapes. native_metrics=True gives it Knative's own
    pipeline instead: every pod's request count, every second.
    """
    panic_since: float | None = None
    max_panic_pods = 0
    panic_window_s = max(KPA_PANIC_WINDOW_S, 2 * scrape_interval_s)

    def rates(view: View) -> tuple[float | None, float | None]:
        if native_metrics:
            return view.pod_arrivals(KPA_STABLE_WINDOW_S), view.pod_arrivals(KPA_PANIC_WINDOW_S)
        return view.prometheus_rate(KPA_STABLE_WINDOW_S), view.prometheus_rate(panic_window_s)

    def step(view: View) -> Command:
        nonlocal panic_since, max_panic_pods
        ready = max(view.ready, 1)
        stable, panic = rates(view)
        if stable is None or panic is None:
            return Command(view.replicas)
        desired_stable = math.ceil(stable / target_qps_per_replica - 1e-9)
        desired_panic = math.ceil(panic / target_qps_per_replica - 1e-9)
        over = panic / target_qps_per_replica / ready >= KPA_PANIC_THRESHOLD
        now = float(view.t)
        if over:
            if panic_since is None:
                panic_since = now
        elif panic_since is not None and now - panic_since >= KPA_STABLE_WINDOW_S:
            panic_since = None
            max_panic_pods = 0
        if panic_since is not None:
            if over:
                panic_since = now
            max_panic_pods = max(max_panic_pods, desired_panic, view.replicas)
            desired = max_panic_pods
        else:
            desired = desired_stable
        desired = min(desired, math.ceil(KPA_MAX_SCALE_UP_RATE * ready))
        desired = max(desired, math.floor(ready / KPA_MAX_SCALE_DOWN_RATE))
        return Command(min(max(desired, min_replicas), max_replicas))

    name = "kpa-native" if native_metrics else "kpa"
    return Controller(name=name, interval_s=KPA_TICK_S, step=step)


def oracle(model: ServiceModel, min_replicas: int, max_replicas: int) -> Controller:
    """Perfect foresight and no cold start: every second, the fewest full-precision replicas that
    hold the SLO for the requests that arrive in that second."""
    capacity = model.capacity_at_slo(0)

    def step(view: View) -> Command:
        wanted = math.ceil(view.future_arrivals(view.t) / capacity - 1e-9)
        return Command(min(max(wanted, min_replicas), max_replicas))

    return Controller(name="oracle", interval_s=1, step=step, instant_start=True)


def without_tiers(config: PolicyConfig) -> PolicyConfig:
    precision = config.precision
    return replace(config, precision=replace(precision, tiers=precision.tiers[:1]))
