from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from phonemekit.config import EncoderConfig, HeadConfig, ModelConfig, TrainConfig
from phonemekit.data.splits import speaker_disjoint
from phonemekit.errors import IntegrityError
from phonemekit.evaluation.metrics import metrics
from phonemekit.evaluation.predict import predict
from phonemekit.runs import Run
from phonemekit.training.loop import Trainer, train_model


def _cfg(kind="ctc", epochs=12, **train):
    return ModelConfig(
        name=f"toy-{kind}",
        encoder=EncoderConfig(family="fbank", source="fbank"),
        head=HeadConfig(kind=kind, options={"proj": 32, "hidden": 32} if kind == "ctc" else {"hidden": [32]}),
        train=TrainConfig(epochs=epochs, batch_size=8, lr=3e-3, patience=50, **train),
    )


def _parts(m):
    s = speaker_disjoint(m.speakers, m.groups)
    return {p: [r for r in m.rows if r["speaker"] in getattr(s, p)] for p in ("train", "val", "test")}


@pytest.mark.parametrize("kind", ["mlp", "ctc"])
def test_tiny_model_learns_a_separable_set(tmp_path, prepared, kind):
    parts = _parts(prepared)
    res = train_model(_cfg(kind, epochs=40), prepared, parts["train"], parts["val"], tmp_path / "run", cache_root=tmp_path / "cache")
    m = metrics(predict(res.model, prepared, parts["test"], cache_root=tmp_path / "cache"))
    assert m["top1"] >= 0.9, m["top1"]  # chance is 1/3
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]


def test_checkpoint_round_trip_and_sidecar(tmp_path, prepared):
    parts = _parts(prepared)
    res = train_model(_cfg("ctc", epochs=2), prepared, parts["train"], parts["val"], tmp_path / "run", cache_root=tmp_path / "cache")
    side = Run(tmp_path / "run").sidecar
    assert side["labels"] == prepared.labels and side["blank"] == len(prepared.labels)
    assert side["encoder_spec"]["family"] == "fbank" and side["weights"] == "none"
    assert len(side["sha256"]) == 64 and "val_top1" in side["metrics"]
    again = Run(tmp_path / "run").load()
    for k, v in res.model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])


def test_tampered_checkpoint_is_refused(tmp_path, prepared):
    parts = _parts(prepared)
    train_model(_cfg("mlp", epochs=1), prepared, parts["train"], parts["val"], tmp_path / "run", cache_root=tmp_path / "cache")
    weights = tmp_path / "run" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="does not match its recorded sha256"):
        Run(tmp_path / "run").load()


def test_trusted_hashes_allow_list(tmp_path, prepared):
    parts = _parts(prepared)
    train_model(_cfg("mlp", epochs=1), prepared, parts["train"], parts["val"], tmp_path / "run", cache_root=tmp_path / "cache")
    sha = Run(tmp_path / "run").sidecar["sha256"]
    Run(tmp_path / "run").load(trusted={sha})
    with pytest.raises(IntegrityError, match="not in the trusted-hashes list"):
        Run(tmp_path / "run").load(trusted={"0" * 64})


def test_resume_gives_the_same_final_weights(tmp_path, prepared):
    parts = _parts(prepared)
    cfg = _cfg("ctc", epochs=4)
    train_model(cfg, prepared, parts["train"], parts["val"], tmp_path / "full", cache_root=tmp_path / "cache")

    class Stop(Exception):
        pass

    t = Trainer(cfg, prepared, parts["train"], parts["val"], tmp_path / "cut", cache_root=tmp_path / "cache")
    real = t.run_epoch

    def run_epoch():
        if t.epoch == 2:
            raise Stop  # killed after two epochs were saved
        return real()

    t.run_epoch = run_epoch
    with pytest.raises(Stop):
        t.fit()
    train_model(cfg, prepared, parts["train"], parts["val"], tmp_path / "cut", cache_root=tmp_path / "cache", resume=True)
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    state = torch.load(tmp_path / "cut" / "train_state.pt", weights_only=True)
    assert state["epoch"] == 4 and len(state["history"]) == 4


def test_out_of_memory_halves_the_batch_and_keeps_the_effective_batch(tmp_path, prepared, caplog):
    parts = _parts(prepared)
    t = Trainer(_cfg("mlp", epochs=1), prepared, parts["train"], parts["val"], tmp_path / "run", cache_root=tmp_path / "cache")
    real = t._outputs

    def picky(batch):
        if t.model.training and len(batch.y) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(batch)

    t._outputs = picky
    t.fit()
    assert t.micro_batch == 2
    assert "effective batch kept at 8" in caplog.text


def test_end_to_end_fine_tuning_updates_the_encoder(tmp_path, prepared, tiny_model_dirs):
    parts = _parts(prepared)
    cfg = ModelConfig(
        name="e2e",
        encoder=EncoderConfig(family="wav2vec2", source=str(tiny_model_dirs["wav2vec2"])),
        head=HeadConfig(kind="mlp", options={"hidden": [16]}),
        train=TrainConfig(epochs=1, batch_size=8, finetune_layers=1),
    )
    t = Trainer(cfg, prepared, parts["train"], parts["val"], tmp_path / "run")
    frozen = t.model.encoder.model.feature_extractor.conv_layers[0].conv.weight.clone()
    top = [p.clone() for p in t.model.encoder.model.encoder.layers[-1].parameters()]
    res = t.fit()
    assert torch.equal(frozen, t.model.encoder.model.feature_extractor.conv_layers[0].conv.weight)
    assert any(not torch.equal(a, b) for a, b in zip(top, t.model.encoder.model.encoder.layers[-1].parameters()))
    side = Run(tmp_path / "run").sidecar
    assert side["includes_encoder"] and res.model.encoder is not None
    assert predict(res.model, prepared, parts["test"]).scores.shape == (len(parts["test"]), 3)


