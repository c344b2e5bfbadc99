"""Live classification: audio sources, voice activity detection, temporal
smoothing, events and the latency/flicker metrics.

A stream is cut into 32 ms frames. A VAD (silero-vad's shipped ONNX model,
or an energy gate) opens a segment at speech onset and closes it after a
short hangover of silence. During speech, sliding windows are classified
and smoothed into a provisional label (EMA, hysteresis, confidence gate);
at the offset the whole segment is classified into the final label. Every
step is an event (JSON lines) with audio and wall-clock timestamps.

Everything runs the same on a microphone and on a replayed file, so every
feature is testable without audio hardware.
"""

from __future__ import annotations

import json
import logging
import queue
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from .config import from_dict
from .errors import ConfigError, PhonemekitError

log = logging.getLogger(__name__)

SR = 16_000
FRAME = 512  # 32 ms, what silero-vad expects at 16 kHz


class LiveError(PhonemekitError):
    """The live path cannot run as asked (no audio device, missing PortAudio, ...)."""


@dataclass(frozen=True)
class LiveConfig:
    vad: str = "silero"  # silero | energy
    vad_threshold: float = 0.5  # silero speech probability
    energy_threshold_db: float = -40.0  # energy gate, dBFS
    min_speech_ms: int = 64
    hangover_ms: int = 96
    pre_roll_ms: int = 256  # audio kept from before the onset: VADs fire late, and stops start with a burst
    max_segment_s: float = 2.0
    window_s: float = 0.4  # sliding windows during speech; 0 disables
    hop_s: float = 0.096
    ema: float = 0.5  # weight of the newest probabilities
    hysteresis: int = 2  # a new label must win this many windows in a row...
    margin: float = 0.2  # ...or lead the shown label by this much
    min_confidence: float = 0.4  # below this, no label is shown
    min_duration_ms: int = 96  # shorter segments get no final label
    top_k: int = 3

    def __post_init__(self) -> None:
        if self.vad not in ("silero", "energy"):
            raise ConfigError(f"invalid value for 'vad': {self.vad!r} (silero|energy)")
        if not 0 < self.ema <= 1:
            raise ConfigError("invalid value for 'ema': expected (0, 1]")
        if self.hysteresis < 1:
            raise ConfigError("invalid value for 'hysteresis': expected >= 1")
        if not 0 <= self.min_confidence < 1:
            raise ConfigError("invalid value for 'min_confidence': expected [0, 1)")


PRESETS = ("responsive", "balanced", "stable")


