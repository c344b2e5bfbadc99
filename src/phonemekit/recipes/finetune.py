"""Fine-tuning the encoder's top layers, beside the frozen model on the same
data (`phonemekit real --finetune 1,2`, `sections.finetune`).

The clips, split and tests are the augmentation table's
(`recipes.augmentation`): its plain condition is the frozen model, and its
head starts every fine-tuned one (`train.warm_start`), so the encoder's top
N blocks move under a head that already reads them. Rates decay by layer
(`train.layer_decay`), waveforms are augmented on the fly (`train.augment`),
and the validation speakers stop training early. The figures say when
fine-tuning loses.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from phonemekit.config import ModelConfig
from phonemekit.data.manifest import Manifest
from phonemekit.evaluation.metrics import metrics
from phonemekit.evaluation.predict import predict
from phonemekit.fileio import read_json, write_json
from phonemekit.recipes.augmentation import RESULT, gain_over, held_out_figures, run_condition, training_subset
from phonemekit.runs import Run
from phonemekit.training.experiment import make_split
from phonemekit.training.loop import train_model

log = logging.getLogger(__name__)

# Tuned for Whisper tiny.en's four blocks on a CPU: a small rate for the
# encoder, decaying by block, a few epochs stopped early on validation.
FINETUNE = {"encoder_lr": 5e-5, "layer_decay": 0.7, "lr": 3e-4, "epochs": 6, "patience": 2, "augment": True, "warmup": 0.1}


def finetune_one(layers: int, both: Manifest, rows: list[dict], cfg: ModelConfig, out: Path, cache: Path, *, device: str = "cpu",
                 progress=None) -> dict:  # fmt: skip
    folder = out / f"top{layers}"
    if (folder / RESULT).is_file():
        return read_json(folder / RESULT)
    t0 = time.perf_counter()
    subset = Manifest(both.root, rows, list(both.labels), None, dict(both.groups), own_salt=both.salt)
    split = make_split(subset, "corpus")
    frozen = out.parent / "augmentation" / "none" / "models" / cfg.name
    tuned = cfg.with_overrides(finetune_layers=layers, warm_start=str(frozen), **{**FINETUNE, "epochs": min(FINETUNE["epochs"], cfg.train.epochs)})
    run_dir = folder / "models" / cfg.name
    train_model(tuned, subset, subset.rows_of(split.train), subset.rows_of(split.val), run_dir, cache_root=cache, device=device, resume=True,
                progress=progress)  # fmt: skip
    history = read_json(run_dir / "history.json")
    result = {
        "layers": layers,
        "epochs": len(history),
        "val_top1": max(float(h["val_top1"]) for h in history),
        "val_by_epoch": [round(float(h["val_top1"]), 4) for h in history],
        **held_out_figures(metrics(predict(Run(run_dir).load(), subset, subset.rows_of(split.test), cache_root=cache, device=device), subset.groups)),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(folder / RESULT, result)
    return result


def finetune_section(both: Manifest, cfg: ModelConfig, out: Path, cache: Path, *, layers=(1, 2), real_share: float = 0.25, device: str = "cpu",
                     progress=None) -> dict:  # fmt: skip
    """Each top-N fine-tuning beside the frozen model (the augmentation table's plain condition, trained here if absent)."""
    rows = training_subset(both, real_share)
    frozen = run_condition("none", both, rows, cfg, out.parent / "augmentation", cache, device=device, progress=progress)
    runs = [finetune_one(n, both, rows, cfg, out, cache, device=device, progress=progress) for n in layers]
    for r in runs:
        r["gain"] = gain_over(r, frozen)
    return {
        "model": cfg.name,
        "settings": FINETUNE,
        "method": f"The top N encoder blocks of {cfg.name} trained end to end with its head, warm-started from the frozen model's "
        f"head, on the augmentation table's clips ({100 * real_share:.0f}% of the real training clips and every synthetic one), "
        "waveforms augmented on the fly (noise, a telephone band or speed, and gain), rates decaying by block, stopped on the "
        "validation speakers. Gain: top-1 points over the frozen model on the same clips.",
        "frozen": frozen,
        "runs": runs,
    }
