"""Typed, frozen configuration. Every run saves the config it used.

Config files are JSON or TOML. Loading checks every key: an unknown key, a
wrong type or an out-of-range value is one `ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from phonemekit.errors import ConfigError

T = TypeVar("T")
VIEWS = ("clip", "utterance")
WEIGHTED = "weighted"  # encoder.layer: a learned mix of every hidden layer
# A model's name names its folders and files: letters, digits, '.', '_', '-',
# starting with a letter or digit, so it can never climb out of a folder.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_SEED = 2**31 - 1  # per-epoch seeds are derived from it and must stay in every library's range


def is_name(text: object) -> bool:
    return isinstance(text, str) and NAME.fullmatch(text) is not None


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


@dataclass(frozen=True)
class AudioConfig:
    """Limits applied to every clip at load time."""

    sample_rate: int = 16_000
    max_seconds: float = 10.0
    max_bytes: int = 50_000_000
    min_seconds: float = 0.02
    max_source_rate: int = 384_000
    max_channels: int = 8

    def __post_init__(self) -> None:
        _check(self.sample_rate in (8000, 16000, 22050, 24000, 44100, 48000), "audio.sample_rate", "a standard rate")
        _check(_finite(self.max_seconds) and 0 < self.min_seconds < self.max_seconds <= 3600, "audio.max_seconds", "a number of seconds in (min_seconds, 3600]")
        _check(0 < self.max_bytes <= 2_000_000_000, "audio.max_bytes", "in (0, 2e9]")
        _check(8000 <= self.max_source_rate <= 768_000, "audio.max_source_rate", "in [8000, 768000]")
        _check(1 <= self.max_channels <= 64, "audio.max_channels", "in [1, 64]")


@dataclass(frozen=True)
class EncoderConfig:
    """Which encoder produces features. `source` is a hub id, a local folder,
    or `random:<size>` (tiny|small|base) for random initialisation by name.
    `layer` is a hidden-state index (negative counts from the top) or
    "weighted": every layer, mixed by weights the model learns (as s3prl does)."""

    family: str = "wav2vec2"
    source: str = "facebook/wav2vec2-base"
    revision: str | None = None
    layer: int | str = -1
    # "clip": each clip encoded alone (what a game sends: one sound). "utterance":
    # a phone segment's frames sliced from its whole utterance, encoded once
    # (reading a word or a sentence); for evaluation, never exported for single clips.
    view: str = "clip"

    def __post_init__(self) -> None:
        _check(bool(self.family), "encoder.family", "non-empty")
        _check(self.view in VIEWS, "encoder.view", " | ".join(VIEWS))
        _check((isinstance(self.layer, int) and abs(self.layer) < 1000) or self.layer == WEIGHTED, "encoder.layer", f"an integer or '{WEIGHTED}'")


@dataclass(frozen=True)
class HeadConfig:
    """Which head sits on the features; `options` go to the head's constructor."""

    kind: str = "ctc"
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-2
    schedule: str = "cosine"
    warmup: float = 0.05  # fraction of all optimiser steps with a linear warm-up (cosine)
    patience: int = 6
    grad_accum: int = 1
    seed: int = 0
    # 0: encoder frozen, features come from the cache. N > 0: the top N
    # transformer layers train end to end. -1: the whole encoder trains.
    finetune_layers: int = 0
    encoder_lr: float | None = None
    # Fine-tuning: each block below the top one trains at layer_decay times
    # the rate of the block above it (1: one rate for every block).
    layer_decay: float = 1.0
    # A run folder of the same head trained on frozen features: its head
    # (and layer mix) start this model, so fine-tuning begins from a head
    # that already reads the encoder instead of a random one.
    warm_start: str | None = None
    augment: bool = False
    spec_augment: bool = False  # SpecAugment on cached encoder frames (`training.specaugment`)
    max_batch_seconds: float = 60.0
    num_threads: int = 0

    def __post_init__(self) -> None:
        _check(1 <= self.epochs <= 10_000, "train.epochs", "in [1, 10000]")
        _check(1 <= self.batch_size <= 4096, "train.batch_size", "in [1, 4096]")
        _check(_finite(self.lr) and 0 < self.lr < 1, "train.lr", "in (0, 1)")
        _check(_finite(self.weight_decay) and 0 <= self.weight_decay < 1, "train.weight_decay", "in [0, 1)")
        _check(self.schedule in ("cosine", "plateau", "constant"), "train.schedule", "cosine|plateau|constant")
        _check(0 <= self.warmup < 1, "train.warmup", "in [0, 1)")
        _check(1 <= self.patience <= 10_000, "train.patience", "in [1, 10000]")
        _check(1 <= self.grad_accum <= self.batch_size, "train.grad_accum", "in [1, batch_size]")
        _check(0 <= self.seed <= MAX_SEED, "train.seed", f"in [0, {MAX_SEED}]")
        _check(-1 <= self.finetune_layers <= 1000, "train.finetune_layers", "in [-1, 1000]")
        _check(self.encoder_lr is None or (_finite(self.encoder_lr) and 0 < self.encoder_lr < 1), "train.encoder_lr", "in (0, 1)")
        _check(_finite(self.layer_decay) and 0 < self.layer_decay <= 1, "train.layer_decay", "in (0, 1]")
        _check(self.warm_start is None or (isinstance(self.warm_start, str) and bool(self.warm_start)), "train.warm_start", "a run folder")
        _check(_finite(self.max_batch_seconds) and 0 < self.max_batch_seconds <= 3600, "train.max_batch_seconds", "in (0, 3600]")
        _check(0 <= self.num_threads <= 1024, "train.num_threads", "in [0, 1024] (0: all cores)")


