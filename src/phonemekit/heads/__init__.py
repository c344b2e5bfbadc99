"""Head registry. A head maps frame features (B, T, D) with valid lengths to
either class logits (B, C) (`output = "logits"`) or CTC frame log-probs
(B, T, C + 1) with the blank last (`output = "ctc"`)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..errors import ConfigError

_REGISTRY: dict[str, type[nn.Module]] = {}


def register_head(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"head {name!r} registered twice")
        cls.kind = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available_heads() -> dict[str, str]:
    return {k: (v.__doc__ or "").strip().splitlines()[0] for k, v in sorted(_REGISTRY.items())}


def build_head(kind: str, in_dim: int, num_classes: int, options: dict | None = None) -> nn.Module:
    if kind not in _REGISTRY:
        raise ConfigError(f"unknown head '{kind}' (available: {', '.join(sorted(_REGISTRY))})")
    try:
        return _REGISTRY[kind](in_dim=in_dim, num_classes=num_classes, **(options or {}))
    except TypeError as e:
        raise ConfigError(f"invalid option in 'head.options' for head '{kind}': {e}") from e


from . import ctc, mlp  # noqa: E402,F401  (registers the heads)
