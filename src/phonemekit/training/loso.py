"""Leave one speaker out: a fold per speaker, each model's folds pooled into
one run, and the baseline pooled the same way, so every LOSO figure stands
beside the plain logistic regression on the same folds."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from phonemekit.config import ModelConfig
from phonemekit.data.manifest import Manifest
from phonemekit.data.splits import Split
from phonemekit.evaluation.metrics import metrics
from phonemekit.evaluation.predict import Predictions
from phonemekit.privacy import Namer
from phonemekit.runs import Run
from phonemekit.training.results import ModelRun, _named, pooled


def loso_fold_dirs(run_dir: Path, namer: Namer, folds: list[Split]) -> list[tuple[Split, Path]]:
    """Each leave-one-speaker-out fold with its own run folder. Folders (and
    the records in them) carry the held-out speaker's pseudonym, never the
    name, even when reports show names."""
    return [(fold, run_dir / f"fold-{namer.pseudonym(fold.test[0])}") for fold in folds]


def combine_loso(cfg: ModelConfig, manifest: Manifest, run_dir: Path, folds: list[ModelRun], namer: Namer) -> ModelRun:
    """The folds as one model run: every clip predicted by the fold model
    that never heard its speaker."""
    tests, vals = [r.test for r in folds], [r.val for r in folds]
    history = [{"fold": Path(r.run_dir).name.removeprefix("fold-"), **h} for r in folds for h in r.history]
    test = pooled(tests)
    m = metrics(test, manifest.groups)
    m["fold_top1"] = fold_accuracies(tests)
    run = Run(run_dir)
    run.write_metrics(_named(m, namer))
    run.save_predictions({"test": test, "val": pooled(vals)}, namer)
    return ModelRun(cfg.name, cfg, run_dir, test, pooled(vals), m, sum(r.train_seconds for r in folds), history, folds[0].weights)


def fold_accuracies(tests: list[Predictions]) -> dict[str, float]:
    """Top-1 of each fold, keyed by its held-out speaker."""
    return {t.rows[0]["speaker"]: float(np.mean(t.scores.argmax(1) == t.y)) for t in tests}


def pool_baseline(folds: list[tuple[dict, Predictions]], manifest: Manifest, namer: Namer) -> tuple[dict, Predictions]:
    """A baseline fitted on every fold, as one entry: metrics of the pooled
    predictions, each fold's top-1 and regularisation strength."""
    entries, tests = [f[0] for f in folds], [f[1] for f in folds]
    test = pooled(tests)
    m = metrics(test, manifest.groups)
    entry = {**entries[0], **{k: m[k] for k in ("top1", "top3", "macro_f1", "top1_ci95", "top1_ci95_speakers", "per_group")}}
    entry["C"] = Counter(e["C"] for e in entries).most_common(1)[0][0]  # the strength most folds chose on their validation speakers
    entry["fold_top1"] = namer.keys(fold_accuracies(tests))
    return entry, test
