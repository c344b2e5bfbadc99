from __future__ import annotations

import numpy as np
import pytest

from phonemekit.config import EncoderConfig
from phonemekit.data.cache import FeatureCache, extract
from phonemekit.models.encoders import build_encoder


def _files(cache_dir):
    return {p.relative_to(cache_dir): p.read_bytes() for p in sorted(cache_dir.rglob("*.npy"))}


@pytest.fixture
def wavlm_tiny(tiny_model_dirs):
    return build_encoder(EncoderConfig(family="wavlm", source=str(tiny_model_dirs["wavlm"])))


def test_extract_then_cache_hits(tmp_path, prepared, wavlm_tiny):
    r1 = extract(prepared, wavlm_tiny, tmp_path / "cache", batch_size=4)
    assert r1.computed == len(prepared.rows) and r1.cached == 0 and not r1.failed
    r2 = extract(prepared, wavlm_tiny, tmp_path / "cache", batch_size=4)
    assert r2.computed == 0 and r2.cached == len(prepared.rows)
    feats = FeatureCache(tmp_path / "cache", wavlm_tiny.spec).get(prepared.rows[0]["sha256"])
    assert feats.ndim == 2 and feats.shape[1] == 32
    assert feats.shape[0] == int(wavlm_tiny.output_lengths(__import__("torch").tensor([int(prepared.rows[0]["duration"] * 16000)]))[0])


def test_renamed_file_is_not_recomputed(tmp_path, corpus, wavlm_tiny):
    from phonemekit.data.manifest import load_manifest, prepare

    prepare(corpus, tmp_path / "data")
    extract(load_manifest(tmp_path / "data"), wavlm_tiny, tmp_path / "cache")
    (corpus / "s1" / "aa" / "t0.wav").rename(corpus / "s1" / "aa" / "renamed.wav")
    prepare(corpus, tmp_path / "data")
    r = extract(load_manifest(tmp_path / "data"), wavlm_tiny, tmp_path / "cache")
    assert r.computed == 0


def test_changed_encoder_never_reuses_features(tmp_path, prepared, wavlm_tiny, tiny_model_dirs):
    extract(prepared, wavlm_tiny, tmp_path / "cache")
    other = build_encoder(EncoderConfig(family="wavlm", source=str(tiny_model_dirs["wavlm"]), layer=0))
    r = extract(prepared, other, tmp_path / "cache")
    assert r.computed == len(prepared.rows)


def test_changed_front_end_code_never_reuses_features(tmp_path, prepared, monkeypatch):
    """A weightless front end has no weights to fingerprint: its version
    does that job, so features cached by older code are recomputed."""
    from phonemekit.models.encoders.fbank import FbankEncoder

    first = extract(prepared, build_encoder(EncoderConfig(family="fbank", source="fbank")), tmp_path / "cache")
    monkeypatch.setattr(FbankEncoder, "front_end", FbankEncoder.front_end + "-next")
    again = extract(prepared, build_encoder(EncoderConfig(family="fbank", source="fbank")), tmp_path / "cache")
    assert first.computed == again.computed == len(prepared.rows) and first.cache_dir != again.cache_dir


def test_resume_after_interruption_gives_identical_files(tmp_path, prepared, wavlm_tiny):
    extract(prepared, wavlm_tiny, tmp_path / "clean", batch_size=4)

    calls = {"n": 0}
    real_forward = wavlm_tiny.forward

    def dying_forward(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-run
        return real_forward(*a, **k)

    wavlm_tiny.forward = dying_forward
    with pytest.raises(KeyboardInterrupt):
        extract(prepared, wavlm_tiny, tmp_path / "resumed", batch_size=4)
    wavlm_tiny.forward = real_forward
    partial = _files(tmp_path / "resumed")
    assert 0 < len(partial) < len(prepared.rows)
    assert not list((tmp_path / "resumed").rglob("*.tmp"))
    r = extract(prepared, wavlm_tiny, tmp_path / "resumed", batch_size=4)
    assert r.cached == len(partial)
    assert _files(tmp_path / "resumed") == _files(tmp_path / "clean")


def test_bad_clip_is_skipped_not_fatal(tmp_path, prepared, wavlm_tiny):
    victim = prepared.rows[5]
    prepared.audio_path(victim).write_bytes(b"corrupted after prepare")
    r = extract(prepared, wavlm_tiny, tmp_path / "cache")
    assert [f["path"] for f in r.failed] == [victim["path"]]
    assert r.computed == len(prepared.rows) - 1


def test_cache_holds_features_not_audio(tmp_path, prepared):
    enc = build_encoder(EncoderConfig(family="fbank", source="fbank"))
    extract(prepared, enc, tmp_path / "cache")
    for p in (tmp_path / "cache").rglob("*.npy"):
        assert np.load(p).shape[1] == 160


def _entries(cache_dir):
    return sorted(cache_dir.rglob("*.npy"))


def test_a_truncated_entry_is_recomputed_not_counted_cached(tmp_path, prepared):
    enc = build_encoder(EncoderConfig(family="fbank", source="fbank"))
    first = extract(prepared, enc, tmp_path / "cache")
    entry = _entries(tmp_path / "cache")[3]
    whole = entry.read_bytes()
    entry.write_bytes(whole[: len(whole) // 3])
    again = extract(prepared, enc, tmp_path / "cache")
    assert (again.computed, again.cached) == (1, first.computed - 1) and entry.read_bytes() == whole


@pytest.mark.parametrize("poison", ["nan", "wrong_width", "int_dtype"])
def test_a_poisoned_cache_is_repaired_before_training(tmp_path, prepared, poison):
    """Well-formed .npy entries that are not this encoder's features: training
    recomputes them (its extraction checks every entry) and trains on the
    real features; a reader that does not extract gets one error naming the entry."""
    from phonemekit.config import HeadConfig, ModelConfig, TrainConfig
    from phonemekit.errors import DataError
    from phonemekit.training.experiment import train_all

    enc = build_encoder(EncoderConfig(family="fbank", source="fbank"))
    extract(prepared, enc, tmp_path / "cache")
    good = {p: p.read_bytes() for p in _entries(tmp_path / "cache")}
    width = np.load(next(iter(good))).shape[1]
    bad = {"nan": np.full((20, width), np.nan, np.float32), "wrong_width": np.ones((20, 7), np.float32), "int_dtype": np.ones((20, width), np.int64)}[poison]
    for p in good:
        np.save(p, bad)
    cache = FeatureCache(tmp_path / "cache", enc.spec)
    with pytest.raises(DataError, match=f"cached features .*{next(iter(good)).name}"):
        cache.get(next(iter(good)).stem)
    cfg = ModelConfig(
        name="toy", encoder=EncoderConfig(family="fbank", source="fbank"), head=HeadConfig("mlp", {"hidden": [16]}), train=TrainConfig(epochs=2, batch_size=8)
    )
    section = train_all(prepared, [cfg], tmp_path / "out", leaky=False, cache_root=tmp_path / "cache")
    assert {p: p.read_bytes() for p in good} == good  # every entry recomputed, byte for byte
    from phonemekit.privacy import Namer
    from phonemekit.runs import Run

    namer = Namer.of(prepared)
    held_out = {r["sha256"] for r in prepared.rows if namer(r["speaker"]) in section["split"]["test_speakers"]}
    tested = {r["sha256"] for r in Run(tmp_path / "out" / "models" / "toy").predictions("test").rows}
    assert held_out and tested == held_out  # every held-out clip scored on its real features; none dropped as broken