@dataclass(frozen=True)
class ModelConfig:
    """A model is an (encoder, head) pair plus how it is trained."""

    name: str = "model"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)

    def __post_init__(self) -> None:
        _check(is_name(self.name), "name", "letters, digits, '.', '_' or '-' (at most 64, starting with a letter or digit)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def with_overrides(self, *, source: str | None = None, layer: int | str | None = None, **train: Any) -> ModelConfig:
        """This config with a command line's or a caller's changes (None: keep).
        The one place overrides are applied: fewer epochs bound the patience too."""
        cfg = self
        if source:
            cfg = cfg.replace(encoder=dataclasses.replace(cfg.encoder, source=source))
        if layer is not None:
            cfg = cfg.replace(encoder=dataclasses.replace(cfg.encoder, layer=parse_layer(layer)))
        changes = {k: v for k, v in train.items() if v is not None}
        if "epochs" in changes:
            changes.setdefault("patience", min(cfg.train.patience, changes["epochs"]))
        return cfg.replace(train=dataclasses.replace(cfg.train, **changes)) if changes else cfg


def parse_layer(value: int | str) -> int | str:
    """An encoder layer as written on a command line: an integer (negative
    counts from the top) or 'weighted' (a learned mix of every layer)."""
    if isinstance(value, int) or value == WEIGHTED:
        return value
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"invalid layer {value!r} (an integer or '{WEIGHTED}')") from None


def _check(ok: bool, key: str, expected: str) -> None:
    if not ok:
        raise ConfigError(f"invalid value for '{key}': expected {expected}")


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass `cls` from plain data, checking keys and types."""
    if not isinstance(data, dict):
        raise ConfigError(f"'{where or cls.__name__}' must be a table/object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"unknown config key '{key}' (allowed: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        kwargs[name] = _coerce(hints[name], value, key)
    try:
        return cls(**kwargs)
    except TypeError as e:  # pragma: no cover - guarded by the checks above
        raise ConfigError(f"invalid config for '{where or cls.__name__}': {e}") from e


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError:
                continue
        raise ConfigError(f"invalid type for '{key}': got {type(value).__name__}")
    if origin in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"invalid type for '{key}': expected a list, got {value!r}")
        items = [_coerce(args[0], v, f"{key}[{i}]") if args else v for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"invalid type for '{key}': expected a table/object")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"invalid type for '{key}': expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"invalid type for '{key}': expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"invalid type for '{key}': expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"invalid type for '{key}': expected a string, got {value!r}")
        return value
    return value


def load_config_file(path: str | Path, cls: type[T] = ModelConfig) -> T:  # type: ignore[assignment]
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot parse config file {path}: {e}") from e
    return from_dict(cls, data)
