"""The sentence tagger: which phones it targets, what it reads, and that it
learns from a phone's neighbours."""

from __future__ import annotations

import numpy as np
import pytest

from phonemekit.data.segments import segment_row
from phonemekit.errors import ConfigError
from phonemekit.models.tagger import TaggerConfig
from phonemekit.training.context import Sentence, fit, load_tagger, predictions, sentence

UTT = {"path": "WAVE/S1/u1.WAV", "speaker": "s1", "sha256": "ab" * 32, "duration": 2.0, "group": "child", "split": "train", "utt": "u1"}
RECORD = {"words": [["cat", 0.2, 0.62, [["K", 0.2, 0.3, -1.0], ["AE", 0.3, 0.5, -2.0], ["T", 0.5, 0.62, -3.0]]],
                    ["sat", 0.7, 1.1, [["S", 0.7, 0.85, -1.0], ["AE", 0.85, 1.0, -2.0], ["T", 1.0, 1.1, -3.0]]]]}  # fmt: skip


def _examples(context: float = 0.05) -> dict[str, dict]:
    """The manifest rows of two of the six phones (the others disagreed with the canonical ones, say)."""
    rows = [segment_row(UTT, 0.3 - context, 0.5 + context, "a_ae"), segment_row(UTT, 0.7 - context, 0.85 + context, "s")]
    return {r["sha256"]: r for r in rows}


def test_a_sentence_targets_the_manifest_rows_and_keeps_the_other_phones_as_context():
    frames = np.random.default_rng(0).normal(size=(100, 3, 8)).astype(np.float32)  # 2 s at 50 frames/s, 3 layers of 8
    s = sentence(UTT, RECORD, frames, 50.0, _examples(), {"a_ae": 0, "s": 1}, 0.05)
    assert s.phones.shape == (6, 3, 16) and s.positions.shape == (6, 4)
    assert s.targets.tolist() == [-1, 0, -1, 1, -1, -1] and [r["label"] for r in s.examples] == ["a_ae", "s"]
    np.testing.assert_allclose(s.phones[1, :, :8], frames[15:25].mean(0), atol=1e-3)  # AE: 0.3-0.5 s, its own span only
    np.testing.assert_allclose(s.phones[1, :, 8:], frames[15:25].std(0), atol=1e-3)
    assert s.positions[:, 0].tolist() == [1, 0, 0, 1, 0, 0] and s.positions[:, 1].tolist() == [0, 0, 1, 0, 0, 1]
    np.testing.assert_allclose(s.positions[1, 2:], [0.2, 0.1 / 0.42], atol=1e-6)
    # The aligner's phone names are never read: renamed phones give the same inputs.
    renamed = {"words": [[w, a, b, [["ZZ", p0, p1, sc] for _, p0, p1, sc in ps]] for w, a, b, ps in RECORD["words"]]}
    t = sentence(UTT, renamed, frames, 50.0, _examples(), {"a_ae": 0, "s": 1}, 0.05)
    assert np.array_equal(s.phones, t.phones) and np.array_equal(s.positions, t.positions) and np.array_equal(s.targets, t.targets)
    assert sentence(UTT, RECORD, frames, 50.0, {}, {"a_ae": 0}, 0.05) is None  # no examples: nothing to learn from


def _toy(n: int, rng: np.random.Generator) -> list[Sentence]:
    """Sentences whose phones are noise except a marker that names the class
    of the phone after it: only the neighbour tells a phone's class."""
    items = []
    for _ in range(n):
        p = int(rng.integers(4, 9))
        x = rng.normal(size=(p, 2, 6)).astype(np.float32)
        y = rng.integers(0, 3, size=p)
        for i in range(1, p):
            x[i - 1, :, y[i]] += 3.0
        targets = np.concatenate([[-1], y[1:]])
        rows = [{"speaker": "s", "sha256": f"{len(items)}-{i}", "label": str(y[i])} for i in range(1, p)]
        items.append(Sentence({"speaker": "s"}, x.astype(np.float16), np.zeros((p, 4), np.float32), targets, rows))
    return items


def test_the_tagger_learns_what_only_the_neighbours_say():
    rng = np.random.default_rng(0)
    train, val = _toy(300, rng), _toy(60, rng)
    model, history = fit(train, val, 3, TaggerConfig(hidden=32, epochs=12, patience=12, batch=16, dropout=0.0, lr=3e-3))
    p = predictions(model, val, ["0", "1", "2"])
    top1 = float((p.scores.argmax(1) == p.y).mean())
    assert top1 > 0.9 and top1 == max(h["val_top1"] for h in history)  # chance is 1/3: the phone's own frames are noise
    assert len(p.rows) == len(p.y) == sum(len(s.examples) for s in val)


def test_a_saved_tagger_loads_and_scores_as_trained(tmp_path):
    import json

    from safetensors.torch import save_file

    from phonemekit.errors import DataError

    rng = np.random.default_rng(1)
    cfg = TaggerConfig(hidden=16, epochs=2, patience=2)
    model, _ = fit(_toy(40, rng), _toy(10, rng), 3, cfg)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "tagger.safetensors"))
    (tmp_path / "tagger.json").write_text(json.dumps({"tagger": cfg.to_dict(), "labels": ["0", "1", "2"]}))
    loaded, labels = load_tagger(tmp_path)
    items = _toy(5, rng)
    np.testing.assert_allclose(predictions(loaded, items, labels).scores, predictions(model, items, labels).scores, atol=1e-6)
    (tmp_path / "tagger.json").write_text(json.dumps({"tagger": {**cfg.to_dict(), "hidden": 3}, "labels": ["0", "1", "2"]}))
    with pytest.raises(DataError, match="no usable phone tagger"):
        load_tagger(tmp_path)
    (tmp_path / "tagger.json").write_text(json.dumps({"tagger": cfg.to_dict(), "labels": ["0", "1"]}))  # labels of another model
    with pytest.raises(DataError, match="no usable phone tagger"):
        load_tagger(tmp_path)
    with pytest.raises(DataError, match="no usable phone tagger"):
        load_tagger(tmp_path / "missing")


@pytest.mark.parametrize("bad", [{"hidden": 3}, {"hidden": 0}, {"layers": 0}, {"dropout": 1.0}, {"lr": 0}, {"epochs": 0}, {"batch": 0}])
def test_bad_tagger_settings_are_refused(bad):
    with pytest.raises(ConfigError):
        TaggerConfig(**bad)
