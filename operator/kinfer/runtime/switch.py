"""THE way to switch precision tiers: a repository load with a `version_policy` override.

Tier k (1 = first, highest-quality tier) is version k of the model. Triton replaces
the model config with a load's override instead of merging it, so the override is
always the model's complete current config with only `version_policy` changed to
`specific: [k]`. Works the same on Triton (2.51+) and on kinfer-ort-server; gRPC,
because an HTTP load on Triton was seen to stall other HTTP requests while it ran.
"""

from __future__ import annotations

import json
from typing import Any


def _client(grpc_url: str):
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(grpc_url)


def switch_config(config: dict[str, Any], version: int) -> dict[str, Any]:
    """`config` (JSON, as get_model_config gives it) with only version_policy changed (pure)."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version={version!r} must be an integer >= 1 (tier k is version k)")
    switched = json.loads(json.dumps(config))
    switched["version_policy"] = {"specific": {"versions": [version]}}
    return switched


def select_version(grpc_url: str, model: str, version: int, timeout_s: float = 30.0) -> None:
    """Make `version` the only version `model` serves at `grpc_url` (host:port).

    Requests in flight finish on the old version; requests by name without a version
    never fail during the switch. Raises tritonclient's InferenceServerException if
    the server refuses (the old version then keeps serving).
    """
    client = _client(grpc_url)
    try:
        config = client.get_model_config(model, as_json=True, client_timeout=timeout_s)["config"]
        client.load_model(
            model, config=json.dumps(switch_config(config, version)), client_timeout=timeout_s
        )
    finally:
        client.close()


def ready_versions(grpc_url: str, model: str, timeout_s: float = 10.0) -> list[int]:
    """The versions of `model` that are READY at `grpc_url`, ascending (empty if none)."""
    client = _client(grpc_url)
    try:
        index = client.get_model_repository_index(as_json=True, client_timeout=timeout_s)
    finally:
        client.close()
    return sorted(
        int(entry["version"])
        for entry in index.get("models", [])
        if entry.get("name") == model and entry.get("state") == "READY" and entry.get("version")
    )


def active_version(grpc_url: str, model: str, timeout_s: float = 10.0) -> int | None:
    """The version serving requests without a version (the highest READY one), or None."""
    versions = ready_versions(grpc_url, model, timeout_s)
    return versions[-1] if versions else None


def tier_names(config: dict[str, Any]) -> list[str]:
    """Tier names in version order from the config's `kinfer.tiers` parameter (pure)."""
    value = config.get("parameters", {}).get("kinfer.tiers", {}).get("string_value", "")
    return [name.strip() for name in value.split(",") if name.strip()]
