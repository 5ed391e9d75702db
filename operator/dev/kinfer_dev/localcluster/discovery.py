"""Prometheus pod discovery for the local cluster: kubernetes_sd (role pod) labels, via file_sd.

Debian's `prometheus` package is built without the Kubernetes service
discovery (its config loader rejects `kubernetes_sd_configs`). So the pod
runner, which lists the pods from the API server anyway, writes the targets
that kubernetes_sd_configs role `pod` would produce, with the same
`__meta_kubernetes_*` labels, to a file_sd file. The shipped scrape config's
relabel_configs then apply unchanged (pure functions here).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

META = "__meta_kubernetes_"
# Where, under the cluster's state dir, the runner writes and Prometheus reads.
TARGETS_FILE = Path("prometheus-sd") / "pods.json"


def sanitize(name: str) -> str:
    """Prometheus's label-name sanitising: every invalid character becomes `_`."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _pod_labels(pod: dict[str, Any]) -> dict[str, str]:
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    labels = {
        f"{META}namespace": meta["namespace"],
        f"{META}pod_name": meta["name"],
        f"{META}pod_ip": status.get("podIP", ""),
        f"{META}pod_uid": meta.get("uid", ""),
        f"{META}pod_node_name": spec.get("nodeName", ""),
        f"{META}pod_host_ip": status.get("hostIP", ""),
        f"{META}pod_phase": status.get("phase", ""),
        f"{META}pod_ready": "unknown",
    }
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            labels[f"{META}pod_ready"] = str(condition.get("status", "unknown")).lower()
    for owner in meta.get("ownerReferences") or []:
        if owner.get("controller"):
            labels[f"{META}pod_controller_kind"] = owner["kind"]
            labels[f"{META}pod_controller_name"] = owner["name"]
    for key, value in (meta.get("labels") or {}).items():
        labels[f"{META}pod_label_{sanitize(key)}"] = value
        labels[f"{META}pod_labelpresent_{sanitize(key)}"] = "true"
    for key, value in (meta.get("annotations") or {}).items():
        labels[f"{META}pod_annotation_{sanitize(key)}"] = value
        labels[f"{META}pod_annotationpresent_{sanitize(key)}"] = "true"
    return labels


def pod_targets(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """file_sd target groups: one per declared container port, as kubernetes_sd role pod does."""
    groups = []
    for pod in sorted(pods, key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"])):
        pod_ip = (pod.get("status") or {}).get("podIP")
        if not pod_ip:
            continue
        base = _pod_labels(pod)
        spec = pod["spec"]
        containers = [(c, False) for c in spec.get("containers") or []]
        containers += [(c, True) for c in spec.get("initContainers") or []]
        for container, is_init in containers:
            for port in container.get("ports") or []:
                labels = dict(base)
                labels.update(
                    {
                        f"{META}pod_container_name": container["name"],
                        f"{META}pod_container_image": container.get("image", ""),
                        f"{META}pod_container_init": "true" if is_init else "false",
                        f"{META}pod_container_port_name": port.get("name", ""),
                        f"{META}pod_container_port_number": str(port["containerPort"]),
                        f"{META}pod_container_port_protocol": port.get("protocol", "TCP"),
                    }
                )
                groups.append({"targets": [f"{pod_ip}:{port['containerPort']}"], "labels": labels})
    return groups


def write_targets(path: Path, groups: list[dict[str, Any]]) -> bool:
    """Replace the file atomically, only when its content changes; True if it did."""
    text = json.dumps(groups, indent=1, sort_keys=True)
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return True
