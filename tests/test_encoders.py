from __future__ import annotations

import pytest
import torch

from phonemekit.config import EncoderConfig
from phonemekit.errors import ConfigError, MissingWeightsError
from phonemekit.models.encoders import available_encoders, build_encoder


def _run(enc, seconds=(1.0, 0.5)):
    lengths = torch.tensor([int(s * 16000) for s in seconds])
    wave = torch.randn(len(seconds), int(lengths.max()))
    with torch.no_grad():
        return enc(wave, lengths)


def test_registry_lists_all_families():
    assert {"fbank", "wav2vec2", "wavlm", "hubert"} <= set(available_encoders())


@pytest.mark.parametrize("source,dim", [("fbank", 160), ("fbank+deltas", 480)])
def test_fbank_shapes_and_lengths(source, dim):
    enc = build_encoder(EncoderConfig(family="fbank", source=source))
    out = _run(enc)
    assert enc.select(out).shape == (2, 49, dim) and enc.dim == dim
    assert out.lengths.tolist() == [49, 24]
    assert enc.spec.weights == "none" and enc.spec.frame_rate == 50


def test_fbank_features_ignore_padding():
    enc = build_encoder(EncoderConfig(family="fbank", source="fbank"))
    x = torch.randn(1, 8000)
    alone = enc(x, torch.tensor([8000])).hidden_states[0]
    padded = enc(torch.cat([x, torch.zeros(1, 8000)], 1), torch.tensor([8000])).hidden_states[0]
    assert torch.allclose(alone[0], padded[0, : alone.shape[1]], atol=1e-4)


@pytest.mark.parametrize("family", ["wav2vec2", "wavlm", "hubert"])
def test_hf_encoder_from_saved_folder(family, tiny_model_dirs):
    enc = build_encoder(EncoderConfig(family=family, source=str(tiny_model_dirs[family]), layer=-1))
    out = _run(enc)
    assert enc.weights == "pretrained"
    assert len(out.hidden_states) == enc.num_layers == 3
    assert enc.select(out).shape == (2, 49, 32)
    assert out.lengths.tolist() == [49, 24]
    spec = enc.spec
    assert spec.family == family and spec.layer == 2 and spec.weights_sha256


def test_layer_choice_changes_the_spec(tiny_model_dirs):
    src = str(tiny_model_dirs["wavlm"])
    a = build_encoder(EncoderConfig(family="wavlm", source=src, layer=-1)).spec
    b = build_encoder(EncoderConfig(family="wavlm", source=src, layer=1)).spec
    assert a.key() != b.key()
    with pytest.raises(ConfigError, match="encoder.layer"):
        build_encoder(EncoderConfig(family="wavlm", source=src, layer=7)).spec  # noqa: B018


def test_random_weights_only_by_name():
    enc = build_encoder(EncoderConfig(family="wav2vec2", source="random:tiny"))
    assert enc.weights == "random" and enc.spec.weights == "random"
    again = build_encoder(EncoderConfig(family="wav2vec2", source="random:tiny"))
    assert enc.spec.weights_sha256 == again.spec.weights_sha256  # seeded: same features, same cache key


def test_missing_weights_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match="facebook/wav2vec2-base.*Download them once"):
        build_encoder(EncoderConfig(family="wav2vec2", source="facebook/wav2vec2-base"))


def test_folder_without_config_is_missing_weights(tmp_path):
    with pytest.raises(MissingWeightsError, match="no config.json"):
        build_encoder(EncoderConfig(family="wavlm", source=str(tmp_path)))


def test_unknown_family():
    with pytest.raises(ConfigError, match="unknown encoder family"):
        build_encoder(EncoderConfig(family="nope", source="x"))
