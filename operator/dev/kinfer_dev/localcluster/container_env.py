"""A container's environment as a kubelet builds it: envFrom, then env in order, Secrets read
through the API, $(VAR) expanded (pure, given a Secret reader).

The pod runner uses it for the model fetch's init containers, so a storage Secret
(spec.model.storageSecretName) reaches the local fetch the way it reaches a real one, and a
missing Secret or key fails the same way: CreateContainerConfigError with the kubelet's words.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

# Secret data, already base64-decoded; None when the Secret does not exist.
SecretReader = Callable[[str], dict[str, str] | None]
CREATE_CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"
_REFERENCE = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


class ContainerConfigError(Exception):
    """What a kubelet reports as CreateContainerConfigError (the message is its own)."""


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined names are replaced, $$ is a literal $, and an
    undefined reference is left as written."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REFERENCE.sub(replace, value)


def _secret(name: str, read: SecretReader, optional: bool) -> dict[str, str] | None:
    data = read(name)
    if data is None and not optional:
        raise ContainerConfigError(f'secret "{name}" not found')
    return data


def container_env(
    namespace: str,
    env_from: Iterable[dict[str, Any]],
    env: Iterable[dict[str, Any]],
    read_secret: SecretReader,
) -> dict[str, str]:
    """The environment of a container with these envFrom and env entries (ConfigMap and
    field references are not the fetch's business and are left out)."""
    result: dict[str, str] = {}
    for source in env_from:
        ref = source.get("secretRef")
        if ref is None:
            continue
        data = _secret(ref["name"], read_secret, bool(ref.get("optional")))
        prefix = source.get("prefix") or ""
        result |= {prefix + key: value for key, value in (data or {}).items()}
    for entry in env:
        if "value" in entry:
            result[entry["name"]] = expand(entry["value"], result)
            continue
        ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
        if ref is None:
            continue
        optional = bool(ref.get("optional"))
        data = _secret(ref["name"], read_secret, optional)
        if data is None:
            continue
        if ref["key"] not in data:
            if optional:
                continue
            raise ContainerConfigError(
                f"couldn't find key {ref['key']} in Secret {namespace}/{ref['name']}"
            )
        result[entry["name"]] = data[ref["key"]]
    return result
