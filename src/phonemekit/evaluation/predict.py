"""Scores of a trained model on manifest rows: the clips in the form the
model consumes (cached features of its frozen encoder, or waveforms), run
in batches, as class log-probabilities."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from phonemekit.data.cache import FeatureCache, extract
from phonemekit.data.features import ClipData, load_clips
from phonemekit.data.manifest import Manifest
from phonemekit.errors import DataError, IntegrityError
from phonemekit.models.encoders import frozen_encoder
from phonemekit.models.heads.mlp import masked_pool
from phonemekit.models.model import PhonemeModel


@dataclass
class Predictions:
    scores: np.ndarray  # (N, C) class log-probabilities
    y: np.ndarray  # (N,) true label index
    rows: list[dict]
    labels: list[str]

    @property
    def probs(self) -> np.ndarray:
        return np.exp(self.scores)


def clip_data(model: PhonemeModel, manifest: Manifest, rows: list[dict], *, cache_root: str | Path, device: str = "cpu", progress=None) -> ClipData:
    """The clips of `rows` in the form this model consumes."""
    if model.encoder is not None:
        return load_clips(manifest, rows, audio_cfg=model.cfg.audio)
    encoder = frozen_encoder(model.cfg.encoder)
    if encoder.spec != model.spec:
        raise IntegrityError(f"the encoder at {model.cfg.encoder.source} is not the one this model was trained on (spec differs)")
    res = extract(Manifest(manifest.root, rows, manifest.labels), encoder, cache_root, audio_cfg=model.cfg.audio, progress=progress, device=device)
    failed = {f["sha256"] for f in res.failed}
    return load_clips(manifest, [r for r in rows if r["sha256"] not in failed], cache=FeatureCache(cache_root, model.spec))


def _encoded_batches(model: PhonemeModel, data, device: str, batch_size: int):
    """(features, lengths) per batch, running the encoder when the data are waveforms."""
    model.eval().to(device)
    for b in data.batches(batch_size):
        x, lengths = b.x.to(device), b.lengths.to(device)
        if data.waves:
            x, lengths = model.encode(x, lengths)
        yield x, lengths


@torch.no_grad()
def score(model: PhonemeModel, data, *, device: str = "cpu", batch_size: int = 64) -> np.ndarray:
    return np.concatenate([model(x, n).float().cpu().numpy() for x, n in _encoded_batches(model, data, device, batch_size)])


def predict(model: PhonemeModel, manifest: Manifest, rows: list[dict], *, cache_root: str | Path = "cache", device: str = "cpu", progress=None) -> Predictions:
    unknown = sorted({r["label"] for r in rows} - set(model.labels))
    if unknown:
        raise DataError(f"labels not known to the model: {', '.join(unknown)}")
    data = clip_data(model, manifest, rows, cache_root=cache_root, device=device, progress=progress)
    y = np.array([model.labels.index(r["label"]) for r in data.rows])
    return Predictions(score(model, data, device=device), y, data.rows, model.labels)


@torch.no_grad()
def pooled_embeddings(
    model: PhonemeModel, manifest: Manifest, rows: list[dict], *, cache_root: str | Path = "cache", device: str = "cpu", batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Mean-pooled encoder features (over valid frames) and label indices."""
    data = clip_data(model, manifest, rows, cache_root=cache_root, device=device)
    mix = model.layer_mix or (lambda x: x)
    emb = [masked_pool(mix(x), n, "mean").float().cpu().numpy() for x, n in _encoded_batches(model, data, device, batch_size)]
    return np.concatenate(emb), np.array(data.labels)


@torch.no_grad()
def embedded(model: PhonemeModel, manifest: Manifest, rows: list[dict], *, cache_root: str | Path = "cache", device: str = "cpu",
             batch_size: int = 64) -> tuple[Predictions, np.ndarray]:  # fmt: skip
    """Predictions and the head's embedding of each clip (`PhonemeModel.embed`,
    what a speaker profile adapts on), in the order of `Predictions.rows`."""
    data = clip_data(model, manifest, rows, cache_root=cache_root, device=device)
    scores, emb = [], []
    for x, n in _encoded_batches(model, data, device, batch_size):
        scores.append(model(x, n).float().cpu().numpy())
        emb.append(model.embed(x, n).float().cpu().numpy())
    y = np.array([model.labels.index(r["label"]) for r in data.rows])
    return Predictions(np.concatenate(scores), y, data.rows, model.labels), np.concatenate(emb)
