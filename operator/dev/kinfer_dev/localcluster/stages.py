"""KWOK Stages of the local cluster: the shipped kwok-stages.yaml, or its simulated-pods variant.

The shipped Stages hold kinfer's pods Running-not-Ready until the pod runner reports their
model server ready (kinfer-pod-started, kinfer-pod-sync). With simulated pods nothing runs in
them: the variant drops those two Stages and lets kinfer's pods take KWOK's general path
(pod-ready: Running and Ready about 100 ms after their init containers), like any other pod.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from kinfer_dev.localcluster.podplan import LABEL_ISVC

# The Stages that make kinfer's pods wait for the pod runner.
RUNNER_STAGES = ("kinfer-pod-started", "kinfer-pod-sync")
# KWOK's general Stage that makes a pod Running and Ready.
POD_READY_STAGE = "pod-ready"
_ISVC_LABEL_KEY = f'.metadata.labels["{LABEL_ISVC}"]'


def shipped_path() -> Path:
    return Path(str(resources.files("kinfer_dev.localcluster") / "kwok-stages.yaml"))


def simulated_stages(shipped: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Stages with kinfer's pods on KWOK's general path: the runner's Stages dropped, and
    pod-ready no longer excluding pods labelled kinfer.dev/inferenceservice."""
    names = {stage["metadata"]["name"] for stage in shipped}
    missing = {POD_READY_STAGE, *RUNNER_STAGES} - names
    if missing:
        raise ValueError(f"KWOK stages: expected Stages {sorted(missing)}, found {sorted(names)}")
    variant = []
    for stage in shipped:
        name = stage["metadata"]["name"]
        if name in RUNNER_STAGES:
            continue
        if name == POD_READY_STAGE:
            stage = _without_isvc_exclusion(stage)
        variant.append(stage)
    return variant


def _without_isvc_exclusion(stage: dict[str, Any]) -> dict[str, Any]:
    selector = stage["spec"]["selector"]
    kept = [e for e in selector["matchExpressions"] if e.get("key") != _ISVC_LABEL_KEY]
    return {
        **stage,
        "spec": {**stage["spec"], "selector": {**selector, "matchExpressions": kept}},
    }


def write_stages(path: Path, simulated_pods: bool) -> None:
    """The cluster's Stages file: the shipped one, or (simulated pods) its variant."""
    text = shipped_path().read_text()
    if simulated_pods:
        stages = simulated_stages(list(yaml.safe_load_all(text)))
        text = yaml.safe_dump_all(stages, sort_keys=False)
    path.write_text(text)
