from __future__ import annotations

import time

import numpy as np
import soundfile as sf

from phonemekit.data.demo import VOICES, build_demo_corpus
from phonemekit.data.inventory import SOUNDS


def test_inventory_covers_the_phonics_set():
    labels = {s.label for s in SOUNDS}
    assert len(labels) == len(SOUNDS) >= 37
    assert {"th", "th_voiced", "ng", "zh", "ch", "j", "sh"} <= labels
    assert len({v.speaker for v in VOICES}) >= 16
    assert {v.group for v in VOICES} == {"child", "adult"}


def test_demo_corpus_is_deterministic_and_spoken(tmp_path):
    # Eight speakers reach spk08 (variant f2), whose breath noise comes from
    # eSpeak's clock-seeded generator unless every clip seeds it.
    kw = dict(speakers=8, takes=2, seed=7, labels=["sh", "b", "a_ae"])
    s = build_demo_corpus(tmp_path / "a", **kw)
    time.sleep(1.1)  # a different clock second for the second build
    build_demo_corpus(tmp_path / "b", **kw)
    files = sorted((tmp_path / "a" / "recordings").rglob("*.flac"))
    assert s["clips"] == len(files) == 8 * 3 * 2 and any("spk08" in str(f) for f in files)
    for f in files:
        other = tmp_path / "b" / f.relative_to(tmp_path / "a")
        assert f.read_bytes() == other.read_bytes()
        x, sr = sf.read(f)
        assert sr == 16000 and 0.15 < len(x) / sr < 2.0 and np.abs(x).max() > 0.2
    # Phoneme input, not letters: "sh" held is one short sound, not "ess aitch".
    sh, _ = sf.read(files[[f.parent.name for f in files].index("sh")])
    assert len(sh) / 16000 < 1.2
