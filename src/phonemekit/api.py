"""The small public API, re-exported by `phonemekit`: prepare a recordings
folder, train a preset, load a run, export it, and classify with the
exported file (`Classifier`, which needs only ONNX Runtime)."""

from __future__ import annotations

from pathlib import Path

from phonemekit.data.manifest import MANIFEST, load_manifest
from phonemekit.data.manifest import prepare as _prepare
from phonemekit.deploy.export import export_run, parity_clips
from phonemekit.deploy.runtime import Classifier
from phonemekit.models.model import PhonemeModel
from phonemekit.models.presets import DEFAULT_MODEL, model_config
from phonemekit.runs import Run
from phonemekit.training.experiment import train_all

__all__ = ["Classifier", "assess_word", "export", "load", "prepare", "train"]


def prepare(root: str | Path, out: str | Path, **kw) -> dict:
    """Validate `root/<speaker>/<label>/*.wav` and write `out/manifest.jsonl`;
    returns the summary (clips kept, rejected and why)."""
    return _prepare(Path(root), Path(out), **kw)


def train(data: str | Path, out: str | Path, model: str = DEFAULT_MODEL, *, epochs: int | None = None, **kw) -> Run:
    """Train a preset on a prepared folder (or manifest), evaluate it on
    held-out speakers, and return its run (`OUT/models/MODEL`)."""
    data = Path(data)
    manifest = load_manifest(data if data.suffix == ".jsonl" else data / MANIFEST)
    cfg = model_config(model, epochs=epochs)
    train_all(manifest, [cfg], out, leaky=False, **kw)
    return Run(Path(out) / "models" / model)


def load(run: str | Path, *, with_encoder: bool = True) -> PhonemeModel:
    """A trained model from its run folder, its hash verified."""
    return Run(run).load(with_encoder=with_encoder)


def export(run: str | Path, *, data: str | Path | None = None, clips: int = 32, **kw) -> dict:
    """Export a run to ONNX (head and end-to-end forms, int8 where it pays)
    with a parity check on real clips of its training manifest (or `data`)."""
    return export_run(run, parity_clips(run, data, clips), **kw)


def assess_word(audio: str | Path, *, word: str | None = None, phones: str | list[str] | None = None, text: str | None = None,
                mode: str = "segment", model: str | Path = "children", variants: str | Path | None = None) -> dict:  # fmt: skip
    """A verdict for every sound of `word` (or of a sentence, `text`, or of
    `phones`) in a recording: correct, substituted (with the sound heard) or
    missing; see `phonemekit.assess`. `variants`: a JSON file of sounds
    accepted in place of others (default: the bundled accents table)."""
    from phonemekit.assess import assess_expected
    from phonemekit.assess.lexicon import read_variants
    from phonemekit.config import AudioConfig
    from phonemekit.data.audio import load_audio

    clf = Classifier.load(model)
    samples = load_audio(audio, AudioConfig(max_seconds=30)).samples
    table = read_variants(variants, clf.labels) if variants else None
    return assess_expected(clf, samples, word=word, phones=phones, text=text, mode=mode, variants=table)
