"""Content-addressed feature cache, and extraction into it.

Features live at `CACHE/<spec key>/<sha[:2]>/<audio sha256>.npy`, where the
spec key hashes the full `EncoderSpec` (weights fingerprint included). A
renamed file is not recomputed; a changed encoder never reuses stale
features. Only features are stored, never audio. An entry is checked
whenever it is read (float32, the encoder's frame shape kept in
`layout.json`, finite values): extraction recomputes a truncated or poisoned
entry instead of counting it cached, and a reader gets one `DataError` that
names it instead of NaNs or a shape error deep in training. CACHE is a folder or an
fsspec URL (`data.store`). Writes are atomic, and batches are formed from
the whole manifest before anything is skipped, so an interrupted run that
resumes, or a cluster of workers that finish in any order
(`phonemekit.scale`), writes the same bytes as one uninterrupted local run.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from phonemekit.config import AudioConfig
from phonemekit.data.features import batches_by_length, clip_id, collate_waves, load_waveform
from phonemekit.data.manifest import Manifest
from phonemekit.data.segments import utterance_samples
from phonemekit.data.store import Store
from phonemekit.errors import AudioValidationError, DataError
from phonemekit.fileio import sweep_dead_temps

if TYPE_CHECKING:  # the cache keys features by an encoder's spec and calls it; data never imports models at run time
    from phonemekit.models.encoders import Encoder, EncoderSpec

log = logging.getLogger(__name__)


LAYOUT = "layout.json"  # the shape of an entry after its time axis: [D], or [L, D] for every layer


class FeatureCache:
    def __init__(self, root, spec: EncoderSpec) -> None:
        self.spec, self.root = spec, root
        self.store = Store(root) / spec.key()
        self.dir = self.store.url
        if self.store.exists("spec.json"):
            if self.store.read_json("spec.json") != spec.to_dict():  # a key collision would be a bug, not data
                raise DataError(f"cache folder {self.dir} holds features of a different encoder spec")
        else:
            self.store.write_json("spec.json", spec.to_dict())
        self.layout: tuple[int, ...] | None = None
        if self.store.exists(LAYOUT):
            try:
                layout = self.store.read_json(LAYOUT)
                self.layout = tuple(int(x) for x in layout) if isinstance(layout, list) else None
            except (OSError, ValueError, TypeError):
                self.layout = None  # re-learned from the next features the encoder computes
            if self.layout is None:
                log.warning("%s/%s is malformed; the frame shape is learned again from the encoder", self.dir, LAYOUT)

    def sweep(self) -> None:
        """Drop the temp files of writers on this host that were killed mid-write."""
        if self.store.is_local and (gone := sweep_dead_temps(self.store.root)):
            log.info("removed %d temp file(s) left by killed writers in %s", gone, self.dir)

    @staticmethod
    def key(sha: str) -> str:
        return f"{sha[:2]}/{sha}.npy"

    def problem(self, feats: object) -> str | None:
        """Why an entry cannot be features of this encoder, or None."""
        if not isinstance(feats, np.ndarray) or feats.dtype != np.float32:
            return f"dtype {getattr(feats, 'dtype', type(feats).__name__)}, not float32"
        if feats.ndim < 2 or feats.shape[0] == 0:
            return f"shape {feats.shape}, expected (frames, ...)"
        if self.layout is not None and tuple(feats.shape[1:]) != self.layout:
            return f"frame shape {tuple(feats.shape[1:])}, the encoder's is {self.layout}"
        if not np.isfinite(feats).all():
            return "values that are NaN or infinite"
        return None

    def _read(self, sha: str) -> tuple[np.ndarray | None, str | None]:
        try:
            feats = np.load(io.BytesIO(self.store.read(self.key(sha))), allow_pickle=False)
        except FileNotFoundError:
            return None, "missing"
        except (OSError, ValueError, EOFError) as e:  # truncated, not .npy, or an object array
            return None, f"unreadable ({str(e)[:80]})"
        return feats, self.problem(feats)

    def has(self, sha: str) -> bool:
        """True when an intact entry is cached; a broken one counts as absent, so it is recomputed."""
        if not self.store.exists(self.key(sha)):
            return False
        _, why = self._read(sha)
        if why:
            log.warning("cached features %s are broken (%s); recomputing", self.store.join(self.key(sha)), why)
        return why is None

    def put(self, sha: str, feats: np.ndarray) -> None:
        feats = np.ascontiguousarray(feats, dtype=np.float32)
        if self.layout is None:
            self.layout = tuple(feats.shape[1:])
            self.store.write_json(LAYOUT, list(self.layout))
        if why := self.problem(feats):
            raise DataError(f"the encoder produced features with {why}; not caching them")
        buf = io.BytesIO()
        np.save(buf, feats, allow_pickle=False)
        self.store.write(self.key(sha), buf.getvalue())

    def get(self, sha: str) -> np.ndarray:
        feats, why = self._read(sha)
        if why:
            raise DataError(f"cached features {self.store.join(self.key(sha))}: {why}; run `phonemekit extract` to recompute them")
        return feats


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
def encode_batch(
    batch: list[dict], manifest: Manifest, encoder: Encoder, cache: FeatureCache, *, audio_cfg: AudioConfig | None, device: str
) -> tuple[int, int, list[dict]]:
    """Encode one planned batch and cache its missing clips: (computed,
    cached, failed). The whole batch is encoded even when part of it is
    cached, so the features never depend on what an earlier run wrote."""
    # A cache that does not know its frame shape yet learns it from this batch, encoded afresh.
    todo = list(batch) if cache.layout is None else [r for r in batch if not cache.has(r["sha256"])]
    if not todo:
        return 0, len(batch), []
    waves, keep, failed = [], [], []
    for r in batch:
        try:
            waves.append(load_waveform(manifest, r, audio_cfg))  # other bytes' features would be cached under this clip's name
            keep.append(r)
        except (AudioValidationError, DataError, OSError) as e:
            if r in todo:
                failed.append({"path": r["path"], "sha256": r["sha256"], "reason": getattr(e, "reason", "unreadable"), "detail": str(e)})
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


def encode_batches(
    batches: list[list[dict]], manifest: Manifest, encoder: Encoder, cache: FeatureCache, *, audio_cfg: AudioConfig | None, device: str, on_batch=None
) -> tuple[int, int, list[dict]]:
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
    if cache.spec.view == "utterance":
        computed, cached, failed = encode_in_context(manifest, encoder, cache, audio_cfg=audio_cfg, device=device, progress=progress)
    else:
        batches = plan(manifest, batch_size=batch_size, max_batch_seconds=max_batch_seconds)
        task = progress.add_task(f"extracting {encoder.family}", total=sum(map(len, batches))) if progress else None
        computed, cached, failed = encode_batches(
            batches, manifest, encoder, cache, audio_cfg=audio_cfg, device=device, on_batch=(lambda b: progress.advance(task, len(b))) if progress else None
        )
    log.info("extract: %d computed, %d cached, %d failed -> %s", computed, cached, len(failed), cache.dir)
    return ExtractResult(computed, cached, failed, cache.dir)


@torch.no_grad()
def encode_in_context(manifest: Manifest, encoder: Encoder, cache: FeatureCache, *, audio_cfg: AudioConfig | None, device: str,
                      progress=None) -> tuple[int, int, list[dict]]:  # fmt: skip
    """The utterance view: each utterance encoded once, whole, and every
    segment's frames sliced from it (a clip that is a file of its own is
    its own utterance). What reading a word or a sentence sees: the phone
    with the context the encoder heard around it."""
    # The whole utterance's frames also go to the clip view's cache under the file's own hash: what the phone
    # recogniser and the sentence tagger read (the encoder masks padding, so a file alone is a file in a batch).
    whole = FeatureCache(cache.root, dataclasses.replace(encoder.spec, view="clip"))
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in {r["sha256"]: r for r in manifest.rows}.values():
        groups.setdefault((r["path"], r.get("source_sha256", r["sha256"])), []).append(r)
    task = progress.add_task(f"extracting {encoder.family} (utterances)", total=len(groups)) if progress else None
    computed = cached = 0
    failed: list[dict] = []
    rate = encoder.spec.frame_rate
    for (path, sha), rows in groups.items():
        todo = [r for r in rows if not cache.has(r["sha256"])]
        cached += len(rows) - len(todo)
        if todo:
            try:
                first = todo[0]
                x = utterance_samples(manifest.audio_path(first), sha, audio_cfg) if "start" in first else load_waveform(manifest, first, audio_cfg)
            except (AudioValidationError, DataError, OSError) as e:
                failed += [{"path": r["path"], "sha256": r["sha256"], "reason": getattr(e, "reason", "unreadable"), "detail": str(e)} for r in todo]
                log.warning("skipping utterance %s: %s", path, getattr(e, "reason", None) or type(e).__name__)
            else:
                wave, lengths = collate_waves([x])
                out = encoder(wave.to(device), lengths.to(device))
                frames = encoder.select(out)[0, : int(out.lengths[0])].float().cpu().numpy()
                if not whole.has(sha):
                    whole.put(sha, frames)
                for r in todo:
                    a, b = (int(r["start"] * rate), int(np.ceil(r["end"] * rate))) if "start" in r else (0, len(frames))
                    a = min(a, len(frames) - 1)
                    cache.put(r["sha256"], frames[a : max(a + 1, min(b, len(frames)))])
                    computed += 1
        if progress:
            progress.advance(task)
    return computed, cached, failed
