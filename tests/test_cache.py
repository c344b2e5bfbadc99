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
