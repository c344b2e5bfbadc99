"""Live classification: the engine that turns audio blocks into events.

A stream is cut into 32 ms frames. A VAD (by default silero-vad or a
noise-floor gate, see `live.vad`) opens a segment at speech onset and
closes it after a short hangover of silence. During speech, sliding
windows are classified and smoothed into a provisional label (EMA,
hysteresis, confidence gate); at the offset the whole segment is
classified into the final label (with the calibrated verdict when a sound
is expected). Every step is an event (JSON lines) with audio and
wall-clock timestamps. `serve` streams and the browser engine
(web/src/engine.js, a port of this file) emit the same events.

Everything runs the same on a microphone and on a replayed file
(`live.sources`), so every feature is testable without audio hardware;
`live.replay` scores a run against a replay file's truth.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from phonemekit.config import from_dict
from phonemekit.deploy.runtime import Classifier, keep_profile
from phonemekit.errors import ConfigError, PhonemekitError
from phonemekit.evaluation.calibration import check_expect, uncalibrated_verdict
from phonemekit.live.vad import FRAME, SR, VADS, dbfs, make_vad

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveConfig:
    vad: str = "hybrid"  # hybrid | silero | energy (see live.vad)
    vad_threshold: float = 0.5  # silero speech probability
    energy_threshold_db: float = -40.0  # energy gate, dBFS
    floor_margin_db: float = 14.0  # hybrid: speech rises this far above the tracked noise floor...
    floor_min_db: float = -60.0  # ...and above this level...
    hybrid_silero_threshold: float = 0.85  # ...or silero is this sure (high: its tail lags the sound's end; the gate hears the rest)
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
        if self.vad not in VADS:
            raise ConfigError(f"invalid value for 'vad': {self.vad!r} ({'|'.join(VADS)})")
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
        raise ConfigError(f"unknown live preset {preset[:40]!r} (available: {', '.join(PRESETS)})")  # bounded: it may come from a request
    data = json.loads(resources.files("phonemekit.live.presets").joinpath(f"{preset}.json").read_text())
    if path:
        try:
            extra = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError(f"cannot read live config {path}: {e.strerror or e}") from e
        except (ValueError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot parse live config {path}: {e}") from e
        if not isinstance(extra, dict):
            raise ConfigError(f"live config {path} must be a JSON object")
        data.update(extra)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(LiveConfig, data)


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

    def __init__(self, classifier, cfg: LiveConfig, vad=None, expect: str | None = None,
                 on_final: Callable[[float, float, np.ndarray], None] | None = None) -> None:  # fmt: skip
        """`on_final(start, end, probs)`: called with each labelled segment's
        scores as it closes (reading verdicts keep them, `assess`)."""
        self.classifier, self.cfg, self.on_final = classifier, cfg, on_final
        self.vad = vad or make_vad(cfg)
        self.smoother = Smoother(cfg)
        self.set_expect(expect)
        self.pending = np.zeros(0, np.float32)
        self.consumed = 0  # samples processed
        self.pre = deque(maxlen=max(1, cfg.pre_roll_ms * SR // 1000 // FRAME))
        self.segment: Segment | None = None
        self.speech_run = self.silence_run = 0
        self.level_db = -120.0
        self.speech_prob = 0.0

    def set_expect(self, expect: str | None) -> None:
        """The sound the game asks for next (None: just classify)."""
        check_expect(expect, self.classifier.labels)
        self.expect = expect

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
                events.append(
                    self._event(
                        "provisional",
                        label=self.classifier.labels[shown],
                        top_k=self._top(self.smoother.probs),
                        compute_ms=round((time.perf_counter() - t0) * 1000, 2),
                    )
                )
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
        if label is not None and self.on_final is not None:
            self.on_final(seg.start, end, p)
        flips = max(0, len(seg.shown) - 1)
        ev = self._event(
            "final",
            label=label,
            top_k=self._top(p),
            segment_start=round(seg.start, 4),
            segment_end=round(end, 4),
            compute_ms=round(compute_ms, 2),
            provisional_changes=flips,
            reason=reason,
        )
        if self.expect is not None:
            # The calibrated verdict the model file carries (uncalibrated files: top-1 == expected).
            verdict_of = getattr(self.classifier, "verdict_of", None)
            v = verdict_of(p, self.expect) if verdict_of else uncalibrated_verdict(p, self.classifier.labels, self.expect)
            rank = int((p > p[self.classifier.labels.index(self.expect)]).sum()) + 1
            ev.update(expected=self.expect, recognised=label == self.expect, expected_rank=rank, verdict=v)
        self.silence_run = 0
        return [ev, self._event("offset", segment_end=round(end, 4))]


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
                    mtime = m
                    try:
                        engine.swap_classifier(keep_profile(Classifier.load(watch), getattr(engine.classifier, "profile", None)))
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
    out = {"segments": len(finals), "labelled": sum(1 for e in finals if e["label"]), "labels": [e["label"] for e in finals]}
    if any("recognised" in e for e in finals):
        out["recognised"] = sum(1 for e in finals if e.get("recognised"))
    return out
