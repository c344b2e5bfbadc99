"""What needs hardware or the network: CUDA runs agree with the CPU, and a
real hub id loads pretrained weights. Skipped (with the reason) where the
device or the hub is absent; run with `pytest -m gpu` or
`HF_HUB_OFFLINE=0 pytest -m network`."""

from __future__ import annotations

import numpy as np
import pytest

from phonemekit.config import EncoderConfig, HeadConfig, ModelConfig, TrainConfig
from phonemekit.data.splits import speaker_disjoint
from phonemekit.evaluation.predict import predict
from phonemekit.models.encoders import build_encoder
from phonemekit.training.loop import train_model


@pytest.mark.gpu
def test_cuda_features_and_scores_match_the_cpu(tmp_path, prepared, tiny_model_dirs):
    m = prepared
    split = speaker_disjoint(m.speakers, m.groups)
    rows = lambda part: [r for r in m.rows if r["speaker"] in part]  # noqa: E731
    cfg = ModelConfig(
        name="gpu",
        encoder=EncoderConfig(family="wav2vec2", source=str(tiny_model_dirs["wav2vec2"])),
        head=HeadConfig("ctc", {"proj": 16, "hidden": 16}),
        train=TrainConfig(epochs=2, batch_size=8),
    )
    res = train_model(cfg, m, rows(split.train), rows(split.val), tmp_path / "run", cache_root=tmp_path / "cache-gpu", device="cuda")
    on_gpu = predict(res.model, m, rows(split.test), cache_root=tmp_path / "cache-gpu", device="cuda")
    on_cpu = predict(res.model.cpu(), m, rows(split.test), cache_root=tmp_path / "cache-cpu", device="cpu")
    assert np.abs(on_gpu.scores - on_cpu.scores).max() < 1e-3
    assert (on_gpu.scores.argmax(1) == on_cpu.scores.argmax(1)).all()


@pytest.mark.network
def test_a_hub_id_loads_pretrained_weights():
    enc = build_encoder(EncoderConfig(family="wav2vec2", source="facebook/wav2vec2-base"))
    assert enc.weights == "pretrained" and enc.dim == 768 and enc.num_layers == 13
