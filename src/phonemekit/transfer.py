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

from .baseline import baseline_name, fit_baseline
from .cache import extract
from .config import ModelConfig, from_dict
from .data.manifest import Manifest
from .encoders import EncoderSpec, build_encoder
from .evaluate import metrics, predict
from .experiment import make_split, rows_of
from .model import load_checkpoint, read_sidecar

log = logging.getLogger(__name__)


def _summary(m: dict) -> dict:
    return {k: m[k] for k in ("n", "top1", "top3", "macro_f1", "top1_ci95", "per_speaker", "per_group")}


def evaluate_family(run_dirs: list[Path], train: Manifest, family: Manifest, *, cache_root: str | Path, device: str = "cpu") -> dict:
    """Top-1/top-3 per model and per baseline on every clip of `family`."""
    out: dict[str, dict] = {"models": {}, "baselines": {}}
    split = make_split(train, "speaker-disjoint")
    specs: dict[str, tuple[ModelConfig, EncoderSpec]] = {}
    for run in run_dirs:
        side = read_sidecar(run)
        cfg = from_dict(ModelConfig, side["config"])
        model = load_checkpoint(run)
        out["models"][cfg.name] = {"weights": side["weights"], **_summary(metrics(predict(model, family, family.rows, cache_root=cache_root,
                                                                                          device=device), family.groups))}
        if not cfg.train.finetune_layers:
            specs.setdefault(baseline_name(cfg.encoder), (cfg, EncoderSpec(**side["encoder_spec"])))
    for name, (cfg, spec) in specs.items():
        extract(family, build_encoder(cfg.encoder), cache_root, audio_cfg=cfg.audio, device=device)
        base = fit_baseline(train, spec, cache_root, rows_of(train, split.train), rows_of(train, split.val))
        out["baselines"][name] = {"weights": spec.weights, "C": base.C, **_summary(metrics(base.predict(cache_root, family.rows), family.groups))}
        log.info("%s on the held-out family: top-1 %.3f", name, out["baselines"][name]["top1"])
    return out


def markdown(res: dict, title: str) -> str:
    lines = [f"## {title}", "",
             "Trained on the demo corpus as above; tested on every clip of a voice family no training speaker belongs to.", "",
             "| model | weights | top-1 | top-3 | " + " | ".join(sorted(next(iter(res["models"].values()))["per_speaker"])) + " |",
             "|---|---|---|---|" + "---|" * len(next(iter(res["models"].values()))["per_speaker"])]
    rows = [(n, m) for n, m in res["models"].items()] + [(n, b) for n, b in res["baselines"].items()]
    for name, m in sorted(rows, key=lambda kv: -kv[1]["top1"]):
        lines.append(f"| {name} | {m['weights']} | {m['top1']:.3f} | {m['top3']:.3f} | "
                     + " | ".join(f"{m['per_speaker'][s]:.3f}" for s in sorted(m["per_speaker"])) + " |")
    return "\n".join(lines) + "\n"
