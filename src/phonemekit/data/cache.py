"""Content-addressed feature cache, and extraction into it.

Features live at `CACHE/<spec key>/<sha[:2]>/<audio sha256>.npy`, where the
spec key hashes the full `EncoderSpec` (weights fingerprint included). A
renamed file is not recomputed; a changed encoder never reuses stale
features. Only features are stored, never audio. CACHE is a folder or an
fsspec URL (`data.store`). Writes are atomic, and batches are formed from
the whole manifest before anything is skipped, so an interrupted run that
resumes, or a cluster of workers that finish in any order
(`phonemekit.scale`), writes the same bytes as one uninterrupted local run.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from phonemekit.config import AudioConfig
from phonemekit.data.features import batches_by_length, clip_id, collate_waves, load_waveform
from phonemekit.data.manifest import Manifest
from phonemekit.data.store import Store
from phonemekit.errors import AudioValidationError, DataError
from phonemekit.fileio import sweep_dead_temps
from phonemekit.models.encoders import Encoder, EncoderSpec

log = logging.getLogger(__name__)


class FeatureCache:
    def __init__(self, root, spec: EncoderSpec) -> None:
        self.spec = spec
        self.store = Store(root) / spec.key()
        self.dir = self.store.url
        if self.store.exists("spec.json"):
            if self.store.read_json("spec.json") != spec.to_dict():  # a key collision would be a bug, not data
                raise DataError(f"cache folder {self.dir} holds features of a different encoder spec")
        else:
            self.store.write_json("spec.json", spec.to_dict())

    def sweep(self) -> None:
        """Drop the temp files of writers on this host that were killed mid-write."""
        if self.store.is_local and (gone := sweep_dead_temps(self.store.root)):
            log.info("removed %d temp file(s) left by killed writers in %s", gone, self.dir)

    @staticmethod
    def key(sha: str) -> str:
        return f"{sha[:2]}/{sha}.npy"

    def has(self, sha: str) -> bool:
        return self.store.exists(self.key(sha))

    def put(self, sha: str, feats: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(feats, dtype=np.float32), allow_pickle=False)
        self.store.write(self.key(sha), buf.getvalue())

    def get(self, sha: str) -> np.ndarray:
        try:
            return np.load(io.BytesIO(self.store.read(self.key(sha))), allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DataError(f"cached features {self.store.join(self.key(sha))} are missing or unreadable; re-run extract") from e


@dataclass
class ExtractResult:
    computed: int
    cached: int
    failed: list[dict]
    cache_dir: str
    workers: dict[str, dict] = field(default_factory=dict)  # per worker: clips, audio seconds, seconds (cluster engines)


def plan(manifest: Manifest, *, batch_size: int = 16, max_batch_seconds: float = 40.0) -> list[list[dict]]:
    """The batches every engine encodes, fixed by the whole manifest (unique
    clips, sorted by duration), so features never depend on which clips
    were cached already, on the number of workers or on their order."""
    unique = {r["sha256"]: r for r in manifest.rows}
    return batches_by_length(list(unique.values()), max_batch_seconds, batch_size)


@torch.no_grad()
def encode_batch(batch: list[dict], manifest: Manifest, encoder: Encoder, cache: FeatureCache, *, audio_cfg: AudioConfig | None,
                 device: str) -> tuple[int, int, list[dict]]:
    """Encode one planned batch and cache its missing clips: (computed,
    cached, failed). The whole batch is encoded even when part of it is
    cached, so the features never depend on what an earlier run wrote."""
    todo = [r for r in batch if not cache.has(r["sha256"])]
    if not todo:
        return 0, len(batch), []
    waves, keep, failed = [], [], []
    for r in batch:
        try:
            waves.append(load_waveform(manifest, r, audio_cfg))  # other bytes' features would be cached under this clip's name
            keep.append(r)
        except (AudioValidationError, DataError, OSError) as e:
            if r in todo:
                failed.append({"path": r["path"], "reason": getattr(e, "reason", "unreadable"), "detail": str(e)})
                log.warning("skipping clip %s (%s): %s", clip_id(r), r["label"], getattr(e, "reason", None) or type(e).__name__)
    computed = 0
    if keep:
        wave, lengths = collate_waves(waves)
        out = encoder(wave.to(device), lengths.to(device))
        feats = encoder.select(out).float().cpu().numpy()
        for r, f, n in zip(keep, feats, out.lengths.tolist()):
            if r in todo:
                cache.put(r["sha256"], f[:n])
                computed += 1
    return computed, len(batch) - len(todo), failed


def encode_batches(batches: list[list[dict]], manifest: Manifest, encoder: Encoder, cache: FeatureCache, *, audio_cfg: AudioConfig | None,
                   device: str, on_batch=None) -> tuple[int, int, list[dict]]:
    """`encode_batch` over planned batches (all of them locally, a shard on a
    cluster worker): (computed, cached, failed) in total."""
    computed = cached = 0
    failed: list[dict] = []
    for batch in batches:
        c, k, f = encode_batch(batch, manifest, encoder, cache, audio_cfg=audio_cfg, device=device)
        computed, cached, failed = computed + c, cached + k, failed + f
        if on_batch:
            on_batch(batch)
    return computed, cached, failed


@torch.no_grad()
def extract(
    manifest: Manifest,
    encoder: Encoder,
    cache_root,
    *,
    audio_cfg: AudioConfig | None = None,
    batch_size: int = 16,
    max_batch_seconds: float = 40.0,
    progress=None,
    device: str = "cpu",
) -> ExtractResult:
    """Every clip of `manifest` into the cache, on this machine."""
    encoder.eval().to(device)
    cache = FeatureCache(cache_root, encoder.spec)
    cache.sweep()
    batches = plan(manifest, batch_size=batch_size, max_batch_seconds=max_batch_seconds)
    task = progress.add_task(f"extracting {encoder.family}", total=sum(map(len, batches))) if progress else None
    computed, cached, failed = encode_batches(batches, manifest, encoder, cache, audio_cfg=audio_cfg, device=device,
                                              on_batch=(lambda b: progress.advance(task, len(b))) if progress else None)
    log.info("extract: %d computed, %d cached, %d failed -> %s", computed, cached, len(failed), cache.dir)
    return ExtractResult(computed, cached, failed, cache.dir)
