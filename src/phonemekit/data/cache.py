"""Content-addressed feature cache.

Features live at `CACHE/<spec key>/<sha[:2]>/<audio sha256>.npy`, where the
spec key hashes the full `EncoderSpec` (weights fingerprint included). A
renamed file is not recomputed; a changed encoder never reuses stale
features. Only features are stored, never audio. Writes are atomic, and
batches are formed from the whole manifest before anything is skipped, so
an interrupted run that resumes writes the same bytes as one that did not.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from phonemekit.config import AudioConfig
from phonemekit.data.audio import load_audio
from phonemekit.data.features import batches_by_length, collate_waves
from phonemekit.data.manifest import Manifest
from phonemekit.errors import AudioValidationError, DataError
from phonemekit.fileio import read_json, write_bytes, write_json
from phonemekit.models.encoders import Encoder, EncoderSpec

log = logging.getLogger(__name__)


class FeatureCache:
    def __init__(self, root: str | Path, spec: EncoderSpec) -> None:
        self.spec = spec
        self.dir = Path(root) / spec.key()
        spec_file = self.dir / "spec.json"
        if spec_file.exists():
            if read_json(spec_file) != spec.to_dict():  # a key collision would be a bug, not data
                raise DataError(f"cache folder {self.dir} holds features of a different encoder spec")
        else:
            write_json(spec_file, spec.to_dict())

    def path(self, sha: str) -> Path:
        return self.dir / sha[:2] / f"{sha}.npy"

    def has(self, sha: str) -> bool:
        return self.path(sha).is_file()

    def put(self, sha: str, feats: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(feats, dtype=np.float32), allow_pickle=False)
        write_bytes(self.path(sha), buf.getvalue())

    def get(self, sha: str) -> np.ndarray:
        try:
            return np.load(self.path(sha), allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DataError(f"cached features {self.path(sha)} are missing or unreadable; re-run extract") from e


@dataclass
class ExtractResult:
    computed: int
    cached: int
    failed: list[dict]
    cache_dir: Path


@torch.no_grad()
def extract(
    manifest: Manifest,
    encoder: Encoder,
    cache_root: str | Path,
    *,
    audio_cfg: AudioConfig | None = None,
    batch_size: int = 16,
    max_batch_seconds: float = 40.0,
    progress=None,
    device: str = "cpu",
) -> ExtractResult:
    encoder.eval().to(device)
    cache = FeatureCache(cache_root, encoder.spec)
    unique = {r["sha256"]: r for r in manifest.rows}
    batches = batches_by_length(list(unique.values()), max_batch_seconds, batch_size)
    computed = cached = 0
    failed: list[dict] = []
    task = progress.add_task(f"extracting {encoder.family}", total=len(unique)) if progress else None
    for batch in batches:
        todo = [r for r in batch if not cache.has(r["sha256"])]
        cached += len(batch) - len(todo)
        if todo:
            # The whole batch is encoded even when part of it is cached, so the
            # features never depend on what an earlier run managed to write.
            waves, keep = [], []
            for r in batch:
                path = manifest.audio_path(r)
                try:
                    clip = load_audio(path, audio_cfg)
                    if clip.sha256 != r["sha256"]:  # the features of other bytes would be cached under this clip's name
                        raise AudioValidationError(path, "changed", "file changed since prepare; re-run prepare")
                    waves.append(clip.samples)
                    keep.append(r)
                except (AudioValidationError, OSError) as e:
                    failed.append({"path": r["path"], "reason": getattr(e, "reason", "unreadable"), "detail": str(e)})
                    log.warning("skipping %s", e)
            if keep:
                wave, lengths = collate_waves(waves)
                out = encoder(wave.to(device), lengths.to(device))
                feats = encoder.select(out).float().cpu().numpy()
                for r, f, n in zip(keep, feats, out.lengths.tolist()):
                    if r in todo:
                        cache.put(r["sha256"], f[:n])
                        computed += 1
        if progress:
            progress.advance(task, len(batch))
    log.info("extract: %d computed, %d cached, %d failed -> %s", computed, cached, len(failed), cache.dir)
    return ExtractResult(computed, cached, failed, cache.dir)
