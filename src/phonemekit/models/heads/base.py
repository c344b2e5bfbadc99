"""What every head provides, and the head registry.

A head maps frame features (B, T, D) with valid lengths to either class
logits (B, C) (`output = "logits"`) or CTC frame log-probs (B, T, C + 1)
with the blank last (`output = "ctc"`). Its options are a frozen dataclass
(`Head.Options`), checked like the rest of the config before anything is
built: an unknown key, a wrong type or an out-of-range size is one
`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from phonemekit.config import HeadConfig, from_dict
from phonemekit.errors import ConfigError

# Bounds on sizes, checked before a head is built: a typo such as hidden 1e9
# would otherwise try to allocate terabytes.
MAX_WIDTH = 8192
MAX_LAYERS = 16


def check_size(ok: bool, key: str, expected: str) -> None:
    if not ok:
        raise ConfigError(f"invalid value for 'head.options.{key}': expected {expected}")


def check_width(value: int, key: str) -> None:
    check_size(1 <= value <= MAX_WIDTH, key, f"an integer in [1, {MAX_WIDTH}]")


def check_layers(value: int, key: str, minimum: int = 1) -> None:
    check_size(minimum <= value <= MAX_LAYERS, key, f"an integer in [{minimum}, {MAX_LAYERS}]")


def check_dropout(value: float, key: str) -> None:
    check_size(0.0 <= value < 1.0, key, "a probability in [0, 1)")


@dataclasses.dataclass(frozen=True)
class NoOptions:
    pass


class Head(nn.Module):
    """Base class. Subclasses set `output` and `Options` and implement `forward`."""

    kind: ClassVar[str] = ""
    output: ClassVar[str] = ""  # "logits" | "ctc"
    Options: ClassVar[type] = NoOptions
    blank: int | None = None  # CTC heads: the blank's index (num_classes), stored, never re-derived

    def __init__(self, in_dim: int, num_classes: int, opts: Any) -> None:
        super().__init__()
        self.in_dim, self.num_classes, self.opts = in_dim, num_classes, opts

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid output frames per clip; a head that strides its frames says so here."""
        return lengths


_REGISTRY: dict[str, type[Head]] = {}


def register_head(name: str) -> Callable[[type[Head]], type[Head]]:
    def deco(cls: type[Head]) -> type[Head]:
        if name in _REGISTRY:
            raise ValueError(f"head {name!r} registered twice")
        cls.kind = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available_heads() -> dict[str, str]:
    return {k: (v.__doc__ or "").strip().splitlines()[0] for k, v in sorted(_REGISTRY.items())}


def head_class(kind: str) -> type[Head]:
    if kind not in _REGISTRY:
        raise ConfigError(f"unknown head '{kind}' (available: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[kind]


def head_options(kind: str, options: dict | None) -> Any:
    """The typed options of a head kind from a config's plain `head.options`."""
    return from_dict(head_class(kind).Options, dict(options or {}), "head.options")


def check_head_options(cfg: HeadConfig) -> None:
    """Fail early, before any data is read, on a head config that cannot build."""
    head_options(cfg.kind, cfg.options)


def build_head(kind: str, in_dim: int, num_classes: int, options: dict | None = None) -> Head:
    return head_class(kind)(in_dim, num_classes, head_options(kind, options))