def test_fine_tuning_starts_from_a_frozen_head_with_rates_decaying_by_block(tmp_path, prepared, tiny_model_dirs):
    from phonemekit.errors import ConfigError

    parts = _parts(prepared)
    enc = EncoderConfig(family="wav2vec2", source=str(tiny_model_dirs["wav2vec2"]))
    head = HeadConfig(kind="mlp", options={"hidden": [16]})
    frozen = ModelConfig(name="frozen", encoder=enc, head=head, train=TrainConfig(epochs=2, batch_size=8))
    Trainer(frozen, prepared, parts["train"], parts["val"], tmp_path / "frozen", cache_root=tmp_path / "cache").fit()
    tuned = ModelConfig(name="tuned", encoder=enc, head=head, train=TrainConfig(epochs=1, batch_size=8, finetune_layers=2, lr=1e-3, encoder_lr=1e-4,
                                                                              layer_decay=0.5, warm_start=str(tmp_path / "frozen")))  # fmt: skip
    t = Trainer(tuned, prepared, parts["train"], parts["val"], tmp_path / "tuned")
    source = Run(tmp_path / "frozen").load().state_dict()
    assert all(torch.equal(v, source[k]) for k, v in t.model.state_dict().items() if not k.startswith("encoder."))  # the head, warm
    # The head, the top block, the one below it, and the final norm (it trains when every block does) at the top rate.
    assert [g["lr"] for g in t.opt.param_groups] == [1e-3, 1e-4, 5e-5, 1e-4]
    top, below = t.model.encoder.blocks()[-1], t.model.encoder.blocks()[-2]
    assert {id(p) for p in t.opt.param_groups[1]["params"]} == {id(p) for p in top.parameters()}
    assert {id(p) for p in t.opt.param_groups[2]["params"]} == {id(p) for p in below.parameters()}
    t.fit()
    other = ModelConfig(name="other", encoder=enc, head=HeadConfig(kind="mlp", options={"hidden": [8]}),
                        train=TrainConfig(epochs=1, finetune_layers=1, warm_start=str(tmp_path / "frozen")))  # fmt: skip
    with pytest.raises(ConfigError, match="another head"):
        Trainer(other, prepared, parts["train"], parts["val"], tmp_path / "other")


def test_fine_tuning_stops_on_validation_and_keeps_the_best_encoder(tmp_path, prepared, tiny_model_dirs):
    """Validation top-1 that peaks at epoch 2 and falls (what overfitting
    looks like): training stops `patience` epochs later, and the checkpoint
    holds the encoder as it was at its best epoch, not as it ended."""
    parts = _parts(prepared)
    cfg = ModelConfig(name="tuned", encoder=EncoderConfig(family="wav2vec2", source=str(tiny_model_dirs["wav2vec2"])),
                      head=HeadConfig(kind="mlp", options={"hidden": [16]}),
                      train=TrainConfig(epochs=8, batch_size=8, finetune_layers=1, encoder_lr=1e-2, patience=2))  # fmt: skip
    t = Trainer(cfg, prepared, parts["train"], parts["val"], tmp_path / "run")
    scores = iter([(1.0, 0.5), (0.9, 0.6), (1.1, 0.4), (1.2, 0.3), (1.3, 0.2), (1.4, 0.1)])  # (val loss, val top-1)
    t.evaluate = lambda data, batch_size=64: next(scores)
    top = lambda: [p.detach().clone() for p in t.model.encoder.blocks()[-1].parameters()]  # noqa: E731
    snapshots = []
    run_epoch = t.run_epoch

    def epoch_and_snapshot():
        rec = run_epoch()
        snapshots.append(top())
        return rec

    t.run_epoch = epoch_and_snapshot
    res = t.fit()
    assert len(res.history) == 4 and res.best_epoch == 2  # epochs 3 and 4 did not improve: patience 2
    kept = [p for p in res.model.encoder.blocks()[-1].parameters()]
    assert all(torch.equal(a, b) for a, b in zip(kept, snapshots[1])) and not all(torch.equal(a, b) for a, b in zip(kept, snapshots[3]))


def test_a_run_saved_before_a_config_field_existed_resumes(tmp_path):
    """A training state whose config lacks a field added since (with its
    default) is the same config: it resumes instead of refusing."""
    import torch

    from phonemekit.training.loop import STATE

    from .conftest import train_toy

    m, run = train_toy(tmp_path, {"kind": "mlp", "options": {"hidden": [8]}})
    state = torch.load(run / STATE, weights_only=True)
    del state["config"]["encoder"]["view"]  # as written before `view` existed
    torch.save(state, run / STATE)
    from phonemekit.config import EncoderConfig, HeadConfig, ModelConfig, TrainConfig
    from phonemekit.training.loop import train_model

    cfg = ModelConfig(name="toy", encoder=EncoderConfig(family="fbank", source="fbank"), head=HeadConfig("mlp", {"hidden": [8]}),
                      train=TrainConfig(epochs=1, batch_size=8))  # fmt: skip
    rows = [r for r in m.rows if r["speaker"] != "s1"]
    res = train_model(cfg, m, rows, [r for r in m.rows if r["speaker"] == "s1"], run, cache_root=tmp_path / "cache", resume=True)
    assert res.history and len(res.history) == 1  # resumed at its last epoch: nothing trained again
