"""The Run handle: one object per run folder, the sidecar read once, every
artifact's path in one place, and clear errors for what is missing."""

from __future__ import annotations

import json

import pytest

from phonemekit.config import EncoderConfig, HeadConfig, ModelConfig, TrainConfig
from phonemekit.data.manifest import load_manifest, prepare
from phonemekit.data.splits import speaker_disjoint
from phonemekit.errors import DataError, IntegrityError
from phonemekit.runs import Run
from phonemekit.training.loop import train_model

from .conftest import make_corpus


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    make_corpus(base / "rec")
    prepare(base / "rec", base / "data")
    m = load_manifest(base / "data")
    split = speaker_disjoint(m.speakers, m.groups)
    rows = lambda part: [r for r in m.rows if r["speaker"] in part]  # noqa: E731
    cfg = ModelConfig(name="toy", encoder=EncoderConfig(family="fbank", source="fbank"), head=HeadConfig("mlp", {"hidden": [8]}),
                      train=TrainConfig(epochs=1, batch_size=8))
    train_model(cfg, m, rows(split.train), rows(split.val), base / "run", cache_root=base / "cache")
    return Run(base / "run")


def test_paths_and_fields_come_from_one_place(run):
    assert run.name == "toy" and run.labels == ["aa", "ee", "sh"] and run.config.head.kind == "mlp"
    assert run.onnx("e2e") == run.path / "onnx" / "toy.e2e.onnx"
    assert run.onnx("head", "int8") == run.path / "onnx" / "toy.head.int8.onnx"
    assert run.parity_path == run.path / "onnx" / "toy.parity.json"
    assert run.encoder_spec.family == "fbank" and run.weights == "none" and run.data.endswith("manifest.jsonl")
    with pytest.raises(DataError, match="unknown ONNX form"):
        run.onnx("full")


def test_the_sidecar_is_read_once(run, monkeypatch):
    fresh = Run(run.path)
    fresh.sidecar  # noqa: B018
    calls = []
    monkeypatch.setattr("phonemekit.runs.read_json", lambda p: calls.append(p) or {})
    assert fresh.name == "toy" and fresh.labels and fresh.sha256 and not calls


def test_missing_artifacts_say_what_to_run(run, tmp_path):
    with pytest.raises(DataError, match="no predictions.npz"):
        run.predictions("test")
    with pytest.raises(DataError, match="phonemekit export"):
        run.parity()
    with pytest.raises(DataError, match="no checkpoint"):
        Run(tmp_path).name
    (tmp_path / "model.json").write_text(json.dumps({"labels": "aa,ee"}))
    with pytest.raises(IntegrityError, match="malformed"):
        Run(tmp_path).labels


def test_load_round_trips_and_refuses_a_pickle(run, tmp_path):
    import shutil

    import torch

    model = run.load()
    assert model.labels == run.labels and model.cfg == run.config
    copy = tmp_path / "copy"
    shutil.copytree(run.path, copy)
    torch.save({"x": torch.zeros(1)}, copy / "model.safetensors")  # a pickle in the weights' place
    side = json.loads((copy / "model.json").read_text())
    from phonemekit.fileio import sha256_file

    side["sha256"] = sha256_file(copy / "model.safetensors")  # even with a matching hash it is never unpickled
    (copy / "model.json").write_text(json.dumps(side))
    with pytest.raises(IntegrityError, match="not a readable safetensors"):
        Run(copy).load()
