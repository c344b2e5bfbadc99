"""The bundled `children` model: in the package, loaded by name offline,
exported to ONNX once on first use, usable wherever a model is asked for."""

from __future__ import annotations

from typer.testing import CliRunner

from phonemekit.cli import app
from phonemekit.data.inventory import SOUNDS
from phonemekit.deploy import bundled
from phonemekit.deploy.runtime import Classifier

from .conftest import tone


def test_children_is_bundled_with_its_card():
    assert "children" in bundled.available()
    card = bundled.card("children")
    assert "speechocean762" in card and "CC BY 4.0" in card and "| child |" in card


def test_classifier_loads_children_by_name_and_exports_it_once():
    clf = Classifier.load("children")
    assert clf.labels == sorted(s.label for s in SOUNDS) and clf.form == "e2e" and clf.calibration is not None
    path = bundled.onnx_path("children")
    mtime = path.stat().st_mtime_ns
    top = clf.classify(tone(220, 0.4))
    assert len(top) == 3 and all(lab in clf.labels for lab, _ in top) and abs(sum(p for _, p in clf.classify(tone(220, 0.4), top_k=39)) - 1) < 1e-3
    v = clf.verdict(tone(220, 0.4), "sh")
    assert v["expected"] == "sh" and v["calibrated"] and isinstance(v["accepted"], bool)
    Classifier.load("children")
    assert bundled.onnx_path("children").stat().st_mtime_ns == mtime  # not exported again


def test_test_batch_takes_children_by_name(tmp_path):
    from phonemekit.data.audio import write_audio

    for label, f in (("sh", 1900.0), ("m", 200.0)):
        write_audio(tmp_path / "clips" / label / "a.wav", tone(f, 0.5))
    r = CliRunner().invoke(app, ["test-batch", "children", str(tmp_path / "clips"), "--out", str(tmp_path / "p.csv")])
    assert r.exit_code == 0, r.output
    assert "2/2 files classified" in r.output and len((tmp_path / "p.csv").read_text().splitlines()) == 3


def test_an_unknown_name_is_one_clear_error():
    import pytest

    from phonemekit.errors import DataError

    with pytest.raises(DataError, match="no ONNX model at nobody"):
        Classifier.load("nobody")
