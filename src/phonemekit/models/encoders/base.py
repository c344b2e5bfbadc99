"""What every encoder provides: all hidden layers plus valid frame lengths,
and a frozen `EncoderSpec` that names exactly what produced a feature."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from phonemekit.config import WEIGHTED, EncoderConfig
from phonemekit.errors import ConfigError


@dataclass(frozen=True)
class EncoderSpec:
    family: str
    source: str
    revision: str | None
    layer: int | str  # a hidden-state index, or "weighted": all layers, stacked (T, L, D)
    sample_rate: int
    frame_rate: float
    dim: int
    num_layers: int
    weights: str  # "pretrained" | "random" | "none" (no learned weights)
    weights_sha256: str  # fingerprint of the parameters that produce the features
    view: str = "clip"  # how a clip is encoded (`EncoderConfig.view`)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["view"] == "clip":  # the default leaves the keys and specs cached before views existed as they were
            del d["view"]
        return d

    def key(self) -> str:
        """Cache key: changes whenever anything that shapes the features does."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:20]


class EncoderOutput(NamedTuple):
    hidden_states: tuple[torch.Tensor, ...]  # each (B, T, D)
    lengths: torch.Tensor  # (B,) valid frames


class Encoder(nn.Module):
    """Base class. Subclasses set `family`, `dim`, `num_layers`, `frame_rate`,
    `weights` and implement `forward` and `output_lengths`."""

    family: str = ""
    sample_rate: int = 16_000
    frame_rate: float = 50.0
    dim: int = 0
    num_layers: int = 1  # number of hidden states returned
    weights: str = "none"
    # Name and version of a front end computed by code rather than weights
    # (a filterbank). It enters the fingerprint, so changing that code never
    # reuses features cached by the old one; bump it with any such change.
    front_end: str = ""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self._fingerprint: str | None = None

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:  # pragma: no cover
        raise NotImplementedError

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def blocks(self) -> list[nn.Module]:
        """The transformer blocks, bottom to top (none for a filterbank): what
        `train.layer_decay` gives each its own learning rate."""
        return []

    def set_trainable(self, top_layers: int) -> None:
        """0: frozen; -1: everything trains; N: the top N layers train."""
        for p in self.parameters():
            p.requires_grad = top_layers == -1

    def layer_index(self) -> int | str:
        layer = self.cfg.layer
        if layer == WEIGHTED:
            return layer
        if not -self.num_layers <= layer < self.num_layers:
            raise ConfigError(f"invalid value for 'encoder.layer': {layer} (this encoder has {self.num_layers} hidden states)")
        return layer % self.num_layers

    def select(self, out: EncoderOutput) -> torch.Tensor:
        """(B, T, D) for one layer; (B, T, L, D) for a learned mix (the model mixes)."""
        index = self.layer_index()
        return torch.stack(out.hidden_states, dim=2) if index == WEIGHTED else out.hidden_states[index]

    def weights_fingerprint(self) -> str:
        """sha256 over the front end's version and every weight, computed once
        (hashing a base-size encoder takes a second) and again after
        `load_state_dict`. It names the weights the encoder was built or
        loaded with: what a frozen encoder's cached features came from."""
        if self._fingerprint is None:
            h = hashlib.sha256(self.front_end.encode())
            for name, tensor in sorted(self.state_dict().items()):
                h.update(name.encode())
                h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def load_state_dict(self, *args, **kwargs):
        self._fingerprint = None
        return super().load_state_dict(*args, **kwargs)

    @property
    def spec(self) -> EncoderSpec:
        return EncoderSpec(
            family=self.family,
            source=self.cfg.source,
            revision=self.cfg.revision,
            layer=self.layer_index(),
            sample_rate=self.sample_rate,
            frame_rate=self.frame_rate,
            dim=self.dim,
            num_layers=self.num_layers,
            weights=self.weights,
            weights_sha256=self.weights_fingerprint(),
            view=self.cfg.view,
        )


_REGISTRY: dict[str, Callable[[EncoderConfig], Encoder]] = {}
_DESCRIPTIONS: dict[str, str] = {}
_DEFAULT_SOURCES: dict[str, str] = {}


def register_encoder(name: str, description: str = "", default_source: str | None = None) -> Callable:
    """Register a family; `default_source` is what `--source` means when omitted."""

    def deco(factory: Callable[[EncoderConfig], Encoder]) -> Callable[[EncoderConfig], Encoder]:
        if name in _REGISTRY:
            raise ValueError(f"encoder {name!r} registered twice")
        _REGISTRY[name] = factory
        _DESCRIPTIONS[name] = description or (factory.__doc__ or "").strip().splitlines()[0]
        _DEFAULT_SOURCES[name] = default_source or name
        return factory

    return deco


def available_encoders() -> dict[str, str]:
    return dict(sorted(_DESCRIPTIONS.items()))


def default_source(family: str) -> str:
    if family not in _REGISTRY:
        raise ConfigError(f"unknown encoder family '{family}' (available: {', '.join(sorted(_REGISTRY))})")
    return _DEFAULT_SOURCES[family]


def build_encoder(cfg: EncoderConfig) -> Encoder:
    if cfg.family not in _REGISTRY:
        raise ConfigError(f"unknown encoder family '{cfg.family}' (available: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[cfg.family](cfg)


def frozen_encoder(cfg: EncoderConfig) -> Encoder:
    """One shared eval-mode encoder per config (and state of its local
    weights), for filling and reading the feature cache, never trained:
    building Whisper tiny.en takes ~2 s, and a training with its two
    predictions built it three times."""
    return _shared(cfg, _source_stamp(cfg.source))


@functools.lru_cache(maxsize=4)
def _shared(cfg: EncoderConfig, stamp) -> Encoder:
    return build_encoder(cfg).eval()


def _source_stamp(source: str) -> tuple | None:
    """Changes whenever a local weights file or folder is rewritten, so a
    shared encoder never outlives its weights."""
    p = Path(source)
    if not p.exists():
        return None  # a hub id, a bundled name or random:<size>
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    return tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)
