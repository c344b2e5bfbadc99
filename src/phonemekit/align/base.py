"""What an aligner gives back, and the registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from phonemekit.errors import ConfigError


@dataclass(frozen=True)
class AlignedPhone:
    phone: str  # ARPAbet, no stress
    start: float  # seconds
    end: float
    score: float  # the aligner's own score (higher is better; its scale is the aligner's)


@dataclass(frozen=True)
class AlignedWord:
    word: str
    start: float
    end: float
    phones: tuple[AlignedPhone, ...]


class Aligner:
    """Aligns one utterance: 16 kHz float32 samples and its words."""

    name = "aligner"

    def align(self, samples: np.ndarray, words: list[str]) -> list[AlignedWord]:
        raise NotImplementedError

    def knows(self, word: str) -> bool:
        return True

    def align_sounds(self, samples: np.ndarray, sounds: list[str]) -> list[AlignedPhone]:
        """The inventory's sounds placed in the audio, in order (no words: assembled or phonics sounds)."""
        raise NotImplementedError


class AlignmentError(Exception):
    """This utterance cannot be aligned (a word outside the dictionary, a failed pass)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


_REGISTRY: dict[str, tuple[Callable[..., Aligner], str]] = {}


def register_aligner(name: str, description: str):
    def deco(factory: Callable[..., Aligner]):
        _REGISTRY[name] = (factory, description)
        return factory

    return deco


def available_aligners() -> dict[str, str]:
    return {k: d for k, (_, d) in sorted(_REGISTRY.items())}


def get_aligner(name: str, **options) -> Aligner:
    """An aligner by name; `options` go to its factory (the ctc aligner's `model`)."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown aligner {name!r} (available: {', '.join(available_aligners())})")
    return _REGISTRY[name][0](**options)
