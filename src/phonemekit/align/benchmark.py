"""How well an aligner places boundaries, on audio whose boundaries are
known: isolated sounds trimmed to their voiced part and joined end to end,
so every join is a true boundary. Per aligner: the median error of the
boundaries it places and the share within 20 ms.

Stops and affricates are left out: said alone, as phonics teaches them,
they carry a schwa that belongs to no boundary."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from phonemekit.align.base import Aligner, AlignmentError
from phonemekit.data.phones import SOUND_CLASS

log = logging.getLogger(__name__)

SR = 16_000
JOINABLE = {"vowel", "fricative", "nasal", "approximant"}


def trim(x: np.ndarray, top_db: float = 30.0, frame: int = 320) -> np.ndarray:
    """The part of a clip within `top_db` of its loudest 20 ms frame (what
    librosa's `effects.trim` does; a dozen lines do not justify the dependency)."""
    n = len(x) // frame
    if n == 0:
        return x
    rms = np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > -top_db)
    return x[loud[0] * frame : (loud[-1] + 1) * frame]


@dataclass(frozen=True)
class Assembled:
    samples: np.ndarray
    sounds: list[str]
    joins: list[float]  # seconds: the true boundary between sound k and k + 1


def assemble(clips: list[tuple[np.ndarray, str]], pad_s: float = 0.2) -> Assembled:
    """Trimmed clips end to end, with silence before and after."""
    pad = np.zeros(int(pad_s * SR), np.float32)
    parts, joins, t = [pad], [], len(pad)
    for k, (x, _) in enumerate(clips):
        x = trim(x)
        parts.append(x / (np.abs(x).max() + 1e-9) * 0.5)  # one level for all, as a speaker keeps it
        t += len(x)
        if k < len(clips) - 1:
            joins.append(t / SR)
    parts.append(pad)
    return Assembled(np.concatenate(parts).astype(np.float32), [label for _, label in clips], joins)


def assembled_set(items: list[tuple[np.ndarray, str, str]], per_item: int = 4, count: int = 100, seed: int = 0) -> list[Assembled]:
    """`count` sequences of `per_item` joinable sounds, each from one speaker
    (clips as (samples, label, speaker)), no sound twice in a row."""
    rng = np.random.default_rng(seed)
    by_speaker: dict[str, list[tuple[np.ndarray, str]]] = {}
    for x, label, speaker in items:
        if SOUND_CLASS.get(label) in JOINABLE:
            by_speaker.setdefault(speaker, []).append((x, label))
    speakers = sorted(s for s, v in by_speaker.items() if len({lab for _, lab in v}) >= 2)
    out = []
    for k in range(count if speakers else 0):
        pool = by_speaker[speakers[k % len(speakers)]]
        chosen: list[tuple[np.ndarray, str]] = []
        while len(chosen) < per_item:
            c = pool[int(rng.integers(len(pool)))]
            if not chosen or c[1] != chosen[-1][1]:
                chosen.append(c)
        out.append(assemble(chosen))
    return out


def boundary_errors(aligner: Aligner, sets: list[Assembled]) -> dict:
    """Median boundary error (ms) and share within 20 ms; a boundary is the
    midpoint between one placed sound's end and the next one's start."""
    errors, failed, t0 = [], 0, time.perf_counter()
    for a in sets:
        try:
            phones = aligner.align_sounds(a.samples, a.sounds)
        except AlignmentError as e:
            failed += 1
            log.debug("%s could not align %s: %s", aligner.name, a.sounds, e)
            continue
        for k, true in enumerate(a.joins):
            errors.append(abs((phones[k].end + phones[k + 1].start) / 2 - true))
    e = np.array(errors)
    audio_s = sum(len(a.samples) for a in sets) / SR
    return {
        "sequences": len(sets),
        "failed": failed,
        "boundaries": len(e),
        "median_error_ms": round(float(np.median(e)) * 1000, 1) if len(e) else None,
        "within_20ms": round(float((e <= 0.02).mean()), 4) if len(e) else None,
        "within_50ms": round(float((e <= 0.05).mean()), 4) if len(e) else None,
        "seconds_per_audio_second": round((time.perf_counter() - t0) / max(audio_s, 1e-9), 4),
    }
