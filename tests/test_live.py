"""Live path: smoothing on hand-built probabilities, the engine on generated
files, replay metrics on known boundaries, and the no-device error."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from phonemekit.live.engine import LiveConfig, LiveEngine, Smoother, load_live_config, run_stream
from phonemekit.live.replay import build_replay, replay_metrics
from phonemekit.live.sources import file_blocks, mic_blocks
from phonemekit.live.vad import LiveError

from .conftest import LABEL_FREQS, tone

LABELS = sorted(LABEL_FREQS)


def P(*probs) -> np.ndarray:
    return np.array(probs, dtype=float)


def test_hysteresis_holds_until_a_label_wins_n_windows():
    s = Smoother(LiveConfig(ema=1.0, hysteresis=3, margin=0.9, min_confidence=0.3))
    assert [s.update(P(0.8, 0.1, 0.1)) for _ in range(3)] == [None, None, 0]
    # One window for class 1 is not enough to switch; three in a row are.
    assert s.update(P(0.1, 0.8, 0.1)) == 0
    assert s.update(P(0.8, 0.1, 0.1)) == 0
    assert [s.update(P(0.1, 0.8, 0.1)) for _ in range(3)] == [0, 0, 1]


def test_margin_switches_at_once():
    s = Smoother(LiveConfig(ema=1.0, hysteresis=5, margin=0.3, min_confidence=0.1))
    for _ in range(5):
        s.update(P(0.6, 0.4, 0.0))
    assert s.update(P(0.1, 0.9, 0.0)) == 1


def test_confidence_gate_suppresses_labels():
    s = Smoother(LiveConfig(ema=1.0, hysteresis=1, min_confidence=0.5))
    assert s.update(P(0.4, 0.35, 0.25)) is None
    assert s.update(P(0.7, 0.2, 0.1)) == 0
    assert s.update(P(0.45, 0.3, 0.25)) is None


def test_ema_lags_as_configured():
    s = Smoother(LiveConfig(ema=0.25, hysteresis=1, min_confidence=0.0))
    s.update(P(1.0, 0.0, 0.0))
    s.update(P(0.0, 1.0, 0.0))
    assert np.allclose(s.probs, [0.75, 0.25, 0.0])
    assert s.shown == 0  # the smoothed picture still favours the old sound


class ToneClassifier:
    """Stands in for an ONNX model: label = nearest tone frequency."""

    labels = LABELS

    def probs(self, waves):
        out = []
        for w in waves:
            spec = np.abs(np.fft.rfft(w * np.hanning(len(w))))
            peak = np.argmax(spec) * 16000 / len(w)
            d = np.array([abs(np.log(peak / LABEL_FREQS[lab])) for lab in LABELS])
            p = np.exp(-d * 20)
            out.append(p / p.sum())
        return np.stack(out)


def _stream_file(tmp_path, plan):
    """plan: list of (label, seconds) separated by 0.5 s of silence."""
    from phonemekit.data.audio import write_audio

    parts, truth, t = [], [], 0.5
    parts.append(np.zeros(8000, np.float32))
    for label, sec in plan:
        x = tone(LABEL_FREQS[label], sec, noise=0.0)
        parts += [x, np.zeros(8000, np.float32)]
        truth.append({"start": t, "end": t + sec, "label": label})
        t += sec + 0.5
    wave = np.concatenate(parts) + np.random.default_rng(0).standard_normal(int(t * 16000) + 1)[: sum(map(len, parts))].astype(np.float32) * 1e-4
    write_audio(tmp_path / "replay.wav", wave)
    return tmp_path / "replay.wav", truth


def test_engine_replay_events_and_metrics(tmp_path):
    path, truth = _stream_file(tmp_path, [("aa", 0.4), ("sh", 0.3), ("ee", 0.5), ("aa", 0.05)])
    cfg = LiveConfig(vad="energy", hangover_ms=96, min_duration_ms=96)
    events = run_stream(LiveEngine(ToneClassifier(), cfg), file_blocks(path))
    kinds = [e["type"] for e in events]
    assert kinds.count("onset") == kinds.count("final") == kinds.count("offset") == 4
    finals = [e for e in events if e["type"] == "final"]
    assert [f["label"] for f in finals] == ["aa", "sh", "ee", None]  # the 50 ms blip is too short for a label
    assert finals[3]["reason"] == "too_short"
    for f, t in zip(finals, truth):
        assert abs(f["segment_start"] - t["start"]) < 0.3 and abs(f["segment_end"] - t["end"]) < 0.07
    m = replay_metrics(events, truth[:3])
    assert m["accuracy"] == 1.0 and m["detected"] == 3 and m["flicker_rate"] == 0.0
    # Latency from offset: the hangover (96 ms, in 32 ms frames) plus compute.
    assert 90 <= m["latency_offset_ms_mean"] < 200


def test_expect_mode_marks_recognition(tmp_path):
    path, _ = _stream_file(tmp_path, [("sh", 0.4), ("aa", 0.4)])
    events = run_stream(LiveEngine(ToneClassifier(), LiveConfig(vad="energy"), expect="sh"), file_blocks(path))
    finals = [e for e in events if e["type"] == "final"]
    assert [(f["recognised"], f["expected_rank"]) for f in finals] == [(True, 1), (False, 3)]


def test_presets_load_and_override():
    a, b, c = (load_live_config(p) for p in ("responsive", "balanced", "stable"))
    assert a.hysteresis < b.hysteresis < c.hysteresis and a.hangover_ms < c.hangover_ms
    assert load_live_config("stable", hysteresis=7).hysteresis == 7
    from phonemekit.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown live preset"):
        load_live_config("jumpy")
    with pytest.raises(ConfigError, match="hysteresis"):
        load_live_config("balanced", hysteresis=0)


def test_silero_vad_hears_speech_not_silence():
    from phonemekit.data.audio import resample
    from phonemekit.data.demo import ESpeak
    from phonemekit.live.vad import FRAME, SileroVAD

    engine = ESpeak()
    speech = resample(engine.synth("[['a]]", "en-us+m1", 40, 150), engine.sample_rate, 16000)
    vad = SileroVAD()
    silence = np.zeros(FRAME * 10, np.float32)
    x = np.concatenate([silence, speech / np.abs(speech).max() * 0.5, silence])
    probs = [vad(x[i : i + FRAME]) for i in range(0, len(x) - FRAME, FRAME)]
    assert max(probs) > 0.5 and max(probs[:8]) < 0.2


def test_no_portaudio_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    with pytest.raises(LiveError, match="PortAudio"):
        next(mic_blocks())


def test_no_input_device_is_one_clear_error(monkeypatch):
    fake = types.SimpleNamespace(query_devices=lambda: [{"name": "speakers", "max_input_channels": 0}])
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    with pytest.raises(LiveError, match="no audio input device"):
        next(mic_blocks())


def test_live_cli_replays_a_file_with_a_real_model(tmp_path, prepared):
    from typer.testing import CliRunner

    from phonemekit.cli import app
    from phonemekit.config import EncoderConfig, HeadConfig, ModelConfig, TrainConfig
    from phonemekit.data.audio import load_audio, write_audio
    from phonemekit.deploy.export import export_run
    from phonemekit.fileio import write_json
    from phonemekit.training.loop import train_model

    cfg = ModelConfig(
        name="live",
        encoder=EncoderConfig(family="fbank", source="fbank"),
        head=HeadConfig("mlp", {"hidden": [16]}),
        train=TrainConfig(epochs=8, batch_size=8, lr=3e-3),
    )
    train_model(cfg, prepared, prepared.rows, prepared.rows[:9], tmp_path / "run", cache_root=tmp_path / "cache")
    export_run(tmp_path / "run", [load_audio(prepared.audio_path(r)).samples for r in prepared.rows[:4]], forms=("e2e",), int8=False)
    wave, truth = build_replay(prepared, clips=6, gap_s=0.5)
    write_audio(tmp_path / "r.wav", wave)
    write_json(tmp_path / "r.labels.json", truth)
    r = CliRunner().invoke(
        app,
        [
            "live",
            "--model",
            str(tmp_path / "run" / "onnx" / "live.e2e.onnx"),
            "--file",
            str(tmp_path / "r.wav"),
            "--vad",
            "energy",
            "--report",
            "--events",
            str(tmp_path / "ev.jsonl"),
        ],
    )
    assert r.exit_code == 0, r.output
    events = [json.loads(x) for x in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert {"onset", "final", "offset"} <= {e["type"] for e in events}
    block = r.output[r.output.index("{") :]
    metrics = json.loads(block[: block.index("\n}") + 2])
    assert metrics["clips"] == 6 and metrics["detected"] >= 5
    # ...then the table of every preset, with the noise-only false triggers.
    assert all(f"| {p} | none | " in r.output for p in ("responsive", "balanced", "stable")) and "Noise alone" in r.output


def test_watch_swaps_the_model_without_dropping_audio(tmp_path, prepared):
    import os
    import shutil

    from phonemekit.config import EncoderConfig, HeadConfig, ModelConfig, TrainConfig
    from phonemekit.data.audio import load_audio
    from phonemekit.deploy.export import export_run
    from phonemekit.deploy.runtime import Classifier
    from phonemekit.training.loop import train_model

    cfg = ModelConfig(
        name="w", encoder=EncoderConfig(family="fbank", source="fbank"), head=HeadConfig("mlp", {"hidden": [8]}), train=TrainConfig(epochs=1, batch_size=8)
    )
    train_model(cfg, prepared, prepared.rows, prepared.rows[:9], tmp_path / "run", cache_root=tmp_path / "cache")
    export_run(tmp_path / "run", [load_audio(prepared.audio_path(r)).samples for r in prepared.rows[:4]], forms=("e2e",), int8=False)
    live_model = tmp_path / "live.onnx"
    shutil.copy(tmp_path / "run" / "onnx" / "w.e2e.onnx", live_model)
    engine = LiveEngine(Classifier.load(live_model), LiveConfig(vad="energy"))
    first = engine.classifier
    wave, _ = build_replay(prepared, clips=4, gap_s=0.5)
    fed = []

    def blocks():
        for i in range(0, len(wave), 512):
            if i == 512 * 20:  # a new model lands mid-stream
                shutil.copy(tmp_path / "run" / "onnx" / "w.e2e.onnx", live_model)
                os.utime(live_model, ns=(time_ns := __import__("time").time_ns(), time_ns + 10**9))
            fed.append(len(wave[i : i + 512]))
            yield wave[i : i + 512]

    events = run_stream(engine, blocks(), watch=live_model, reload_every_s=0.0)
    assert engine.classifier is not first
    assert engine.consumed + len(engine.pending) == sum(fed) == len(wave)  # every sample was processed
    assert sum(e["type"] == "final" for e in events) >= 3


def test_noise_is_seeded_unit_rms_and_mixed_at_the_asked_snr():
    from phonemekit.live.replay import NOISES, make_noise, mix_noise

    for kind in NOISES:
        x = make_noise(kind, 32000, seed=3)
        assert np.sqrt(np.mean(x**2)) == pytest.approx(1.0, rel=1e-3) and np.array_equal(x, make_noise(kind, 32000, seed=3))
    wave = np.zeros(48000, np.float32)
    wave[16000:24000] = 0.1 * np.sin(np.arange(8000) / 5)
    truth = [{"start": 1.0, "end": 1.5, "label": "aa"}]
    mixed = mix_noise(wave, truth, "pink", 10.0)
    speech = np.sqrt(np.mean(wave[16000:24000] ** 2))
    noise = np.sqrt(np.mean(mixed[:16000] ** 2))
    assert 20 * np.log10(speech / noise) == pytest.approx(10.0, abs=1.0)


def test_hybrid_vad_hears_a_quiet_hiss_and_not_steady_noise():
    """An unvoiced, fricative-like hiss 20 dB below a vowel: the noise-floor
    gate opens on it; steady pink noise alone never opens a segment."""
    from phonemekit.live.replay import make_noise
    from phonemekit.live.vad import FRAME, NoiseFloorVAD

    rng = np.random.default_rng(0)
    quiet = np.concatenate([3e-4 * rng.standard_normal(8000), 0.01 * rng.standard_normal(4000), 3e-4 * rng.standard_normal(8000)]).astype(np.float32)
    gate = NoiseFloorVAD()
    flags = [gate(quiet[i : i + FRAME]) for i in range(0, len(quiet) - FRAME, FRAME)]
    assert sum(flags) >= 5 and flags[0] == 0 and flags[-1] == 0
    steady = (0.05 * make_noise("pink", 16000 * 10, seed=1)).astype(np.float32)
    engine = LiveEngine(ToneClassifier(), LiveConfig(vad="hybrid"))
    events = run_stream(engine, (steady[i : i + 512] for i in range(0, len(steady), 512)))
    assert [e for e in events if e["type"] == "final"] == []


def test_replay_metrics_count_false_triggers():
    truth = [{"start": 1.0, "end": 1.3, "label": "aa"}]

    def ev(s, e, lab):
        return {"type": "final", "label": lab, "segment_start": s, "segment_end": e, "t_audio": e + 0.1, "compute_ms": 1.0, "provisional_changes": 0}

    m = replay_metrics([ev(0.95, 1.32, "aa"), ev(2.0, 2.2, "ee")], truth)
    assert (m["detected"], m["false_triggers"], m["detection_rate"], m["false_trigger_rate"]) == (1, 1, 1.0, 1.0)
