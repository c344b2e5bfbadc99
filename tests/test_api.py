"""The public API: prepare, train, export and classify in a few lines, and
`import phonemekit` stays light."""

from __future__ import annotations

import subprocess
import sys

import phonemekit

from .conftest import make_corpus


def test_prepare_train_export_classify(tmp_path):
    make_corpus(tmp_path / "rec")
    summary = phonemekit.prepare(tmp_path / "rec", tmp_path / "data")
    assert summary["clips"] == 45
    run = phonemekit.train(tmp_path / "data", tmp_path / "runs", model="fbank-mlp", epochs=2, cache_root=tmp_path / "cache")
    assert run.name == "fbank-mlp" and run.metrics["n"] > 0
    assert phonemekit.load(run.path).labels == ["aa", "ee", "sh"]
    rec = phonemekit.export(run.path, forms=("e2e",), int8=False)
    assert rec["files"]["e2e"]["parity"]["top1_agreement"] == 1.0
    top = phonemekit.Classifier.load(run.onnx("e2e")).classify_file(tmp_path / "rec" / "s1" / "sh" / "t0.wav")
    assert len(top) == 3 and {label for label, _ in top} == {"aa", "ee", "sh"}


def test_import_is_light():
    code = "import sys, phonemekit; print('torch' in sys.modules, phonemekit.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", phonemekit.__version__]