def load_live_config(preset: str = "balanced", path: str | Path | None = None, **overrides) -> LiveConfig:
    """A preset, optionally a JSON file on top, then explicit overrides."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown live preset '{preset}' (available: {', '.join(PRESETS)})")
    data = json.loads(resources.files("phonemekit.live_presets").joinpath(f"{preset}.json").read_text())
    if path:
        data.update(json.loads(Path(path).read_text()))
    data.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(LiveConfig, data)


def dbfs(x: np.ndarray, axis=None) -> np.ndarray | float:
    """RMS level in dB relative to full scale."""
    return 20 * np.log10(np.sqrt(np.mean(x**2, axis=axis)) + 1e-10)


# ------------------------------------------------------------------ VAD


class EnergyVAD:
    """Cheap gate: frame RMS in dBFS against a threshold."""

    def __init__(self, threshold_db: float) -> None:
        self.threshold_db = threshold_db

    def reset(self) -> None:
        pass

    def __call__(self, frame: np.ndarray) -> float:
        return 1.0 if dbfs(frame) > self.threshold_db else 0.0


class SileroVAD:
    """silero-vad through the ONNX model the package ships; no torch needed."""

    CONTEXT = 64

    def __init__(self) -> None:
        try:
            import silero_vad
        except ImportError as e:
            raise LiveError("silero-vad is not installed (pip install 'phonemekit[live]'), or use --vad energy") from e
        import onnxruntime as ort

        path = Path(silero_vad.__file__).parent / "data" / "silero_vad_16k_op15.onnx"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.reset()

    def reset(self) -> None:
        self.state = np.zeros((2, 1, 128), np.float32)
        self.context = np.zeros((1, self.CONTEXT), np.float32)

    def __call__(self, frame: np.ndarray) -> float:
        x = np.concatenate([self.context, frame[None, :].astype(np.float32)], axis=1)
        out, self.state = self.session.run(None, {"input": x, "state": self.state, "sr": np.array(SR, dtype=np.int64)})
        self.context = x[:, -self.CONTEXT :]
        return float(out[0, 0])


def make_vad(cfg: LiveConfig):
    return SileroVAD() if cfg.vad == "silero" else EnergyVAD(cfg.energy_threshold_db)


# ------------------------------------------------------------------ smoothing


class Smoother:
    """The temporal brain: EMA of probabilities, hysteresis and a confidence
    gate decide which label is shown while a sound goes on."""

    def __init__(self, cfg: LiveConfig) -> None:
        self.cfg = cfg
        self.reset()

    def reset(self) -> None:
        self.probs: np.ndarray | None = None
        self.shown: int | None = None
        self.candidate: int | None = None
        self.streak = 0

    def update(self, p: np.ndarray) -> int | None:
        a = self.cfg.ema
        self.probs = p.copy() if self.probs is None else (1 - a) * self.probs + a * p
        best = int(np.argmax(self.probs))
        self.streak = self.streak + 1 if best == self.candidate else 1
        self.candidate = best
        if self.probs[best] < self.cfg.min_confidence:
            self.shown = None  # gated: not sure enough to show anything
            return None
        if self.shown is None or best == self.shown:
            if self.shown is None and self.streak < self.cfg.hysteresis:
                return None
            self.shown = best
        elif self.streak >= self.cfg.hysteresis or self.probs[best] - self.probs[self.shown] >= self.cfg.margin:
            self.shown = best
        return self.shown


# ------------------------------------------------------------------ engine


@dataclass
class Segment:
    start: float  # audio seconds: where speech began (the pre-roll before it is kept in `samples`)
    samples: list = field(default_factory=list)
    shown: list = field(default_factory=list)  # displayed provisional labels, in order
    next_window: float = 0.0


class LiveEngine:
    """Feed audio blocks, get events. `classifier` is a runtime.Classifier
    (anything with `.labels` and `.probs(list_of_waves)`)."""

    def __init__(self, classifier, cfg: LiveConfig, vad=None, expect: str | None = None) -> None:
        self.classifier, self.cfg = classifier, cfg
        self.vad = vad or make_vad(cfg)
        self.smoother = Smoother(cfg)
        self.expect = expect
        if expect is not None and expect not in classifier.labels:
            raise ConfigError(f"--expect {expect!r} is not a label of this model ({', '.join(classifier.labels)})")
        self.pending = np.zeros(0, np.float32)
        self.consumed = 0  # samples processed
        self.pre = deque(maxlen=max(1, cfg.pre_roll_ms * SR // 1000 // FRAME))
        self.segment: Segment | None = None
        self.speech_run = self.silence_run = 0
        self.level_db = -120.0
        self.speech_prob = 0.0

    @property
    def now(self) -> float:
        return self.consumed / SR

    def swap_classifier(self, classifier) -> None:
        """Replace the model between frames; no audio is dropped."""
        if classifier.labels != self.classifier.labels:
            log.warning("the new model has a different label table")
        self.classifier = classifier

    def _event(self, kind: str, **kw) -> dict:
        return {"type": kind, "t_audio": round(self.now, 4), "t_wall": time.time(), **kw}

    def _top(self, p: np.ndarray) -> list[list]:
        idx = np.argsort(-p)[: self.cfg.top_k]
        return [[self.classifier.labels[i], round(float(p[i]), 4)] for i in idx]

    def feed(self, block: np.ndarray) -> list[dict]:
        self.pending = np.concatenate([self.pending, np.asarray(block, dtype=np.float32)])
        events = []
        while len(self.pending) >= FRAME:
            frame, self.pending = self.pending[:FRAME], self.pending[FRAME:]
            events += self._frame(frame)
        return events

    def flush(self) -> list[dict]:
        """End of stream: close an open segment."""
        if self.segment is not None:
            return self._close()
        return []

    def _frame(self, frame: np.ndarray) -> list[dict]:
        events = []
        self.level_db = float(dbfs(frame))
        self.speech_prob = self.vad(frame)
        speech = self.speech_prob >= (self.cfg.vad_threshold if self.cfg.vad == "silero" else 0.5)
        self.consumed += FRAME
        if self.segment is None:
            self.pre.append(frame)
            self.speech_run = self.speech_run + 1 if speech else 0
            if self.speech_run * FRAME * 1000 >= self.cfg.min_speech_ms * SR:
                frames = list(self.pre)
                start = self.now - self.speech_run * FRAME / SR
                self.segment = Segment(start=start, samples=frames, next_window=self.now)
                self.smoother.reset()
                self.silence_run = 0
                events.append(self._event("onset", segment_start=round(start, 4)))
            return events
        seg = self.segment
        seg.samples.append(frame)
        self.silence_run = 0 if speech else self.silence_run + 1
        if self.cfg.window_s > 0 and self.now >= seg.next_window:
            seg.next_window = self.now + self.cfg.hop_s
            win = np.concatenate(seg.samples)[-int(self.cfg.window_s * SR) :]
            t0 = time.perf_counter()
            p = self.classifier.probs([win])[0]
            shown = self.smoother.update(p)
            if shown is not None and (not seg.shown or seg.shown[-1] != shown):
                seg.shown.append(shown)
                events.append(self._event("provisional", label=self.classifier.labels[shown], top_k=self._top(self.smoother.probs),
                                          compute_ms=round((time.perf_counter() - t0) * 1000, 2)))
        long = len(seg.samples) * FRAME / SR >= self.cfg.max_segment_s
        if self.silence_run * FRAME * 1000 >= self.cfg.hangover_ms * SR or long:
            events += self._close()
        return events

    def _close(self) -> list[dict]:
        seg, self.segment = self.segment, None
        self.speech_run = 0
        trailing = self.silence_run * FRAME / SR
        end = self.now - trailing  # where the sound stopped, not where we noticed
        # The hangover's silence stays in: models are trained on clips with
        # silence around the sound.
        audio = np.concatenate(seg.samples)
        duration_ms = (end - seg.start) * 1000
        t0 = time.perf_counter()
        p = self.classifier.probs([audio])[0]
        compute_ms = (time.perf_counter() - t0) * 1000
        best = int(np.argmax(p))
        label = self.classifier.labels[best] if p[best] >= self.cfg.min_confidence and duration_ms >= self.cfg.min_duration_ms else None
        reason = None if label else ("too_short" if duration_ms < self.cfg.min_duration_ms else "low_confidence")
        flips = max(0, len(seg.shown) - 1)
        ev = self._event("final", label=label, top_k=self._top(p), segment_start=round(seg.start, 4), segment_end=round(end, 4),
                         compute_ms=round(compute_ms, 2), provisional_changes=flips, reason=reason)
        if self.expect is not None:
            rank = int((p > p[self.classifier.labels.index(self.expect)]).sum()) + 1
            ev.update(expected=self.expect, recognised=label == self.expect, expected_rank=rank)
        self.silence_run = 0
        return [ev, self._event("offset", segment_end=round(end, 4))]


# ------------------------------------------------------------------ sources


def file_blocks(path: str | Path, *, realtime: bool = False, block: int = FRAME) -> Iterator[np.ndarray]:
    """Replay a file as a stream: in real time, or as fast as possible."""
    from .audio import load_audio
    from .config import AudioConfig

    x = load_audio(path, AudioConfig(max_seconds=3600, max_bytes=2_000_000_000)).samples
    start = time.perf_counter()
    for i in range(0, len(x), block):
        if realtime:
            delay = start + i / SR - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        yield x[i : i + block]


def mic_blocks(device: str | int | None = None, block: int = FRAME) -> Iterator[np.ndarray]:
    """Microphone blocks through sounddevice (imported only here)."""
    try:
        import sounddevice as sd
    except (ImportError, OSError) as e:
        raise LiveError(
            "microphone input needs PortAudio and sounddevice: apt-get install libportaudio2 && pip install sounddevice "
            "(or replay a file with --file)"
        ) from e
    try:
        inputs = [d for d in sd.query_devices() if d["max_input_channels"] > 0]
    except Exception as e:  # PortAudio errors are plain Exceptions
        raise LiveError(f"cannot list audio devices: {e}") from e
    if not inputs:
        raise LiveError("no audio input device found; connect a microphone or replay a file with --file")
    q: queue.Queue = queue.Queue()
    try:
        stream = sd.InputStream(samplerate=SR, channels=1, dtype="float32", blocksize=block, device=device,
                                callback=lambda data, frames, t, status: q.put(data[:, 0].copy()))
    except Exception as e:
        names = ", ".join(f"{i}: {d['name']}" for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0)
        raise LiveError(f"cannot open input device {device!r}: {e}. Input devices: {names}") from e
    with stream:
        while True:
            yield q.get()


# ------------------------------------------------------------------ replay files and metrics


def build_replay(manifest, *, clips: int = 40, gap_s: float = 0.6, seed: int = 0, rows: list[dict] | None = None) -> tuple[np.ndarray, list[dict]]:
    """Concatenate labelled clips with silences (faint noise) between them;
    returns the waveform and the truth (start, end, label) of each clip."""
    from .audio import load_audio

    rng = np.random.default_rng(seed)
    pool = rows if rows is not None else manifest.rows
    pick = [pool[i] for i in rng.choice(len(pool), size=min(clips, len(pool)), replace=False)]
    parts, truth, t = [], [], 0.0
    for r in pick:
        gap = rng.standard_normal(int(gap_s * SR)).astype(np.float32) * 3e-4
        x = load_audio(manifest.audio_path(r)).samples
        start, end = _sound_bounds(x)
        parts += [gap, x]
        t += gap_s
        truth.append({"start": round(t + start, 4), "end": round(t + end, 4), "label": r["label"], "sha256": r["sha256"]})
        t += len(x) / SR
    parts.append(rng.standard_normal(int(gap_s * SR)).astype(np.float32) * 3e-4)
    return np.concatenate(parts), truth


def _sound_bounds(x: np.ndarray, rel_db: float = -30.0) -> tuple[float, float]:
    """Where the sound itself starts and ends inside a clip (its padding excluded)."""
    n = len(x) // 160
    env = dbfs(x[: n * 160].reshape(n, 160), axis=1)
    on = np.flatnonzero(env > env.max() + rel_db)
    if not len(on):
        return 0.0, len(x) / SR
    return on[0] * 160 / SR, (on[-1] + 1) * 160 / SR


def replay_metrics(events: list[dict], truth: list[dict]) -> dict:
    """Accuracy of final labels, latency from sound offset (and onset) to the
    label, and flicker (segments whose shown label changed after it first
    appeared). Latency counts audio that had to arrive (hangover) plus
    compute time, so it holds for real-time streaming too."""
    finals = [e for e in events if e["type"] == "final"]
    provisional = [e for e in events if e["type"] == "provisional"]
    matched, lat_off, lat_on, correct = 0, [], [], 0
    for tr in truth:
        best, overlap = None, 0.0
        for f in finals:
            ov = min(tr["end"], f["segment_end"]) - max(tr["start"], f["segment_start"])
            if ov > overlap:
                best, overlap = f, ov
        if best is None:
            continue
        matched += 1
        correct += int(best["label"] == tr["label"])
        lat_off.append((best["t_audio"] - tr["end"]) * 1000 + best["compute_ms"])
        first = [p for p in provisional if best["segment_start"] <= p["t_audio"] <= best["t_audio"]]
        if first:
            lat_on.append((first[0]["t_audio"] - tr["start"]) * 1000 + first[0]["compute_ms"])
    seg_flicker = [f["provisional_changes"] > 0 for f in finals]
    return {
        "clips": len(truth),
        "segments": len(finals),
        "detected": matched,
        "accuracy": correct / len(truth) if truth else None,
        "latency_offset_ms_mean": float(np.mean(lat_off)) if lat_off else None,
        "latency_offset_ms_p90": float(np.percentile(lat_off, 90)) if lat_off else None,
        "latency_onset_ms_mean": float(np.mean(lat_on)) if lat_on else None,
        "flicker_rate": float(np.mean(seg_flicker)) if seg_flicker else None,
        "provisional_changes_per_segment": float(np.mean([f["provisional_changes"] for f in finals])) if finals else None,
    }


def run_stream(engine: LiveEngine, blocks, on_event=None, on_frame=None, watch: Path | None = None, reload_every_s: float = 1.0) -> list[dict]:
    """Drive an engine from a block source until it ends (or Ctrl-C)."""
    events: list[dict] = []
    mtime = watch.stat().st_mtime_ns if watch else None
    last_check = time.monotonic()
    try:
        for block in blocks:
            for ev in engine.feed(block):
                events.append(ev)
                if on_event:
                    on_event(ev)
            if on_frame:
                on_frame(engine)
            if watch and time.monotonic() - last_check >= reload_every_s:
                last_check = time.monotonic()
                m = watch.stat().st_mtime_ns
                if m != mtime:
                    from .runtime import Classifier

                    mtime = m
                    try:
                        engine.swap_classifier(Classifier.load(watch))
                        log.info("reloaded %s", watch)
                    except PhonemekitError as e:  # a half-copied file: keep the old model
                        log.warning("not reloading %s: %s", watch, e)
    except KeyboardInterrupt:
        log.info("stopped")
    for ev in engine.flush():
        events.append(ev)
        if on_event:
            on_event(ev)
    return events


def summary(events: list[dict]) -> dict:
    finals = [e for e in events if e["type"] == "final"]
    out = {"segments": len(finals), "labelled": sum(1 for e in finals if e["label"]),
           "labels": [e["label"] for e in finals]}
    if any("recognised" in e for e in finals):
        out["recognised"] = sum(1 for e in finals if e.get("recognised"))
    return out
