"""What one training of one model gives back (`ModelRun`), and how its
metrics are written: speakers by pseudonym."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from phonemekit.config import ModelConfig
from phonemekit.evaluation.calibration import Calibration
from phonemekit.evaluation.predict import Predictions
from phonemekit.privacy import Namer


@dataclass
class ModelRun:
    name: str
    cfg: ModelConfig
    run_dir: Path
    test: Predictions
    val: Predictions
    metrics: dict
    train_seconds: float
    history: list[dict]  # one record per epoch; LOSO records carry their fold
    weights: str
    layer_weights: list[float] | None = None  # a learned layer mix, bottom to top
    calibration: Calibration | None = None  # fitted on the validation speakers


def _named(m: dict, namer: Namer) -> dict:
    """Metrics as written to disk: speakers by pseudonym."""
    return {**m, **{k: namer.keys(m[k]) for k in ("per_speaker", "fold_top1") if k in m}}


def pooled(ps: list[Predictions]) -> Predictions:
    """Predictions of several folds as one set (every clip once)."""
    return Predictions(np.concatenate([p.scores for p in ps]), np.concatenate([p.y for p in ps]), sum((p.rows for p in ps), []), ps[0].labels)
