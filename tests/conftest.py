"""Shared fixtures: tiny real audio made in the test, tiny encoders saved to
a temp folder and loaded back through the same path as real weights."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from phonemekit.data.audio import write_audio

# Tests never touch the network; a hub id must fail fast, not retry.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The workspace (audit log, pseudonym salt) of a test run lives in a temp folder.
os.environ.setdefault("PHONEMEKIT_HOME", tempfile.mkdtemp(prefix="phonemekit-test-home-"))

SR = 16_000


def tone(freq: float, seconds: float = 0.4, sr: int = SR, seed: int = 0, noise: float = 0.02) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.5 * np.sin(2 * np.pi * freq * t) + 0.2 * np.sin(2 * np.pi * 2.7 * freq * t)
    return (x + noise * rng.standard_normal(len(t))).astype(np.float32)


LABEL_FREQS = {"aa": 220.0, "ee": 660.0, "sh": 1900.0}


def make_corpus(root: Path, speakers=("s1", "s2", "s3", "s4", "s5"), labels=LABEL_FREQS, takes: int = 3) -> Path:
    """Clips whose label is a tone frequency (plus per-speaker detuning):
    separable, so a tiny model can learn it in seconds."""
    for si, spk in enumerate(speakers):
        for label, freq in labels.items():
            for k in range(takes):
                x = tone(freq * (1 + 0.03 * si), 0.3 + 0.05 * k, seed=si * 100 + k)
                write_audio(root / spk / label / f"t{k}.wav", x, SR)
    return root


def train_toy(base: Path, head: dict) -> tuple:
    """A one-epoch fbank model on a fresh toy corpus under `base`: (manifest, run folder)."""
    from phonemekit.config import EncoderConfig, HeadConfig, ModelConfig, TrainConfig
    from phonemekit.data.manifest import load_manifest, prepare
    from phonemekit.data.splits import speaker_disjoint
    from phonemekit.training.loop import train_model

    make_corpus(base / "rec")
    prepare(base / "rec", base / "data")
    m = load_manifest(base / "data")
    split = speaker_disjoint(m.speakers, m.groups)
    rows = lambda part: [r for r in m.rows if r["speaker"] in part]  # noqa: E731
    cfg = ModelConfig(name="toy", encoder=EncoderConfig(family="fbank", source="fbank"), head=HeadConfig(**head), train=TrainConfig(epochs=1, batch_size=8))
    train_model(cfg, m, rows(split.train), rows(split.val), base / "run", cache_root=base / "cache")
    return m, base / "run"


@pytest.fixture
def corpus(tmp_path) -> Path:
    return make_corpus(tmp_path / "rec")


@pytest.fixture
def prepared(tmp_path, corpus):
    from phonemekit.data.manifest import load_manifest, prepare

    prepare(corpus, tmp_path / "data")
    return load_manifest(tmp_path / "data")


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict[str, Path]:
    """Tiny random wav2vec2 / WavLM / HuBERT saved with save_pretrained."""
    import transformers

    from phonemekit.models.encoders.hf import FAMILIES, RANDOM_SIZES

    out = {}
    base = tmp_path_factory.mktemp("hf")
    for name, fam in FAMILIES.items():
        cfg = getattr(transformers, fam.config_cls)(**RANDOM_SIZES["tiny"])
        model = getattr(transformers, fam.model_cls)(cfg)
        model.save_pretrained(base / name)
        out[name] = base / name
    return out


@pytest.fixture(scope="session")
def served_model(tmp_path_factory):
    """A toy model trained by train_all (so it is calibrated) and exported end to end, plus a replay file:
    trained once per test run, shared by the server, browser and integrity tests (which never change it)."""
    from phonemekit.config import EncoderConfig, HeadConfig, ModelConfig, TrainConfig
    from phonemekit.data.audio import load_audio, write_audio
    from phonemekit.data.manifest import load_manifest, prepare
    from phonemekit.deploy.export import export_run
    from phonemekit.live.replay import build_replay
    from phonemekit.training.experiment import train_all

    base = tmp_path_factory.mktemp("serve")
    # Tones with quiet padding, as real clips have: live segments carry silence around the sound.
    rng = np.random.default_rng(0)
    for si, spk in enumerate(("s1", "s2", "s3", "s4", "s5")):
        for label, freq in LABEL_FREQS.items():
            for k in range(3):
                pad = lambda n: (3e-4 * rng.standard_normal(n)).astype(np.float32)  # noqa: E731
                x = np.concatenate([pad(4000), tone(freq * (1 + 0.03 * si), 0.3 + 0.05 * k, seed=si * 100 + k), pad(2400)])
                write_audio(base / "rec" / spk / label / f"t{k}.wav", x)
    prepare(base / "rec", base / "data")
    m = load_manifest(base / "data")
    cfg = ModelConfig(
        name="toy",
        encoder=EncoderConfig(family="fbank", source="fbank"),
        head=HeadConfig("mlp", {"hidden": [16]}),
        train=TrainConfig(epochs=30, batch_size=8, lr=3e-3),
    )
    train_all(m, [cfg], base / "out", leaky=False, cache_root=base / "cache")
    run = base / "out" / "models" / "toy"
    clips = [load_audio(m.audio_path(r)).samples for r in m.rows[::5]]
    export_run(run, clips[:4], forms=("e2e",), int8=False)
    wave, truth = build_replay(m, clips=6, gap_s=0.5)
    write_audio(base / "replay.wav", wave)
    return {"model": run / "onnx" / "toy.e2e.onnx", "clips": clips, "replay": base / "replay.wav", "truth": truth, "base": base}


def pytest_collection_modifyitems(config, items):
    """`gpu` tests run only where CUDA is; `network` tests only where the
    model hub answers. Both are skipped, with the reason, everywhere else."""
    import torch

    from phonemekit.models.encoders.hf import hub_reachable

    no_gpu = pytest.mark.skip(reason="needs a CUDA device")
    online = None
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_gpu)
        if "network" in item.keywords:
            if online is None:
                online = hub_reachable(timeout=2.0)  # False while HF_HUB_OFFLINE is set (the default here)
            if not online:
                item.add_marker(pytest.mark.skip(reason="needs the model hub (offline)"))
