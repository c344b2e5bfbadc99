"""One data path from manifest rows to model batches: clips held in memory
(cached features, or waveforms for end-to-end training and export), padding
and collation, and length bucketing. Training, evaluation, export and batch
testing all read clips through here."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from phonemekit.config import AudioConfig
from phonemekit.data import augment
from phonemekit.data.audio import load_audio
from phonemekit.data.manifest import Manifest
from phonemekit.data.segments import segment_samples
from phonemekit.errors import AudioValidationError, DataError

log = logging.getLogger(__name__)


@dataclass
class Batch:
    x: torch.Tensor  # features (B, T, D) or (B, T, L, D), or waveforms (B, S)
    lengths: torch.Tensor
    y: torch.Tensor


def clip_id(row: dict) -> str:
    """How logs name a clip after `prepare`: by its audio's hash, not by its
    path, which holds the speaker's (often a child's) name."""
    return row["sha256"][:12]


def collate_waves(waves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded (B, S) waveforms and their lengths."""
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    batch = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        batch[i, : len(w)] = torch.from_numpy(w)
    return batch, lengths


def collate_features(items: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded (B, T, ...) frame features and their lengths."""
    lengths = torch.tensor([len(f) for f in items], dtype=torch.long)
    x = torch.zeros(len(items), int(lengths.max()), *items[0].shape[1:])
    for i, f in enumerate(items):
        x[i, : len(f)] = torch.from_numpy(f)
    return x, lengths


def batches_by_length(rows: list[dict], max_seconds: float, max_items: int) -> list[list[dict]]:
    """Sort by duration and cut into batches under both limits."""
    ordered = sorted(rows, key=lambda r: (r["duration"], r["sha256"]))
    out, cur, longest = [], [], 0.0
    for r in ordered:
        longest_if = max(longest, r["duration"])
        if cur and (len(cur) >= max_items or longest_if * (len(cur) + 1) > max_seconds):
            out.append(cur)
            cur, longest_if = [], r["duration"]
        cur.append(r)
        longest = longest_if
    if cur:
        out.append(cur)
    return out


class ClipData:
    """Examples held in memory: cached features, or waveforms for end-to-end."""

    def __init__(self, items: list[np.ndarray], labels: list[int], rows: list[dict], waves: bool) -> None:
        self.items, self.labels, self.rows, self.waves = items, labels, rows, waves

    def __len__(self) -> int:
        return len(self.items)

    def batch(self, idx: list[int], augment_rng: np.random.Generator | None = None) -> Batch:
        items = [self.items[i] for i in idx]
        if augment_rng is not None:
            items = [augment.random_augment(x, augment_rng) for x in items]
        y = torch.tensor([self.labels[i] for i in idx], dtype=torch.long)
        x, lengths = collate_waves(items) if self.waves else collate_features(items)
        return Batch(x, lengths, y)

    def batches(self, batch_size: int):
        for start in range(0, len(self), batch_size):
            yield self.batch(list(range(start, min(start + batch_size, len(self)))))


def load_waveform(manifest: Manifest, row: dict, audio_cfg: AudioConfig | None) -> np.ndarray:
    """A row's samples, refused when the file's bytes are no longer the ones `prepare` hashed.
    A segment row (a phone inside its utterance) is cut from its file."""
    path = manifest.audio_path(row)
    if "start" in row:
        return segment_samples(path, row, audio_cfg)
    clip = load_audio(path, audio_cfg)
    if clip.sha256 != row["sha256"]:
        raise AudioValidationError(path, "changed", "file changed since prepare; re-run prepare")
    return clip.samples


def load_clips(manifest: Manifest, rows: list[dict], *, cache=None, audio_cfg: AudioConfig | None = None) -> ClipData:
    """Waveforms of `rows` (no cache given) or their cached features. A clip
    that broke after `prepare` is skipped with a warning, never fatal."""
    items, labels, kept = [], [], []
    for r in rows:
        try:
            items.append(cache.get(r["sha256"]) if cache is not None else load_waveform(manifest, r, audio_cfg))
        except (AudioValidationError, DataError, OSError) as e:
            log.warning("skipping clip %s (%s): %s", clip_id(r), r["label"], getattr(e, "reason", None) or type(e).__name__)
            continue
        labels.append(manifest.labels.index(r["label"]))
        kept.append(r)
    if not items:
        raise DataError("no usable clips for this part of the split")
    return ClipData(items, labels, kept, waves=cache is None)
