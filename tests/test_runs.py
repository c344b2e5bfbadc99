"""The Run handle: one object per run folder, the sidecar read once, every
artifact's path in one place, and clear errors for what is missing."""

from __future__ import annotations

import json

import pytest

from phonemekit.errors import DataError, IntegrityError
from phonemekit.runs import Run

from .conftest import train_toy


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return Run(train_toy(tmp_path_factory.mktemp("runs"), {"kind": "mlp", "options": {"hidden": [8]}})[1])


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
        _ = Run(tmp_path).name


def _resave(src: Run, dst, edit) -> None:
    """The checkpoint's tensors saved again with an edited header sidecar (its digest left as it was)."""
    from safetensors.torch import load, save

    data = src.weights_path.read_bytes()
    side = json.loads(json.dumps(src.sidecar))
    edit(side)
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "model.safetensors").write_bytes(save(load(data), metadata={"phonemekit": json.dumps(side)}))


def test_labels_are_bound_to_the_weights(run, tmp_path):
    # Swapped labels in the checkpoint itself: refused, with or without an allow-list.
    _resave(run, tmp_path / "swapped", lambda side: side.update(labels=side["labels"][::-1]))
    with pytest.raises(IntegrityError, match="recorded sha256"):
        Run(tmp_path / "swapped").load()
    with pytest.raises(IntegrityError, match="recorded sha256"):
        Run(tmp_path / "swapped").load(trusted={run.sha256})
    # Edits of the readable copy never reach an answer: it is rewritten from the checkpoint.
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run.path, copy)
    side = json.loads((copy / "model.json").read_text())
    side["labels"] = side["labels"][::-1]
    (copy / "model.json").write_text(json.dumps(side))
    assert Run(copy).load().labels == run.labels
    assert json.loads((copy / "model.json").read_text())["labels"] == run.labels
    # A malformed sidecar is one clear refusal.
    _resave(run, tmp_path / "malformed", lambda side: side.update(labels="aa,ee"))
    with pytest.raises(IntegrityError, match=r"malformed sidecar \(labels\)"):
        _ = Run(tmp_path / "malformed").labels
    _resave(run, tmp_path / "escape", lambda side: side["config"].update(name="../../elsewhere"))
    with pytest.raises(IntegrityError, match=r"malformed sidecar \(name\)"):
        Run(tmp_path / "escape").onnx("e2e")


def test_the_previous_checkpoint_survives_a_kill_mid_save(run, tmp_path, monkeypatch):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run.path, copy)
    good = Run(copy).sha256

    def killed(*a, **k):
        raise KeyboardInterrupt  # the process dies while the new checkpoint is being written

    model = Run(copy).load()
    monkeypatch.setattr("phonemekit.fileio.os.replace", killed)
    with pytest.raises(KeyboardInterrupt):
        Run(copy).save_checkpoint(model)
    monkeypatch.undo()
    assert Run(copy).load().labels == run.labels and Run(copy).sha256 == good
    assert not list(copy.glob(".*.tmp"))


def test_load_round_trips_and_refuses_a_pickle(run, tmp_path):
    import shutil

    import torch

    model = run.load()
    assert model.labels == run.labels and model.cfg == run.config
    copy = tmp_path / "copy"
    shutil.copytree(run.path, copy)
    torch.save({"x": torch.zeros(1)}, copy / "model.safetensors")  # a pickle in the weights' place: never unpickled
    with pytest.raises(IntegrityError, match="not a readable safetensors"):
        Run(copy).load()
