"""Held-out voice families: trained models, and the plain baseline of each
encoder, tested on voices of a family that no training speaker belongs to.

Held-out speakers of the training corpus still share its synthesiser; a
different family (a natural neural voice instead of eSpeak's formants) is
the closer test of what happens on real children, and the one where the
ranking of models can change.
"""

from __future__ import annotations

import logging
from pathlib import Path

from phonemekit.data.cache import extract
from phonemekit.data.manifest import Manifest
from phonemekit.data.splits import speaker_disjoint
from phonemekit.evaluation.baseline import baseline_name, fit_baseline
from phonemekit.evaluation.metrics import metrics
from phonemekit.evaluation.predict import predict
from phonemekit.models.encoders import frozen_encoder
from phonemekit.runs import Run
from phonemekit.runs import runs as as_runs

log = logging.getLogger(__name__)


def _summary(m: dict) -> dict:
    return {k: m[k] for k in ("n", "top1", "top3", "macro_f1", "top1_ci95", "per_speaker", "per_group")}


def evaluate_family(
    run_dirs: list[Path], train: Manifest, family: Manifest, *, cache_root: str | Path, device: str = "cpu", title: str = "Held-out voice family"
) -> dict:
    """Top-1/top-3 per model and per baseline on every clip of `family`."""
    out: dict = {"title": title, "models": {}, "baselines": {}}
    split = speaker_disjoint(train.speakers, train.groups)
    frozen: dict[str, Run] = {}
    for run in as_runs(run_dirs):
        preds = predict(run.load(), family, family.rows, cache_root=cache_root, device=device)
        out["models"][run.name] = {"weights": run.weights, **_summary(metrics(preds, family.groups))}
        if not run.config.train.finetune_layers:
            frozen.setdefault(baseline_name(run.config.encoder), run)
    for name, run in frozen.items():
        cfg = run.config
        extract(family, frozen_encoder(cfg.encoder), cache_root, audio_cfg=cfg.audio, device=device)
        base = fit_baseline(train, run.encoder_spec, cache_root, train.rows_of(split.train), train.rows_of(split.val))
        out["baselines"][name] = {"weights": run.weights, "C": base.C, **_summary(metrics(base.predict(cache_root, family.rows), family.groups))}
        log.info("%s on the held-out family: top-1 %.3f", name, out["baselines"][name]["top1"])
    return out
