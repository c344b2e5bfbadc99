"""Each augmentation of the effect table: deterministic under a seed, a new
draw under another, the length and pitch it should give (speed moves both,
tempo only the length, pitch only the voice's pitch, the vocal tract only
its formants), and SpecAugment on cached frames in training."""

from __future__ import annotations

import numpy as np
import pytest

from phonemekit.data.augment import AUGMENTATIONS, augmentation, change_speed, change_tempo, pitch_shift, vocal_tract

SR = 16_000


def vowel(f0: float = 200.0, seconds: float = 0.4, formant: float = 700.0) -> np.ndarray:
    """A glottal pulse train through one resonance: a voice with a pitch and a formant."""
    from scipy import signal

    n = int(seconds * SR)
    pulses = np.zeros(n)
    pulses[:: int(SR / f0)] = 1.0
    r = np.exp(-np.pi * 120 / SR)
    b, a = [1.0], [1.0, -2 * r * np.cos(2 * np.pi * formant / SR), r * r]
    return (0.3 * signal.lfilter(b, a, pulses) / 10).astype(np.float32)


def f0(x: np.ndarray) -> float:
    """The pitch by autocorrelation (60-500 Hz)."""
    x = x - x.mean()
    ac = np.correlate(x, x, "full")[len(x) - 1 :]
    lo, hi = SR // 500, SR // 60
    return SR / (lo + int(np.argmax(ac[lo:hi])))


def spectral_peak(x: np.ndarray) -> float:
    """Where the smoothed spectrum peaks: the formant's frequency."""
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    smooth = np.convolve(spec, np.ones(40) / 40, "same")
    return float(np.argmax(smooth)) * SR / len(x)


@pytest.mark.parametrize("name", [*AUGMENTATIONS, "combined"])
def test_each_augmentation_is_a_function_of_its_seed(name):
    x = vowel()
    fn = augmentation(name)
    a, b = fn(x, np.random.default_rng(3)), fn(x, np.random.default_rng(3))
    assert a.dtype == np.float32 and np.isfinite(a).all() and np.abs(a).max() > 0
    np.testing.assert_array_equal(a, b)
    draws = [fn(x, np.random.default_rng(seed)) for seed in range(6)]
    assert len({y.tobytes() for y in draws}) > 1  # other seeds, other draws (speed and tempo have two factors)
    assert all(0.85 * len(x) <= len(y) <= 1.5 * len(x) for y in draws)  # speed and tempo by at most 10%, a room's short tail


def test_speed_moves_pitch_and_length_tempo_only_the_length():
    x = vowel(200)
    fast = change_speed(x, 1.1)
    assert len(fast) == pytest.approx(len(x) / 1.1, abs=2) and f0(fast) == pytest.approx(220, rel=0.03)
    slow = change_tempo(x, 0.9, seed=1)
    assert len(slow) == pytest.approx(len(x) / 0.9, rel=0.01) and f0(slow) == pytest.approx(200, rel=0.03)


def test_pitch_shift_keeps_the_formant_and_the_vocal_tract_keeps_the_pitch():
    x = vowel(150, formant=800)
    up = pitch_shift(x, 4, seed=1)
    assert len(up) == len(x) and f0(up) == pytest.approx(150 * 2 ** (4 / 12), rel=0.04)
    assert spectral_peak(up) == pytest.approx(spectral_peak(x), rel=0.12)
    child = vocal_tract(x, 1.2, seed=1)
    assert len(child) == len(x) and f0(child) == pytest.approx(150, rel=0.04)
    assert spectral_peak(child) == pytest.approx(1.2 * spectral_peak(x), rel=0.1)


def test_unknown_augmentation_names_the_known_ones():
    with pytest.raises(KeyError, match="vtlp"):
        augmentation("echo")


def test_an_unvoiced_clip_survives_pitch_and_tract_changes():
    noise = (0.1 * np.random.default_rng(0).standard_normal(4000)).astype(np.float32)  # an /s/: no pitch to move
    for y in (pitch_shift(noise, 3), vocal_tract(noise, 1.15), change_tempo(noise, 1.1)):
        assert np.isfinite(y).all() and len(y) > 0.85 * len(noise)


def test_spec_augment_training_is_seeded_and_changes_what_is_learned(tmp_path):
    from phonemekit.config import EncoderConfig, HeadConfig, ModelConfig, TrainConfig
    from phonemekit.data.manifest import load_manifest, prepare
    from phonemekit.data.splits import speaker_disjoint
    from phonemekit.runs import Run
    from phonemekit.training.loop import train_model

    from .conftest import make_corpus

    make_corpus(tmp_path / "rec")
    prepare(tmp_path / "rec", tmp_path / "data")
    m = load_manifest(tmp_path / "data")
    split = speaker_disjoint(m.speakers, m.groups)
    rows = lambda part: [r for r in m.rows if r["speaker"] in part]  # noqa: E731
    weights = {}
    for name, spec in (("plain", False), ("masked", True), ("masked-again", True)):
        cfg = ModelConfig(name=name, encoder=EncoderConfig(family="fbank", source="fbank"), head=HeadConfig("mlp", {"hidden": [16]}),
                          train=TrainConfig(epochs=2, batch_size=8, spec_augment=spec))  # fmt: skip
        train_model(cfg, m, rows(split.train), rows(split.val), tmp_path / name, cache_root=tmp_path / "cache")
        weights[name] = Run(tmp_path / name).load().state_dict()
    same = lambda a, b: all(np.array_equal(weights[a][k].numpy(), weights[b][k].numpy()) for k in weights[a])  # noqa: E731
    assert same("masked", "masked-again") and not same("plain", "masked")
