"""Building PolicyConfigs in tests: one keyword per setting, routed to the spec or the tuning."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from kinfer.api.model import PrecisionSpec, ScalingSpec, TierSpec
from kinfer.autoscale.policy import PolicyConfig, Tuning

_SCALING = {f.name for f in fields(ScalingSpec)}
_PRECISION = {f.name for f in fields(PrecisionSpec)} - {"tiers"}
_TUNING = {f.name for f in fields(Tuning)}


def policy(**settings: Any) -> PolicyConfig:
    """A PolicyConfig with these settings (`tiers`: the tier names)."""
    return tune(PolicyConfig(), **settings)


def tune(config: PolicyConfig, **settings: Any) -> PolicyConfig:
    """`config` with these settings changed; an unknown name is an error."""
    scaling, precision, tuning = {}, {}, {}
    for name, value in settings.items():
        if name == "tiers":
            precision["tiers"] = tuple(TierSpec(tier, f"s3://models/{tier}") for tier in value)
        elif name in _SCALING:
            scaling[name] = value
        elif name in _PRECISION:
            precision[name] = value
        elif name in _TUNING:
            tuning[name] = value
        else:
            raise TypeError(f"no policy setting {name!r}")
    return PolicyConfig(
        scaling=replace(config.scaling, **scaling),
        precision=replace(config.precision, **precision),
        tuning=replace(config.tuning, **tuning),
    )
