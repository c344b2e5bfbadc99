"""Honest numbers: speaker-resampled intervals, the logistic-regression
baseline on the same split, standardised pooled features, the layer mix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from phonemekit.config import EncoderConfig, HeadConfig, ModelConfig, TrainConfig
from phonemekit.data.cache import extract
from phonemekit.data.splits import speaker_disjoint
from phonemekit.evaluation.baseline import fit_baseline
from phonemekit.evaluation.metrics import bootstrap_ci, mcnemar_exact, metrics, paired, speaker_bootstrap_ci
from phonemekit.evaluation.predict import predict
from phonemekit.models.encoders import build_encoder
from phonemekit.runs import Run
from phonemekit.training.loop import train_model


def test_speaker_interval_is_wider_than_the_clip_interval_when_speakers_differ():
    rng = np.random.default_rng(0)
    speakers = np.repeat(["a", "b", "c", "d"], 100)
    correct = (rng.random(400) < np.repeat([0.95, 0.55, 0.9, 0.7], 100)).astype(float)
    clip, spk = bootstrap_ci(correct), speaker_bootstrap_ci(correct, speakers)
    assert clip[0] <= correct.mean() <= clip[1] and spk[0] <= correct.mean() <= spk[1]
    assert (spk[1] - spk[0]) > 1.5 * (clip[1] - clip[0])  # four very different speakers: far less certain than 400 clips suggest
    # Identical speakers: resampling them changes nothing.
    same = np.tile([1.0, 0.0, 1.0, 1.0], 100)
    assert speaker_bootstrap_ci(same, speakers) == pytest.approx([0.75, 0.75])
    assert np.isnan(speaker_bootstrap_ci(correct, np.repeat("a", 400))).all()


def test_mcnemar_is_the_exact_binomial_test():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(10, 0) == pytest.approx(2 * 0.5**10)
    assert mcnemar_exact(3, 3) == pytest.approx(1.0)
    a, b = np.array([1, 1, 1, 1, 0.0]), np.array([0, 0, 0, 1, 0.0])
    r = paired(a, b, np.array(["x", "x", "y", "y", "y"]))
    assert r["top1_diff"] == pytest.approx(0.6) and r["only_first_right"] == 3 and r["only_second_right"] == 0
    assert r["ci_resamples"] == "speakers" and r["mcnemar_p"] == pytest.approx(0.25)


def _parts(m):
    s = speaker_disjoint(m.speakers, m.groups)
    return {p: [r for r in m.rows if r["speaker"] in getattr(s, p)] for p in ("train", "val", "test")}


def test_logistic_baseline_on_the_same_cached_features(tmp_path, prepared):
    parts = _parts(prepared)
    enc = build_encoder(EncoderConfig(family="fbank", source="fbank"))
    extract(prepared, enc, tmp_path / "cache")
    base = fit_baseline(prepared, enc.spec, tmp_path / "cache", parts["train"], parts["val"])
    preds = base.predict(tmp_path / "cache", parts["test"])
    assert base.C in (0.01, 0.1, 1.0)
    assert [r["sha256"] for r in preds.rows] == [r["sha256"] for r in parts["test"]]
    assert np.allclose(np.exp(preds.scores).sum(1), 1, atol=1e-4)
    assert metrics(preds)["top1"] >= 0.9  # the toy classes are tones: linearly separable when pooled


def test_mlp_standardises_with_training_statistics(tmp_path, prepared):
    """The statistics come from the training clips, travel in the checkpoint,
    and make the head invariant to a global gain on its input features."""
    parts = _parts(prepared)
    cfg = ModelConfig(
        name="toy-mlp",
        encoder=EncoderConfig(family="fbank", source="fbank"),
        head=HeadConfig(kind="mlp", options={"hidden": [32]}),
        train=TrainConfig(epochs=3, batch_size=8),
    )
    res = train_model(cfg, prepared, parts["train"], parts["val"], tmp_path / "run", cache_root=tmp_path / "cache")
    std = res.model.head.standardize
    assert not torch.allclose(std.mean, torch.zeros_like(std.mean)) and not torch.allclose(std.inv_std, torch.ones_like(std.inv_std))
    again = Run(tmp_path / "run").load()
    assert torch.equal(again.head.standardize.mean, std.mean) and torch.equal(again.head.standardize.inv_std, std.inv_std)


def test_weighted_layer_mix_trains_and_reports_its_weights(tmp_path, prepared):
    parts = _parts(prepared)
    cfg = ModelConfig(
        name="toy-mix",
        encoder=EncoderConfig(family="whisper", source="random:tiny", layer="weighted"),
        head=HeadConfig(kind="mlp", options={"hidden": [32]}),
        train=TrainConfig(epochs=4, batch_size=8, lr=1e-2),
    )
    res = train_model(cfg, prepared, parts["train"], parts["val"], tmp_path / "run", cache_root=tmp_path / "cache")
    w = res.model.layer_mix.weights()
    assert len(w) == 3 and sum(w) == pytest.approx(1.0) and max(w) - min(w) > 1e-4  # learned away from uniform
    again = Run(tmp_path / "run").load(with_encoder=True)
    assert again.layer_mix.weights() == pytest.approx(w)
    p = predict(again, prepared, parts["test"], cache_root=tmp_path / "cache")
    wave_p = again.classify_waves(*_waves(prepared, parts["test"][:2]))
    assert np.allclose(wave_p.exp().detach().numpy(), p.probs[:2], atol=1e-4)  # cached features == waveform path


def _waves(m, rows):
    from phonemekit.data.audio import load_audio
    from phonemekit.data.features import collate_waves

    return collate_waves([load_audio(m.audio_path(r)).samples for r in rows])
