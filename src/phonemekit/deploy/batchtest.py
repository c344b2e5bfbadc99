"""Batch testing: classify every file of a folder or manifest with a torch
checkpoint or an ONNX file, write per-file predictions, report accuracy."""

from __future__ import annotations

import csv
import functools
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from phonemekit.data.audio import AUDIO_EXTENSIONS, load_audio
from phonemekit.data.manifest import is_prepared, load_manifest
from phonemekit.deploy import bundled
from phonemekit.deploy.export import torch_probs
from phonemekit.deploy.runtime import Classifier
from phonemekit.errors import AudioValidationError, DataError
from phonemekit.evaluation.enrolment import SpeakerProfile
from phonemekit.fileio import atomic_open, is_regular, walk_files, write_json
from phonemekit.runs import Run

log = logging.getLogger(__name__)

Predictor = Callable[[list[np.ndarray]], np.ndarray]


def load_predictor(model: str | Path, trusted: set[str] | None = None, profile: str | Path | None = None) -> tuple[list[str], Predictor, str]:
    """(labels, waves -> probs, kind) for an .onnx file or a run folder;
    with a speaker profile (`phonemekit enrol`), adapted to that speaker."""
    model = bundled.resolve(model)  # a bundled model by name: its exported file
    if model.suffix == ".onnx":
        clf = Classifier.load(model, trusted=trusted)
        if profile is not None:
            clf = clf.with_profile(SpeakerProfile.load(profile))
        return clf.labels, clf.probs, "onnx"
    if profile is not None:
        raise DataError(f"a speaker profile applies to an exported model; export {model} (`phonemekit export`) and test its .e2e.onnx")
    m = Run(model).load(with_encoder=True, trusted=trusted)
    return m.labels, lambda waves: torch_probs(m, waves), "torch"


def list_inputs(data: str | Path, labels: list[str]) -> list[tuple[Path, str | None, Callable[[], np.ndarray]]]:
    """(file, expected label, how to read its samples) for the clips of a
    prepared dataset (segments of utterances included), or every audio file
    under a folder (the expected label is the parent folder's name when it
    is a known label)."""
    data = Path(data)
    if is_prepared(data):  # a plain folder that happens to hold a manifest.jsonl is still a folder of clips
        m = load_manifest(data)
        return [(m.audio_path(r), r["label"], functools.partial(m.samples, r)) for r in m.rows]
    if data.is_file():
        return [(data, None, functools.partial(_samples, data))]
    if not data.is_dir():
        raise DataError(f"{data} is neither a manifest, a folder nor an audio file")
    files = sorted(p for p, _ in walk_files(data) if p.suffix.lower() in AUDIO_EXTENSIONS and is_regular(p))
    return [(p, p.parent.name if p.parent.name in labels else None, functools.partial(_samples, p)) for p in files]


def _samples(path: Path) -> np.ndarray:
    return load_audio(path).samples


def enrolment_clips(items: list[tuple]) -> tuple[list[np.ndarray], list[str], list[dict]]:
    """(waves, labels, skipped) of the labelled clips among `list_inputs`'s items:
    a file of no known sound or one that does not read is skipped with its reason."""
    waves, labels, skipped = [], [], []
    for path, expected, read in items:
        if expected is None:
            skipped.append({"path": str(path), "reason": "not in a folder named by a sound the model knows"})
            continue
        try:
            waves.append(read())
            labels.append(expected)
        except AudioValidationError as e:
            skipped.append({"path": str(path), "reason": e.reason})
            log.warning("skipping %s", e)
    return waves, labels, skipped


def run_batch(labels: list[str], predict: Predictor, items: list[tuple], top_k: int = 3, progress=None) -> tuple[list[dict], dict]:
    rows, failed = [], []
    task = progress.add_task("classifying", total=len(items)) if progress else None
    for path, expected, read in items:
        try:
            wave = read()
        except AudioValidationError as e:
            failed.append({"path": str(path), "reason": e.reason})
            log.warning("skipping %s", e)
        else:
            p = predict([wave])[0]
            best = np.argsort(-p)[:top_k]
            row = {
                "path": str(path),
                "predicted": labels[best[0]],
                "prob": round(float(p[best[0]]), 4),
                "top_k": " ".join(f"{labels[i]}:{p[i]:.3f}" for i in best),
                "expected": expected or "",
            }
            if expected is not None:
                row["correct"] = int(labels[best[0]] == expected)
                row["expected_rank"] = int((p > p[labels.index(expected)]).sum()) + 1 if expected in labels else ""
            rows.append(row)
        if progress:
            progress.advance(task)
    scored = [r for r in rows if "correct" in r]
    summary = {
        "files": len(items),
        "classified": len(rows),
        "failed": failed,
        "accuracy": float(np.mean([r["correct"] for r in scored])) if scored else None,
        "labelled": len(scored),
    }
    return rows, summary


def write_predictions(rows: list[dict], summary: dict, out: Path) -> None:
    if out.suffix == ".json":
        write_json(out, {"summary": summary, "predictions": rows})
        return
    fields = ["path", "predicted", "prob", "top_k", "expected", "correct", "expected_rank"]
    with atomic_open(out, "w") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
