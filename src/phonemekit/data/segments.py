"""Phone segments: a clip that is a view into its utterance's file, not a
copied file. A segment row carries `start` and `end` (seconds, the context
around the phone included), the sha256 of the whole file (`source_sha256`,
checked when the file is read) and, as its own `sha256`, an id made from
both, which keys its cached features. Utterances are decoded once and kept
in a small cache while their segments are read."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np

from phonemekit.config import AudioConfig
from phonemekit.data.audio import load_audio
from phonemekit.errors import AudioValidationError

# An utterance may be longer than a clip: read source files with this limit.
SOURCE_AUDIO = AudioConfig(max_seconds=120.0, max_bytes=50_000_000)


def segment_id(source_sha256: str, start: float, end: float) -> str:
    return hashlib.sha256(f"{source_sha256}:{start:.3f}:{end:.3f}".encode()).hexdigest()


def segment_row(source: dict, start: float, end: float, label: str, **extra) -> dict:
    """A segment of `source` (an utterance row: path, speaker, sha256, duration)
    as a manifest row; `start`/`end` are clamped to the file."""
    start, end = round(max(0.0, start), 3), round(min(source["duration"], end), 3)
    return {
        "path": source["path"],
        "speaker": source["speaker"],
        "label": label,
        "start": start,
        "end": end,
        "duration": round(end - start, 3),
        "source_sha256": source["sha256"],
        "sha256": segment_id(source["sha256"], start, end),
        **{k: source[k] for k in ("group", "split", "utt") if k in source},
        **extra,
    }


@functools.lru_cache(maxsize=16)
def _utterance(path: str, sha256: str, sample_rate: int) -> np.ndarray:
    clip = load_audio(path, AudioConfig(sample_rate=sample_rate, max_seconds=SOURCE_AUDIO.max_seconds, max_bytes=SOURCE_AUDIO.max_bytes))
    if clip.sha256 != sha256:
        raise AudioValidationError(path, "changed", "file changed since it was imported; run `phonemekit import` again")
    return clip.samples


def utterance_samples(path: Path, source_sha256: str, audio_cfg: AudioConfig | None = None) -> np.ndarray:
    """A segment's whole utterance (validated against the sha256 the rows carry)."""
    return _utterance(str(path), source_sha256, (audio_cfg or AudioConfig()).sample_rate)


def segment_samples(path: Path, row: dict, audio_cfg: AudioConfig | None = None) -> np.ndarray:
    """The samples of a segment row, from its (validated) utterance."""
    rate = (audio_cfg or AudioConfig()).sample_rate
    x = utterance_samples(path, row["source_sha256"], audio_cfg)
    a, b = int(round(row["start"] * rate)), int(round(row["end"] * rate))
    if not 0 <= a < b <= len(x):
        raise AudioValidationError(path, "bad_segment", f"{row['start']}-{row['end']} s is not inside the file's {len(x) / rate:.2f} s")
    return x[a:b]
