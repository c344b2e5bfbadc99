"""Enrolment of a new speaker: the profile's fit, its file (round trip, every
malformed or foreign profile refused with one line), and its use by the
runtime, the command line and the server's streams."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from phonemekit.errors import DataError
from phonemekit.evaluation.enrolment import SpeakerProfile, enrol, enrolment_by_shots, fit_residual


def _confused_speakers(n_speakers: int = 6, per_class: int = 6, seed: int = 0):
    """A model that reads 3 sounds from a 4-wide embedding, and speakers who
    each say one sound where the model expects another (their own shift):
    what one voice gets wrong, it gets wrong every time."""
    rng = np.random.default_rng(seed)
    centres = np.eye(3, 4) * 3
    emb, y, spk = [], [], []
    for s in range(n_speakers):
        shift = np.zeros((3, 4))
        shift[s % 3] = centres[(s + 1) % 3] - centres[s % 3] + np.array([0, 0, 0, 2.0])  # sound s%3 lands near the next one
        for c in range(3):
            emb.append(centres[c] + shift[c] + 0.3 * rng.standard_normal((per_class, 4)))
            y += [c] * per_class
            spk += [f"s{s}"] * per_class
    emb = np.concatenate(emb)
    logits = emb @ centres.T  # the model: nearest centre, blind to the 4th axis
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return emb, log_probs, np.array(y), np.array(spk)


def test_one_clip_per_sound_fixes_a_speakers_own_confusion():
    emb, lp, y, spk = _confused_speakers()
    by = enrolment_by_shots(emb, lp, y, spk, shots=(0, 1, 2), reg=0.01)
    assert by[0]["top1"] == pytest.approx(by[0]["unadapted_top1"]) and by[0]["top1"] < 0.75
    assert by[1]["top1"] > by[1]["unadapted_top1"] + 0.2 and by[2]["top1"] > 0.9
    assert by[1]["speakers"] == 6 and by[1]["test_clips"] == 6 * 3 * 5
    assert enrolment_by_shots(emb, lp, y, spk, shots=(1,), reg=0.01) == {1: by[1]}  # seeded: the same clips, the same figures


def test_the_penalty_keeps_a_profile_near_the_model():
    emb, lp, y, _ = _confused_speakers(n_speakers=1)
    loose, tight = fit_residual(emb, lp, y, 0.01), fit_residual(emb, lp, y, 100.0)
    assert np.abs(tight[0]).max() < 0.01 * np.abs(loose[0]).max()
    w, b = fit_residual(emb, lp, y, 0.01)
    assert np.mean((lp + emb @ w.T + b).argmax(1) == y) == 1.0 > np.mean(lp.argmax(1) == y)


def _profile(labels=("aa", "ee", "sh"), dim: int = 4) -> SpeakerProfile:
    emb, lp, y, _ = _confused_speakers(n_speakers=1)
    return enrol("ab" * 32, list(labels), emb[:, :dim], lp, [labels[i] for i in y], reg=0.1)


def test_profile_round_trip(tmp_path):
    p = _profile()
    q = SpeakerProfile.load(p.save(tmp_path / "p.json"))
    assert q.labels == p.labels and q.shots == {"aa": 6, "ee": 6, "sh": 6} and q.reg == 0.1 and q.model == p.model
    np.testing.assert_allclose(q.weight, p.weight, atol=1e-6)
    x = np.random.default_rng(1).standard_normal((5, 4))
    lp = np.log(np.full((5, 3), 1 / 3))
    np.testing.assert_allclose(q.adapt(lp, x), p.adapt(lp, x), atol=1e-5)
    assert np.allclose(p.adapt(lp, x).sum(1), 1)


@pytest.mark.parametrize(
    "edit, why",
    [
        (lambda d: d.update(format="other/1"), "not a speaker profile"),
        (lambda d: d.pop("model"), "digest"),
        (lambda d: d.update(labels=["aa", "aa", "sh"]), "repeat"),
        (lambda d: d.update(shots={"zz": 1}), "shots"),
        (lambda d: d.update(reg=-1), "reg"),
        (lambda d: d.update(reg=True), "reg"),
        (lambda d: d["weight"].pop(), "weight must be"),
        (lambda d: d.update(bias=[1.0, "x", 2.0]), "bias"),
        (lambda d: d["weight"][0].__setitem__(0, float("nan")), "non-finite"),
        (lambda d: d.update(weight=[[1.0, 2.0], [3.0]]), "weight"),
    ],
)
def test_malformed_profiles_are_refused_with_one_line(tmp_path, edit, why):
    d = _profile().to_dict()
    edit(d)
    (tmp_path / "p.json").write_text(json.dumps(d))
    with pytest.raises(DataError, match=why) as e:
        SpeakerProfile.load(tmp_path / "p.json")
    assert "\n" not in str(e.value) and str(tmp_path / "p.json") in str(e.value)


def test_unreadable_profile_files_are_refused(tmp_path):
    (tmp_path / "a.json").write_text("{nope")
    (tmp_path / "b.json").write_bytes(b"\xff\xfe\x00")
    (tmp_path / "big.json").write_bytes(b" " * 5_000_001)
    for name, why in (("a.json", "not JSON"), ("b.json", "not JSON"), ("big.json", "too large"), ("none.json", "no speaker profile")):
        with pytest.raises(DataError, match=why):
            SpeakerProfile.load(tmp_path / name)


def test_the_runtime_applies_a_profile_as_torch_computes_it(served_model):
    """The exported graph's embedding is the torch model's; a profile adapts the probabilities as its formula says."""
    import torch

    from phonemekit.data.features import collate_waves
    from phonemekit.deploy.runtime import Classifier
    from phonemekit.runs import Run

    clf = Classifier.load(served_model["model"])
    assert clf.enrollable and clf.profile is None
    clips = served_model["clips"]
    labels = [clf.labels[i] for i in clf.probs(clips).argmax(1)]
    profile = clf.enrol(clips, labels[::-1])  # deliberately wrong labels: the profile moves the answers towards them
    adapted = clf.with_profile(profile)
    assert adapted.session is clf.session and clf.profile is None
    model = Run(served_model["model"].parent.parent).load(with_encoder=True)
    with torch.no_grad():
        feats = [model.encode(*collate_waves([w])) for w in clips]
        lp = np.concatenate([model(f, n).numpy() for f, n in feats])
        emb = np.concatenate([model.embed(f, n).numpy() for f, n in feats])
    np.testing.assert_allclose(adapted.probs(clips), profile.adapt(lp, emb), atol=1e-4)
    assert np.mean(adapted.probs(clips).argmax(1) == [clf.labels.index(lab) for lab in labels[::-1]]) > np.mean(
        clf.probs(clips).argmax(1) == [clf.labels.index(lab) for lab in labels[::-1]]
    )
    foreign = SpeakerProfile("cd" * 32, profile.labels, profile.weight, profile.bias, profile.shots, profile.reg)
    with pytest.raises(DataError, match="another model"):
        clf.with_profile(foreign)
    relabelled = SpeakerProfile(profile.model, ["x", "y", "z"], profile.weight, profile.bias, {}, profile.reg)
    with pytest.raises(DataError, match="labels differ"):
        clf.with_profile(relabelled)


def test_enrol_then_test_batch_and_live_on_the_command_line(served_model, tmp_path):
    from phonemekit.cli import app
    from phonemekit.data.audio import write_audio
    from phonemekit.deploy.runtime import Classifier

    clf = Classifier.load(served_model["model"])
    for i, w in enumerate(served_model["clips"]):
        write_audio(tmp_path / "clips" / clf.labels[int(clf.probs([w]).argmax())] / f"c{i}.wav", w)
    (tmp_path / "clips" / "aa" / "broken.wav").write_bytes(b"RIFF....not audio")
    write_audio(tmp_path / "clips" / "unknown-sound" / "u.wav", served_model["clips"][0])
    model = str(served_model["model"])
    r = CliRunner().invoke(app, ["enrol", model, str(tmp_path / "clips"), "--out", str(tmp_path / "p.json")])
    assert r.exit_code == 0, r.output
    assert "2 files skipped" in r.output and SpeakerProfile.load(tmp_path / "p.json").model == clf.meta["checkpoint_sha256"]
    r = CliRunner().invoke(app, ["test-batch", model, str(tmp_path / "clips"), "--profile", str(tmp_path / "p.json"), "--out", str(tmp_path / "o.csv")])
    assert r.exit_code == 0 and "accuracy" in r.output, r.output
    r = CliRunner().invoke(app, ["live", "--model", model, "--file", str(served_model["replay"]), "--profile", str(tmp_path / "p.json")])
    assert r.exit_code == 0 and "segments" in r.output, r.output
    (tmp_path / "bad.json").write_text('{"format": "phonemekit-profile/1"}')
    r = CliRunner().invoke(app, ["test-batch", model, str(tmp_path / "clips"), "--profile", str(tmp_path / "bad.json")])
    assert r.exit_code != 0 and "needs the model's digest" in r.output and "Traceback" not in r.output


def test_a_stream_adapts_to_the_profile_it_sends(served_model):
    import httpx

    from phonemekit.deploy.runtime import Classifier

    from .test_serve import _serve, pcm16

    clf = Classifier.load(served_model["model"])
    clips = served_model["clips"]
    profile = clf.enrol(clips, [clf.labels[i] for i in clf.probs(clips).argmax(1)])
    with _serve(served_model) as s:
        assert httpx.get(f"{s.url}/model").json()["enrollable"] is True
        with s.ws("?sample_rate=16000") as ws:
            ws.send(json.dumps({"profile": {"format": "phonemekit-profile/1", "model": "x"}}))
            ws.send(json.dumps({"profile": {**profile.to_dict(), "model": "0" * 64}}))
            ws.send(json.dumps({"profile": profile.to_dict()}))
            ws.send(pcm16(np.concatenate([np.zeros(8000, np.float32), clips[0], np.zeros(8000, np.float32)])))
            ws.send(json.dumps({"profile": None}))
            ws.send(json.dumps({"type": "end"}))
            events = [json.loads(m) for m in ws]
    errors = [e["detail"] for e in events if e["type"] == "error"]
    assert len(errors) == 2 and all(e.startswith("profile refused") for e in errors) and "another model" in errors[1]
    acks = [e for e in events if e["type"] == "profile"]
    assert [a["enrolled"] for a in acks] == [True, False] and sum(acks[0]["shots"].values()) == len(clips)
    assert any(e["type"] == "final" for e in events)
